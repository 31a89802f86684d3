# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GRUB (for BIOS, and its menu for UEFI): the maintenance entry (defined once here), the environment block, the menu,
and installing the new system's GRUB as the deploy's last step.

The maintenance entry appears in three places over a migration: in the old system's menu
(booted once to reach maintenance), in the store's own grub.cfg (while the system
partition is being written) and in the new system's menu (the fallback until its first
boot confirms itself). All three are made by ``maintenance_menuentry``, and the kernel
flag that marks the maintenance environment is spelled once, as ``CMDLINE_FLAG``.
"""

from __future__ import annotations

import contextlib
import os
import re

from ansible_collections.inplace.migration.plugins.module_utils.boot import efi_boot as _efi_boot
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.rootfs import inside, read_text
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.state.files import atomic_write, fsync_directory

MAINTENANCE_ENTRY = "inplace-maintenance"
MAINTENANCE_TITLE = "inplace.migration maintenance"
# The kernel command line flag that marks the maintenance environment; migration_state looks for it.
CMDLINE_FLAG = "inplace.maintenance"
DEFAULT_CMDLINE = "console=tty0 console=ttyS0,115200 %s panic=10" % CMDLINE_FLAG
MAINTENANCE_KERNEL = "vmlinuz"
MAINTENANCE_INITRDS = ("initrd.img", "overlay.img")
# Where the maintenance files are: on the old root's /boot (or a separate /boot), and on the store.
BOOT_PREFIX = "/inplace"
STORE_PREFIX = "/inplace/boot"
GRUB_SCRIPT = "/etc/grub.d/45_inplace_maintenance"
GRUBENV_SIZE = 1024
GRUBENV_HEADER = "# GRUB Environment Block\n"


def read_grubenv(path):
    """The variables in a GRUB environment block (``{}`` when there is none)."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return {}
    values = {}
    for line in text.splitlines()[1:]:
        if line.startswith("#"):
            break
        name, equals, value = line.partition("=")
        if equals:
            values[name] = value
    return values


def write_grubenv(path, values):
    """Write a GRUB environment block: 1024 bytes, padded with ``#``, as grub-editenv writes it.

    An existing block of the right size is overwritten in place (its blocks stay where
    GRUB's save_env expects them); otherwise the file is made anew.
    """
    text = GRUBENV_HEADER + "".join("%s=%s\n" % (name, value) for name, value in values.items())
    data = text.encode("utf-8")
    if len(data) > GRUBENV_SIZE:
        raise MigrationError("the GRUB environment %s would exceed %d bytes." % (path, GRUBENV_SIZE))
    data += b"#" * (GRUBENV_SIZE - len(data))
    if os.path.isfile(path) and os.path.getsize(path) == GRUBENV_SIZE:
        with open(path, "r+b") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    else:
        atomic_write(path, data, 0o644)


def update_grubenv(path, **changes):
    """Set (or, with None, remove) variables in a GRUB environment block; returns the new block."""
    values = read_grubenv(path)
    for name, value in changes.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    write_grubenv(path, values)
    return values


MENUENTRY_ID = re.compile(r"(?:\$menuentry_id_option|--id)[ =]+(?:'([^']+)'|\"([^\"]+)\"|([^\s{]+))")


def menu_entries(config_text):
    """Ids of the top-level menu entries of a grub.cfg, in menu order."""
    entries = []
    for line in config_text.splitlines():
        if line.startswith("menuentry ") or line.startswith("menuentry\t"):
            found = MENUENTRY_ID.search(line)
            if found:
                entries.append(next(group for group in found.groups() if group))
    return entries


def default_entry(config_text):
    """The id of the new system's own first entry (the one grub-mkconfig makes the default)."""
    for entry in menu_entries(config_text):
        if entry != MAINTENANCE_ENTRY:
            return entry
    return None


def maintenance_menuentry(search_uuid, prefix, cmdline, title=MAINTENANCE_TITLE):
    """The one GRUB menu entry that boots the maintenance environment.

    ``search_uuid`` is the filesystem holding the files, ``prefix`` their directory as GRUB
    sees it on that filesystem (``/boot/inplace`` on the old root, ``/inplace/boot`` on
    the store).
    """
    return (
        "menuentry '%(title)s' --id %(entry)s {\n"
        "\tinsmod part_msdos\n"
        "\tinsmod part_gpt\n"
        "\tinsmod ext2\n"
        "\tsearch --no-floppy --fs-uuid --set=root %(uuid)s\n"
        "\tlinux %(prefix)s/%(kernel)s %(cmdline)s\n"
        "\tinitrd %(initrds)s\n"
        "}\n" % {"title": title, "entry": MAINTENANCE_ENTRY, "uuid": search_uuid, "prefix": prefix,
                 "kernel": MAINTENANCE_KERNEL, "cmdline": cmdline,
                 "initrds": " ".join("%s/%s" % (prefix, name) for name in MAINTENANCE_INITRDS)})


def maintenance_script(search_uuid, prefix, cmdline):
    """/etc/grub.d/45_inplace_maintenance: grub-mkconfig adds the maintenance entry to the menu."""
    return ("#!/bin/sh\n"
            "# Written by inplace.migration: the RAM-only maintenance environment.\n"
            "exec tail -n +4 $0\n" + maintenance_menuentry(search_uuid, prefix, cmdline))


def store_config(store_uuid, old_boot_uuid, old_grub_cfg, cmdline):
    """The store's own grub.cfg: maintenance by default while the system partition is being written,
    and the old system's menu as long as it is still there."""
    return (
        "# Written by inplace.migration: GRUB on the migration store. While the system partition is being\n"
        "# replaced, this PC boots the maintenance environment from here; the new system's GRUB,\n"
        "# installed as the deploy's last step, replaces it.\n"
        "set default=%(entry)s\n"
        "set timeout=3\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input console serial\n"
        "terminal_output console serial\n\n"
        "%(maintenance)s\n"
        "menuentry 'old system (while it is still there)' --id inplace-old-system {\n"
        "\tsearch --no-floppy --fs-uuid --set=root %(old)s\n"
        "\tconfigfile %(old_cfg)s\n"
        "}\n" % {"entry": MAINTENANCE_ENTRY, "maintenance": maintenance_menuentry(store_uuid, STORE_PREFIX, cmdline),
                 "old": old_boot_uuid, "old_cfg": old_grub_cfg})


def old_system_prefix(boot_separate):
    """Where the maintenance files are as GRUB sees the old system's /boot filesystem."""
    return BOOT_PREFIX if boot_separate else "/boot" + BOOT_PREFIX


def maintenance_boot_file(target, boot_uuid, boot_separate, cmdline, root="/", store=None, store_uuid=None):
    """``(path, text, mode)`` of the file that offers the maintenance entry for ``target``.

    ``system``: the running system's /etc/grub.d script (grub-mkconfig adds the entry to its
    menu); ``store``: the store's own grub.cfg, which boots maintenance by default and still
    offers the old system, found by ``boot_uuid``, while it is there.
    """
    if target == "system":
        return (inside(root, GRUB_SCRIPT), maintenance_script(boot_uuid, old_system_prefix(boot_separate), cmdline),
                0o755)
    old_grub_cfg = ("" if boot_separate else "/boot") + "/grub/grub.cfg"
    return (os.path.join(store, "boot", "grub", "grub.cfg"), store_config(store_uuid, boot_uuid, old_grub_cfg, cmdline),
            0o600)


def mounted_uuid(runner, path):
    """The filesystem UUID of what is mounted at ``path``."""
    rc, out, unused_err = runner.run(["findmnt", "--noheadings", "--output", "UUID", "--mountpoint", path], ok=None)
    if rc != 0 or not out.strip():
        raise MigrationError("nothing with a filesystem UUID is mounted at %s; mount the store there first." % path)
    return out.strip()


def put_file(path, text, mode, state="present", check_mode=False):
    """Make ``path`` hold ``text`` with ``mode`` (or be absent), atomically; the result with a diff."""
    try:
        with open(path, "rb") as handle:
            before = handle.read().decode("utf-8", "replace")
        before_mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        before, before_mode = None, None
    after = text if state == "present" else None
    changed = before != after or (after is not None and before_mode != mode)
    if changed and not check_mode:
        if after is None:
            os.unlink(path)
            fsync_directory(os.path.dirname(path))
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, after.encode("utf-8"), mode)
    return {"changed": changed, "path": path, "state": state,
            "diff": {"before": before or "", "after": after or "", "before_header": path, "after_header": path}}


def grub_default_text(current):
    rows = (current or "").splitlines()
    if any(re.match(r"^\s*GRUB_DEFAULT=", row) for row in rows):
        rows = ["GRUB_DEFAULT=saved" if re.match(r"^\s*GRUB_DEFAULT=", row) else row for row in rows]
    else:
        rows.insert(0, "GRUB_DEFAULT=saved")
    return "\n".join(rows) + "\n"


def root_spec(device, uuid):
    """What the kernel's ``root=`` names: the filesystem UUID, or for a logical volume its /dev/mapper path,
    which is how an initramfs's LVM script knows which volume to activate (grub-mkconfig writes the same)."""
    name = _devices.read_attribute(os.path.join(_devices.sysfs(device), "dm", "name")) \
        if _devices.lv_uuid(device) else None
    return "/dev/mapper/" + name if name else "UUID=" + uuid


def pin_root(config_text, spec):
    """grub.cfg with every kernel's ``root=`` naming ``spec`` (``root_spec``: without udev, grub-mkconfig
    falls back to the device node, which is wrong on the next boot)."""
    changed = []

    def fix(match):
        if match.group(2) != spec:
            changed.append(match.group(2))
        return match.group(1) + spec

    text = re.sub(r"(^\s*linux\s+\S+\s+(?:.*\s)?root=)(\S+)", fix, config_text, flags=re.M)
    return text, changed


def fstab_boot_spec(fstab_text):
    """The device spec an fstab mounts at /boot, or None when /boot is on the root."""
    for line in (fstab_text or "").splitlines():
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#") and fields[1].rstrip("/") == "/boot":
            return fields[0]
    return None


def boot_not_mounted(root):
    """The sentence when ``root``'s fstab mounts a /boot partition that is not mounted at ``root``/boot, else None.

    GRUB's core reads its grub.cfg and grubenv from that partition: a grubenv written into the
    root's own /boot directory underneath would be read by nobody.
    """
    spec = fstab_boot_spec(read_text(root, "/etc/fstab"))
    boot = os.path.join(root, "boot")
    if spec is None or os.path.ismount(boot):
        return None
    return ("the new system's fstab mounts /boot from %s but nothing is mounted at %s, and GRUB reads its environment "
            "from that partition; mount it (or correct fstab) and run again." % (spec, boot))


@contextlib.contextmanager
def chroot_mounts(runner, root, device, uuid, boot=None):
    """/dev, /proc and /sys bound into ``root``, and /dev/disk/by-uuid/<uuid> present while it lasts; with
    ``boot`` (the directory a /boot partition is mounted on) that partition bound at ``root``/boot too."""
    mounted = []
    made = []
    try:
        if boot:
            target = os.path.join(root, "boot")
            os.makedirs(target, exist_ok=True)
            runner.run(["mount", "--bind", boot, target])
            mounted.append(target)
        for name in ("dev", "proc", "sys"):
            target = os.path.join(root, name)
            os.makedirs(target, exist_ok=True)
            runner.run(["mount", "--bind", "/" + name, target])
            mounted.append(target)
        link = "/dev/disk/by-uuid/" + uuid
        if not os.path.lexists(link):
            for directory in ("/dev/disk", "/dev/disk/by-uuid"):
                if not os.path.isdir(directory):
                    os.mkdir(directory, 0o755)
                    made.append(directory)
            os.symlink(os.path.realpath(device), link)
            made.append(link)
        yield
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                os.unlink(path) if os.path.islink(path) else os.rmdir(path)
        for target in reversed(mounted):
            rc = runner.run(["umount", target], ok=None)[0]
            if rc != 0:
                runner.run(["umount", "-l", target], ok=None)


def _mkconfig(root):
    return next((tool for tool in ("/usr/sbin/update-grub", "/usr/sbin/grub-mkconfig")
                 if os.path.exists(inside(root, tool))), None)


def _prepare_menu(root, store_uuid, cmdline):
    """The new system's inputs to grub-mkconfig: the maintenance entry's script and GRUB_DEFAULT=saved."""
    script = inside(root, GRUB_SCRIPT)
    os.makedirs(os.path.dirname(script), exist_ok=True)
    atomic_write(script, maintenance_script(store_uuid, STORE_PREFIX, cmdline).encode("utf-8"), 0o755)
    defaults = inside(root, "/etc/default/grub")
    os.makedirs(os.path.dirname(defaults), exist_ok=True)
    atomic_write(defaults, grub_default_text(read_text(root, "/etc/default/grub")).encode("utf-8"), 0o644)


def _make_menu(runner, root, mkconfig, spec):
    """grub-mkconfig in the chroot, the root pinned to ``spec`` (``root_spec``); ``(default entry, devices
    rewritten)``."""
    config = inside(root, "/boot/grub/grub.cfg")
    os.makedirs(os.path.dirname(config), exist_ok=True)
    if mkconfig.endswith("update-grub"):
        runner.run(["chroot", root, mkconfig])
    else:
        runner.run(["chroot", root, mkconfig, "-o", "/boot/grub/grub.cfg"])
    with open(config) as handle:
        text, rewritten = pin_root(handle.read(), spec)
    if rewritten:
        atomic_write(config, text.encode("utf-8"), 0o644)
    entry = default_entry(text)
    if not entry or MAINTENANCE_ENTRY not in text:
        raise MigrationError("grub-mkconfig in the new system made no usable menu (%s)." % (
            "no maintenance entry" if entry else "no entry for the new system"))
    return entry, rewritten


def _arm(root, entry, one_shot):
    """The new system once, maintenance the saved default (``one_shot``), or the new system for good."""
    grubenv = inside(root, "/boot/grub/grubenv")
    if one_shot:
        return update_grubenv(grubenv, saved_entry=MAINTENANCE_ENTRY, next_entry=entry)
    return update_grubenv(grubenv, saved_entry=entry, next_entry=None)


def install_grub(runner, root, disk, device, uuid, store_uuid, cmdline, one_shot, boot=None):
    """GRUB for BIOS in the new system, installed to ``disk`` from a chroot: the very last step.

    The menu gains a maintenance entry on the store; with ``one_shot`` it is the saved default
    and the new system is GRUB's next entry once (its first boot makes itself the default),
    otherwise the new system is the default right away. ``boot`` is the directory the new
    system's /boot partition is mounted on, when it has one: it is bound at /boot in the chroot,
    so grub-install points the core image's prefix at that partition, and grub.cfg and grubenv
    are written where that core reads them.
    """
    missing = [path for path in ("/usr/sbin/grub-install", "/usr/lib/grub/i386-pc")
               if not os.path.exists(inside(root, path))]
    mkconfig = _mkconfig(root)
    if missing or not mkconfig:
        raise MigrationError("the new system has no GRUB for BIOS (%s missing); install grub-pc in the image, or "
                             "set bootloader=none." % ", ".join(missing or ["grub-mkconfig"]))
    _prepare_menu(root, store_uuid, cmdline)
    with chroot_mounts(runner, root, device, uuid, boot):
        entry, rewritten = _make_menu(runner, root, mkconfig, root_spec(device, uuid))
        runner.run(["chroot", root, "/usr/sbin/grub-install", "--target=i386-pc", disk])
        values = _arm(root, entry, one_shot)
    return {"status": "done", "disk": disk, "default_entry": entry, "maintenance_entry": MAINTENANCE_ENTRY,
            "grubenv": values, "root_rewritten": sorted(set(rewritten)), "script": GRUB_SCRIPT}


def install_grub_efi(runner, root, device, uuid, store_uuid, cmdline, one_shot, esp, boot=None, boot_uuid=None,
                     nvram=None):
    """GRUB for UEFI in the new system, the very last step (docs/architecture.md, "Booting: UEFI").

    The menu and its one-shot as for BIOS, made in the chroot; then, on the ESP mounted at ``esp``, the
    image's signed GRUB and shim, last there the stub pointing at the new ``/boot/grub`` (``/grub`` on
    the /boot partition ``boot_uuid``), then ``nvram()`` (the NVRAM entry first in BootOrder), then the
    removable-media path (``efi_boot.deploy``). No grub-install: Debian's signed GRUB has its modules
    built in and its prefix compiled in, and with Secure Boot on it loads nothing else from disk.
    """
    mkconfig = _mkconfig(root)
    if not mkconfig:
        raise MigrationError("the new system has no grub-mkconfig; install grub2-common (with grub-efi-amd64-signed "
                             "and shim-signed) in the image, or set bootloader=none.")
    vendor = _efi_boot.check_image(root)
    _prepare_menu(root, store_uuid, cmdline)
    with chroot_mounts(runner, root, device, uuid, boot):
        entry, rewritten = _make_menu(runner, root, mkconfig, root_spec(device, uuid))
        values = _arm(root, entry, one_shot)
    on_esp = _efi_boot.deploy(esp, root, boot_uuid if boot else uuid, "/grub" if boot else "/boot/grub", nvram)
    return {"status": "done", "vendor": vendor, "default_entry": entry, "maintenance_entry": MAINTENANCE_ENTRY,
            "grubenv": values, "root_rewritten": sorted(set(rewritten)), "script": GRUB_SCRIPT,
            "esp": {"steps": on_esp["steps"], "stub": on_esp["stub"]["after"], "nvram": on_esp["nvram"]}}
