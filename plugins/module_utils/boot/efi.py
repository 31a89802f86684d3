# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""UEFI: the firmware's boot entries as efibootmgr shows them, the efibootmgr commands that change
them, the Secure Boot state, the EFI system partition of a disk, and whether an image root holds a
signed boot chain.

Pure: commands are returned as argument lists for the caller to run, and everything read from
the machine is read below a ``root`` directory, so tests use a directory of their own.
docs/architecture.md ("Booting: UEFI") says which of these the migration uses when.
"""

from __future__ import annotations

import os
import re
import struct

ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ESP_MSDOS_TYPE = "0xef"
GLOBAL_VARIABLE_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFIVARS = "/sys/firmware/efi/efivars"
# The label of every NVRAM entry this collection makes: cleanup removes exactly these.
ENTRY_LABEL_PREFIX = "inplace.migration"

SHIM_PATHS = ("/usr/lib/shim/shimx64.efi.signed",)
GRUB_SIGNED_PATHS = ("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",)
SECURITY_DIRECTORY = 4
PE_HEADER_LIMIT = 4096

_ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})(\*?)\s+(.*)$")
# Where the device path begins when efibootmgr separates it from the label by spaces, not a tab.
_PATH_START = re.compile(r"\s+((?:HD|PciRoot|PcieRoot|Pci|Acpi|VenHw|VenMedia|VenMsg|FvVol|FvFile|MemoryMapped|BBS|"
                         r"MAC|Uri|Sata|Scsi|NVMe|USB|UsbClass|File|CDROM|Offset)\(.*)$")
_HD = re.compile(r"HD\((\d+),(GPT|MBR|SIG),([^,)]*)")
# efivar up to 37 shows a file path node as File(\EFI\...); 38 and later as a bare /\EFI\... that
# runs on into the entry's optional data, so only a name ending in .efi is taken from it.
_FILE = re.compile(r"(?<![A-Za-z])File\(([^)]*)\)|(?:^|/)(\\[^()\s]*?\.efi)", re.IGNORECASE)


class BootEntry:
    """One ``Boot####`` variable as efibootmgr shows it."""

    def __init__(self, number, active, label, device_path):
        self.number = number
        self.active = active
        self.label = label
        self.device_path = device_path
        hd = _HD.search(device_path)
        self.partition = int(hd.group(1)) if hd else None
        self.partuuid = hd.group(3).lower() if hd and hd.group(2) == "GPT" else None
        found = _FILE.search(device_path)
        self.file = (found.group(1) or found.group(2)) if found else None

    def ours(self):
        return self.label.startswith(ENTRY_LABEL_PREFIX)


def _number(text):
    return text.strip().upper()


def parse_efibootmgr(text):
    """``efibootmgr -v`` output as a dict: ``current``, ``next`` (numbers or None), ``order`` (a list),
    ``timeout`` (seconds or None) and ``entries`` (``BootEntry`` by number, in the listed order).

    efibootmgr up to 17 separates label and device path by a tab, or by spaces in some builds;
    18 adds indented ``dp:``/``data:`` lines, which are skipped.
    """
    state = {"current": None, "next": None, "order": [], "timeout": None, "entries": {}}
    for line in text.splitlines():
        if not line.strip() or line[0].isspace():
            continue
        name, colon, value = line.partition(":")
        if colon and name == "BootCurrent":
            state["current"] = _number(value)
        elif colon and name == "BootNext":
            state["next"] = _number(value)
        elif colon and name == "BootOrder":
            state["order"] = [_number(item) for item in value.split(",") if item.strip()]
        elif colon and name == "Timeout":
            seconds = value.split()
            state["timeout"] = int(seconds[0]) if seconds and seconds[0].isdigit() else None
        else:
            match = _ENTRY.match(line)
            if not match:
                continue
            rest = match.group(3)
            if "\t" in rest:
                label, unused_tab, path = rest.partition("\t")
            else:
                split = _PATH_START.search(rest)
                label, path = (rest[:split.start()], split.group(1)) if split else (rest, "")
            number = match.group(1).upper()
            state["entries"][number] = BootEntry(number, bool(match.group(2)), label.strip(), path.strip())
    return state


def same_file(first, second):
    """Whether two EFI file paths name the same file (FAT: case and slash direction do not matter)."""
    def normal(path):
        return (path or "").replace("/", "\\").lstrip("\\").lower()
    return normal(first) == normal(second)


def entries_for(state, loader, partuuid=None):
    """The entries that start ``loader`` (``\\EFI\\debian\\shimx64.efi``), on the partition ``partuuid`` if given."""
    return [entry for entry in state["entries"].values()
            if same_file(entry.file, loader) and (partuuid is None or entry.partuuid == (partuuid or "").lower())]


def create_entry_command(disk, partition, loader, label):
    """Make an entry for ``loader`` on partition number ``partition`` of ``disk``, leaving BootOrder alone.

    ``--create-only``: ``--create`` would also put the entry first in BootOrder, a second NVRAM
    write the caller decides on separately (``first_in_order_command``).
    """
    return ["efibootmgr", "--create-only", "--disk", disk, "--part", str(int(partition)),
            "--loader", loader.replace("/", "\\"), "--label", label]


def bootnext_command(number):
    return ["efibootmgr", "--bootnext", _number(number)]


def first_in_order_command(state, number):
    """The command that puts ``number`` first in BootOrder, the rest in their order; None if it is first."""
    number = _number(number)
    if number not in state["entries"]:
        raise ValueError("there is no boot entry Boot%s" % number)
    order = [number] + [item for item in state["order"] if item != number]
    if order == state["order"]:
        return None
    return ["efibootmgr", "--bootorder", ",".join(order)]


def cleanup_commands(state):
    """Remove every entry this collection made (by its label), and a BootNext pointing at one of them."""
    ours = [number for number, entry in state["entries"].items() if entry.ours()]
    commands = []
    if state["next"] in ours:
        commands.append(["efibootmgr", "--delete-bootnext"])
    for number in ours:
        commands.append(["efibootmgr", "--bootnum", number, "--delete-bootnum"])
    return commands


def read_efivar(name, root="/", limit=4096):
    """The value of a global EFI variable (efivarfs gives 4 bytes of attributes first), None when absent."""
    path = os.path.join(root, EFIVARS.lstrip("/"), "%s-%s" % (name, GLOBAL_VARIABLE_GUID))
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 4)
    except (FileNotFoundError, PermissionError):
        return None
    return data[4:] if len(data) > 4 else None


def secure_boot(root="/"):
    """True or False from the SecureBoot variable (one byte), None when the PC has none (BIOS, or
    firmware without Secure Boot)."""
    value = read_efivar("SecureBoot", root)
    return None if value is None else value[0] == 1


def _numbers(value):
    count = len(value) // 2
    return ["%04X" % number for number in struct.unpack_from("<%dH" % count, value)]


def boot_order(root="/"):
    """BootOrder from efivars, as efibootmgr prints its numbers; read without efibootmgr, which a
    stock old system may lack."""
    value = read_efivar("BootOrder", root)
    return _numbers(value) if value else []


def boot_current(root="/"):
    value = read_efivar("BootCurrent", root)
    return _numbers(value)[0] if value and len(value) >= 2 else None


def booted_with_uefi(root="/"):
    return os.path.isdir(os.path.join(root, "sys/firmware/efi"))


def is_esp_type(parttype):
    """Whether a partition type (a GPT type GUID, or an msdos type as lsblk and blkid give it) is an ESP's."""
    return (parttype or "").lower() in (ESP_TYPE, ESP_MSDOS_TYPE)


def esp_partitions(devices, disk):
    """The EFI system partitions of ``disk`` among ``devices`` (dicts with ``path``, ``parent``, ``parttype``,
    as preflight reads lsblk), in table order."""
    return [device["path"] for device in devices
            if device.get("parent") == disk and is_esp_type(device.get("parttype"))]


def authenticode_signed(path):
    """Whether the PE file at ``path`` carries a certificate table (an Authenticode signature).

    Only the headers are read: the DOS header's pointer to the PE header, the optional header's
    magic (PE32 or PE32+), the number of data directories and the fifth, the security directory.
    Not a PE file (a bzImage without an EFI stub, anything else) is False.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(PE_HEADER_LIMIT)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return False
    if len(head) < 0x40 or head[:2] != b"MZ":
        return False
    pe = struct.unpack_from("<I", head, 0x3C)[0]
    optional = pe + 24
    if optional + 2 > len(head) or head[pe:pe + 4] != b"PE\0\0":
        return False
    magic = struct.unpack_from("<H", head, optional)[0]
    if magic not in (0x10B, 0x20B):
        return False
    count_at = optional + (92 if magic == 0x10B else 108)
    if count_at + 4 > len(head):
        return False
    count = struct.unpack_from("<I", head, count_at)[0]
    entry = count_at + 4 + 8 * SECURITY_DIRECTORY
    if count <= SECURITY_DIRECTORY or entry + 8 > len(head):
        return False
    offset, size = struct.unpack_from("<II", head, entry)
    return offset != 0 and size != 0


def find_file(root, paths):
    """The first of ``paths`` that is a file in the image root ``root``, None when none is."""
    for path in paths:
        if os.path.isfile(os.path.join(root, path.lstrip("/"))):
            return path
    return None


def kernels(root):
    """The kernel images of an image root: ``/boot/vmlinuz-*`` and ``/usr/lib/modules/*/vmlinuz``."""
    found = []
    boot = os.path.join(root, "boot")
    if os.path.isdir(boot):
        found += sorted(os.path.join("/boot", name) for name in os.listdir(boot) if name.startswith("vmlinuz-"))
    modules = os.path.join(root, "usr/lib/modules")
    if os.path.isdir(modules):
        found += sorted(os.path.join("/usr/lib/modules", name, "vmlinuz") for name in os.listdir(modules)
                        if os.path.isfile(os.path.join(modules, name, "vmlinuz")))
    return found


def signed_boot_chain(root):
    """What an image root (a directory) holds of a signed boot chain, and what it lacks.

    Returns a dict: ``shim``, ``grub`` (the paths found, or None), ``kernels`` (the signed ones),
    ``unsigned_kernels`` and ``missing`` (sentences' subjects, empty when the chain is whole).
    """
    shim = find_file(root, SHIM_PATHS)
    grub = find_file(root, GRUB_SIGNED_PATHS)
    found = kernels(root)
    signed = [path for path in found if authenticode_signed(os.path.join(root, path.lstrip("/")))]
    missing = []
    if not shim:
        missing.append("shim (%s, from shim-signed)" % SHIM_PATHS[0])
    if not grub:
        missing.append("signed GRUB (%s, from grub-efi-amd64-signed)" % GRUB_SIGNED_PATHS[0])
    if not signed:
        missing.append("a signed kernel (%s)" % (
            "none of %s carries a signature" % ", ".join(found) if found else "no kernel in /boot"))
    return {"shim": shim, "grub": grub, "kernels": signed,
            "unsigned_kernels": [path for path in found if path not in signed], "missing": missing}
