# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""UEFI boot on the EFI system partition: the stub ``\\EFI\\<vendor>\\grub.cfg`` that says which
``/boot/grub`` the signed GRUB reads, the deploy's last step (the new system's signed loaders, the
stub, the NVRAM entry, the removable-media path) and what cleanup removes there.

File-level only: ``esp`` is the directory the ESP is mounted on, ``root`` an image root, and the
NVRAM changes are efibootmgr argument lists from ``boot.efi`` for the caller to run.
docs/architecture.md ("Booting: UEFI") has the design: which stub each phase writes and what a
power cut at each point boots.

The ESP is FAT, which journals nothing: every file is written beside its target under a name of
ours, synced, then renamed over it, so a cut leaves the old file or the new one (and at worst a
leftover ``*.inplace-new`` a rerun overwrites). Modes are not set: a vfat mount refuses a chmod
that its fmask does not allow.
"""

from __future__ import annotations

import os
import re

from ansible_collections.inplace.migration.plugins.module_utils.boot import efi as _efi
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.state.files import fsync_directory, make_directories

STUB = "grub.cfg"
KEPT = STUB + ".inplace-old"
NEW_SUFFIX = ".inplace-new"
FALLBACK = "BOOT"
FALLBACK_LOADER = "BOOTX64.EFI"
CHUNK = 1024 * 1024
# grub-mkimage stores the prefix as a module object: type OBJ_TYPE_PREFIX (3), its size (header
# included, padded), then the NUL-terminated string. In Debian 12's signed grubx64.efi it is
# b"\x03\0\0\0\x18\0\0\0/EFI/debian\0", the image's only "/EFI/" string.
_PREFIX = re.compile(rb"\x03\x00\x00\x00(.{4})(?:\([^)\x00]{0,32}\))?/EFI/([A-Za-z0-9_.-]{1,64})\x00", re.DOTALL)
PREFIX_WINDOW = 128
PREFIX_OBJECT_LIMIT = 4096

# The new system's signed files, in the order the deploy writes them into \EFI\<vendor>\ (GRUB before
# shim: a newer shim may refuse an old GRUB's SBAT generation, an old shim starts a newer GRUB).
# (name on the ESP, candidates in the image root, needed)
VENDOR_FILES = (
    ("grubx64.efi", _efi.GRUB_SIGNED_PATHS, True),
    ("shimx64.efi", _efi.SHIM_PATHS, True),
    ("mmx64.efi", ("/usr/lib/shim/mmx64.efi.signed",), False),
    ("fbx64.efi", ("/usr/lib/shim/fbx64.efi.signed",), False),
    ("BOOTX64.CSV", ("/usr/lib/shim/BOOTX64.CSV",), False),
)
# \EFI\BOOT\: GRUB, then shim as the removable-media loader.
FALLBACK_FILES = (
    ("grubx64.efi", _efi.GRUB_SIGNED_PATHS),
    (FALLBACK_LOADER, _efi.SHIM_PATHS),
)

_STUB_UUID = re.compile(r"^\s*(?:search\s+(?:.*\s)?--fs-uuid\s+(?:.*\s)?--set=root\s+(\S+)"
                        r"|search\.fs_uuid\s+(\S+)\s+root\b)", re.M)
_STUB_PREFIX = re.compile(r"^\s*set\s+prefix=\(\$root\)(?:'([^']*)'|\"([^\"]*)\"|(\S+))", re.M)


def grub_vendor(path):
    """The vendor directory compiled into a GRUB EFI image (``debian`` for ``/EFI/debian``), None when it
    names none. Read in chunks with an overlap, so a 4 MiB image costs a megabyte of memory."""
    tail = b""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                return None
            data = tail + chunk
            for found in _PREFIX.finditer(data):
                size = int.from_bytes(found.group(1), "little")
                # The object's size covers its 8-byte header and the string with its NUL, padded.
                if len(found.group(0)) <= size <= PREFIX_OBJECT_LIMIT:
                    return found.group(2).decode("ascii")
            tail = data[-PREFIX_WINDOW:]


def image_vendor(root):
    """The vendor directory of the image root's signed GRUB; a sentence when it has none to read."""
    grub = _efi.find_file(root, _efi.GRUB_SIGNED_PATHS)
    if grub is None:
        raise MigrationError("the image has no signed GRUB (%s, from grub-efi-amd64-signed), so nothing says which "
                             "\\EFI directory its GRUB reads; add that package to the image." %
                             _efi.GRUB_SIGNED_PATHS[0])
    vendor = grub_vendor(os.path.join(root, grub.lstrip("/")))
    if vendor is None:
        raise MigrationError("the image's GRUB %s has no /EFI/<vendor> prefix compiled in, so it reads no stub on the "
                             "ESP; build the image with its distribution's signed GRUB." % grub)
    return vendor


def esp_vendor(esp):
    """The vendor directory the ESP's signed GRUBs read (``debian``): the prefix compiled into every
    ``\\EFI\\*\\grubx64.efi`` there, the removable-media copy included. A sentence when they name none, or
    several (the PC's boot could go through either, so one stub would not decide it)."""
    top = os.path.join(esp, "EFI")
    named = {}
    for folder in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        grubs = [entry for entry in sorted(os.listdir(os.path.join(top, folder)))
                 if entry.lower() == "grubx64.efi"] if os.path.isdir(os.path.join(top, folder)) else []
        for entry in grubs:
            vendor = grub_vendor(os.path.join(top, folder, entry))
            if vendor is not None:
                named.setdefault(vendor, []).append("\\EFI\\%s\\%s" % (folder, entry))
    if not named:
        raise MigrationError("no GRUB on the EFI system partition (%s) names the \\EFI directory it reads, so "
                             "there is no stub to point at the store; this PC does not boot Debian's signed GRUB "
                             "and cannot be migrated." % esp)
    if len(named) > 1:
        raise MigrationError("the GRUBs on the EFI system partition read different \\EFI directories (%s), so no "
                             "one stub decides what this PC boots; remove the loaders of the system that is gone." %
                             "; ".join("%s: %s" % (vendor, ", ".join(paths)) for vendor, paths in sorted(named.items())))
    return next(iter(named))


def vendor_directory(esp, vendor):
    return os.path.join(esp, "EFI", vendor)


# The stub -----------------------------------------------------------------------------------------------

def stub_text(uuid, directory):
    """The stub: find the filesystem ``uuid`` and read ``directory``/grub.cfg there (``/boot/grub``, or
    ``/grub`` on a /boot partition of its own)."""
    return ("# Written by inplace.migration: the GRUB directory this PC boots from.\n"
            "search --no-floppy --fs-uuid --set=root %s\n"
            "set prefix=($root)'%s'\n"
            "configfile $prefix/grub.cfg\n" % (uuid, directory))


def parse_stub(text):
    """``{"uuid", "directory"}`` a stub points at (ours, or grub-install's ``search.fs_uuid`` form); None
    when it names no filesystem UUID."""
    uuid = _STUB_UUID.search(text or "")
    if not uuid:
        return None
    prefix = _STUB_PREFIX.search(text)
    directory = next((group for group in prefix.groups() if group is not None), None) if prefix else None
    return {"uuid": (uuid.group(1) or uuid.group(2)).lower(), "directory": directory}


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def read_stub(esp, vendor):
    """Where the ESP's stub for ``vendor`` points (``parse_stub``), None when there is no stub or it names no UUID."""
    data = _read(os.path.join(vendor_directory(esp, vendor), STUB))
    return None if data is None else parse_stub(data.decode("utf-8", "replace"))


def _replace(target, write):
    """Write ``target`` beside it (``write(handle)``), sync, rename over it, sync the directory."""
    temporary = target + NEW_SUFFIX
    with open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, target)
    fsync_directory(os.path.dirname(target))


def _put_bytes(target, data):
    _replace(target, lambda handle: handle.write(data))


def switch_stub(esp, vendor, uuid, directory, check_mode=False):
    """Point the stub for ``vendor`` at ``directory`` on the filesystem ``uuid``.

    The stub found there the first time is kept as ``grub.cfg.inplace-old`` (``restore_stub`` puts
    it back); later switches keep that one, the old system's. Returns what was done: ``changed``,
    ``kept`` (the old stub kept now), ``before`` and ``after`` (where the stub points).
    """
    folder = vendor_directory(esp, vendor)
    path = os.path.join(folder, STUB)
    current = _read(path)
    wanted = stub_text(uuid, directory).encode("utf-8")
    report = {"changed": current != wanted, "path": path, "kept": False,
              "before": parse_stub(current.decode("utf-8", "replace")) if current is not None else None,
              "after": {"uuid": uuid.lower(), "directory": directory}}
    if not report["changed"]:
        return report
    kept = os.path.join(folder, KEPT)
    report["kept"] = current is not None and not os.path.exists(kept)
    if check_mode:
        return report
    make_directories(folder)
    if report["kept"]:
        _put_bytes(kept, current)
    _put_bytes(path, wanted)
    return report


def restore_stub(esp, vendor, check_mode=False):
    """Put the kept stub back (a rename over the current one); nothing when none was kept."""
    folder = vendor_directory(esp, vendor)
    kept = os.path.join(folder, KEPT)
    if not os.path.isfile(kept):
        return {"changed": False, "path": os.path.join(folder, STUB), "restored": None}
    restored = parse_stub((_read(kept) or b"").decode("utf-8", "replace"))
    if not check_mode:
        os.rename(kept, os.path.join(folder, STUB))
        fsync_directory(folder)
    return {"changed": True, "path": os.path.join(folder, STUB), "restored": restored}


# The deploy's last step ----------------------------------------------------------------------------------

def same_bytes(first, second):
    """Whether two files hold the same bytes, read a chunk at a time; False when ``second`` is missing."""
    if not os.path.isfile(second) or os.path.getsize(first) != os.path.getsize(second):
        return False
    with open(first, "rb") as one, open(second, "rb") as other:
        while True:
            left, right = one.read(CHUNK), other.read(CHUNK)
            if left != right:
                return False
            if not left:
                return True


def _copy(source, target):
    def write(handle):
        with open(source, "rb") as origin:
            while True:
                chunk = origin.read(CHUNK)
                if not chunk:
                    break
                handle.write(chunk)
    _replace(target, write)


def _put_files(root, folder, files, check_mode):
    """Copy each ``(name, candidates)`` found in ``root`` into ``folder`` unless it holds those bytes already;
    the steps taken, in order."""
    steps = []
    for name, candidates in files:
        source = _efi.find_file(root, candidates)
        if source is None:
            continue
        target = os.path.join(folder, name)
        if same_bytes(os.path.join(root, source.lstrip("/")), target):
            continue
        steps.append({"write": target, "from": source})
        if not check_mode:
            make_directories(folder)
            _copy(os.path.join(root, source.lstrip("/")), target)
    return steps


def check_image(root):
    """The image's vendor directory, once it is known to hold the signed shim and GRUB the ESP needs; a sentence
    naming what is missing otherwise."""
    missing = [candidates[0] for unused, candidates, needed in VENDOR_FILES
               if needed and _efi.find_file(root, candidates) is None]
    if missing:
        raise MigrationError("the image lacks %s, which the ESP needs; add shim-signed and grub-efi-amd64-signed to "
                             "the image." % " and ".join(missing))
    return image_vendor(root)


def deploy(esp, root, uuid, directory, nvram=None, check_mode=False):
    """The deploy's last step on the ESP, in the design's order: the image's signed GRUB, shim (and
    MokManager, fallback, ``BOOTX64.CSV`` when it has them) into ``\\EFI\\<vendor>\\``, last there
    the stub pointing at ``directory`` on the filesystem ``uuid``; then ``nvram()``, which the caller
    makes run efibootmgr (``nvram_commands``); then ``\\EFI\\BOOT\\``, GRUB before shim as ``BOOTX64.EFI``.

    Each file is written only when its bytes differ, so a rerun after a cut writes what is left and
    a rerun after success writes nothing. In check mode nothing is written and ``nvram`` is still
    called, to plan. Returns ``vendor``, ``steps`` (what was written, in order),
    ``changed`` and what ``nvram`` returned.
    """
    vendor = check_image(root)
    folder = vendor_directory(esp, vendor)
    steps = _put_files(root, folder, [(name, candidates) for name, candidates, unused in VENDOR_FILES], check_mode)
    stub = switch_stub(esp, vendor, uuid, directory, check_mode)
    if stub["changed"]:
        steps.append({"write": stub["path"], "stub": stub["after"], "kept": stub["kept"]})
    report = {"vendor": vendor, "stub": stub, "nvram": nvram() if nvram else None}
    steps += _put_files(root, os.path.join(esp, "EFI", FALLBACK), FALLBACK_FILES, check_mode)
    report.update(steps=steps, changed=bool(steps) or bool(report["nvram"]))
    return report


def loader_path(vendor):
    return "\\EFI\\%s\\shimx64.efi" % vendor


def nvram_commands(state, disk, partition, partuuid, vendor):
    """The efibootmgr commands that make the new system's entry (shim in ``\\EFI\\<vendor>\\`` on the
    ESP ``partuuid``) first in BootOrder, from ``state`` (``efi.parse_efibootmgr``).

    An entry that is missing is made with ``--create-only`` and the vendor's name as its label, as
    grub-install names it (it is the new system's, not ours: cleanup leaves it), and one found inactive is
    made active (the firmware skips an inactive entry wherever it is in BootOrder). A new entry's number is known
    only once it exists, so the caller runs the commands, reads efibootmgr again and asks again, until
    the answer is empty (at most twice).
    """
    loader = loader_path(vendor)
    entries = _efi.entries_for(state, loader, partuuid)
    if not entries:
        return [_efi.create_entry_command(disk, partition, loader, vendor)]
    first = next((number for number in state["order"] if number in {entry.number for entry in entries}),
                 entries[0].number)
    commands = [] if state["entries"][first].active else [["efibootmgr", "--bootnum", first, "--active"]]
    order = _efi.first_in_order_command(state, first)
    return commands + ([order] if order else [])


# Cleanup -------------------------------------------------------------------------------------------------

def cleanup(esp, state=None, check_mode=False):
    """Remove what the migration left on the ESP: the kept old stub and any ``*.inplace-new`` a cut left, in
    every ``\\EFI\\`` directory; the rest stays. ``nvram``: the commands removing our NVRAM entries
    (``efi.cleanup_commands``) when ``state`` is given."""
    removed = []
    top = os.path.join(esp, "EFI")
    for name in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        folder = os.path.join(top, name)
        if not os.path.isdir(folder):
            continue
        gone = [os.path.join(folder, entry) for entry in sorted(os.listdir(folder))
                if entry.lower() == KEPT or entry.lower().endswith(NEW_SUFFIX)]
        if gone and not check_mode:
            for path in gone:
                os.unlink(path)
            fsync_directory(folder)
        removed += gone
    nvram = _efi.cleanup_commands(state) if state is not None else []
    return {"changed": bool(removed or nvram), "removed": removed, "nvram": nvram}
