# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The partition image_deploy writes: which one it is, and whether it may be written.

dest is found by its spec on the first run and by the PARTUUID the journal records on
every run after it (a label vanishes when the partition is overwritten); either way a
spec that names two devices is an error naming both. Every refusal here comes before
anything is written.
"""

from __future__ import annotations

import os

from ansible_collections.inplace.migration.plugins.module_utils.boot import efi as _efi
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk import mount as _mount
from ansible_collections.inplace.migration.plugins.module_utils.image.fixups import BIOS_BOOT_TYPE


def find_dest(scan, spec, record):
    """(device, identity) of the partition or logical volume ``spec`` names, or of the one the journal's ``record``
    names; ``identity`` is ``{"partuuid": ...}`` or, for a logical volume (a root on LVM), ``{"lv_uuid": ...}``."""
    recorded = next((("%s=%s" % (prefix, record[key]), key) for key, prefix in (("partuuid", "PARTUUID"),
                                                                                ("lv_uuid", "LVUUID"))
                     if record and record.get("dest") == spec and record.get(key)), None)
    if recorded:
        device = scan.lookup(recorded[0], "dest=%s, recorded in the journal" % spec)
        if device is None:
            raise MigrationError("the %s with %s (dest=%s, recorded in the journal) is not on this machine." % (
                "partition" if recorded[1] == "partuuid" else "logical volume", recorded[0], spec))
    else:
        device = scan.lookup(spec, "dest")
        if device is None:
            if _devices.parse_spec(spec)[0]:
                raise MigrationError("no partition has %s; dest names nothing on this machine." % spec)
            raise MigrationError("dest=%s is not a block device; name the system partition, such as /dev/sda2 or "
                                 "LABEL=<its label>." % spec)
    values = scan.values(device)
    if values.get(_devices.LV_UUID):
        return device, {"lv_uuid": values[_devices.LV_UUID].lower()}
    if not _devices.is_partition(device):
        raise MigrationError("dest=%s is a whole disk; image_deploy writes a partition (or a logical volume) only." %
                             spec)
    partuuid = (values.get("PART_ENTRY_UUID") or "").lower()
    if not partuuid:
        raise MigrationError("dest=%s (%s) has no PARTUUID to record it by." % (spec, device))
    return device, {"partuuid": partuuid}


def is_dest(record, identity):
    """Whether the journal's ``record`` is about the dest with ``identity`` (``find_dest``'s)."""
    return bool(record) and all(record.get(key) == value for key, value in identity.items())


def esp_refusal(spec, device, values):
    """The sentence refusing a dest that is an EFI system partition (by its partition type in blkid's
    ``values``), else None: the image never writes the ESP, whose boot loaders the deploy's last step
    replaces one file at a time."""
    parttype = values.get("PART_ENTRY_TYPE")
    if not _efi.is_esp_type(parttype):
        return None
    return ("dest=%s (%s) is the EFI system partition (type %s), which the image never overwrites; name the system "
            "partition instead." % (spec, device, parttype.lower()))


def refuse(scan, device, spec, store_root, protect):
    """Refuse a dest that is the ESP, holds the store, is mounted or held, or is (on) a device named in ``protect``."""
    esp = esp_refusal(spec, device, scan.values(device))
    if esp:
        raise MigrationError(esp)
    if _devices.device_number(device) == _devices.number_text(os.stat(store_root).st_dev):
        raise MigrationError("dest=%s (%s) holds the store %s; it is never written." % (spec, device, store_root))
    mounted = _mount.mountpoint_of(device)
    if mounted:
        raise MigrationError("dest=%s (%s) is mounted at %s; unmount it first." % (spec, device, mounted))
    users = _devices.holders(device)
    if users:
        raise MigrationError("dest=%s (%s) is in use by %s." % (spec, device, ", ".join(users)))
    number = _devices.device_number(device)
    for protected in protect or []:
        # Every device the spec names is protected: here two matches are no reason to guess.
        for path in scan.matching(protected):
            same = _devices.device_number(path) == number
            if not same and not _devices.is_partition(path):
                same = _devices.parent_disk(device) == path
            if same:
                raise MigrationError("dest=%s (%s) is protected by protect=%s." % (spec, device, protected))


def bootloader_disk(scan, device, bootloader):
    """The disk GRUB for BIOS goes to, refused before writing when GRUB cannot embed itself there."""
    if bootloader != "grub-bios":
        return None
    disk = _devices.parent_disk(device)
    table = scan.values(disk).get("PTTYPE")
    if table == "gpt":
        bios_boot = [path for path, v in scan.devices.items()
                     if v.get("PART_ENTRY_TYPE", "").lower() == BIOS_BOOT_TYPE and path != device
                     and _devices.parent_disk(path) == disk]
        if not bios_boot:
            raise MigrationError("the GPT disk %s has no BIOS boot partition (bios_grub) for GRUB to embed itself "
                                 "in; add one, or set bootloader=none." % disk)
    elif table != "dos":
        raise MigrationError("the disk %s has a %s partition table; GRUB for BIOS needs msdos or GPT." % (
            disk, table or "unknown"))
    return disk
