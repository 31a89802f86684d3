# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the old system must be for an in-place migration to work, checked before anything changes.

Each problem is an *inhibitor*: one sentence that says what stops this PC and,
where there is one, what to do about it. Nothing here writes anything.
"""

from __future__ import annotations

import glob
import json
import os

from ansible_collections.inplace.migration.plugins.module_utils.boot import efi
from ansible_collections.inplace.migration.plugins.module_utils.boot import efi_boot
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import human
from ansible_collections.inplace.migration.plugins.module_utils.disk import lvm as _lvm
from ansible_collections.inplace.migration.plugins.module_utils.disk.devices import read_attribute
from ansible_collections.inplace.migration.plugins.module_utils.preflight import inhibitors as _inhibitors
from ansible_collections.inplace.migration.plugins.module_utils.profiles.homes import read_fstab

# xfs cannot shrink: its store comes from unallocated space or another partition (preflight's plan says which).
SUPPORTED_ROOT_FS = ("ext2", "ext3", "ext4", "btrfs", "xfs")
STACKED = {"lvm": "LVM", "crypt": "LUKS encryption", "raid0": "md RAID", "raid1": "md RAID", "raid4": "md RAID",
           "raid5": "md RAID", "raid6": "md RAID", "raid10": "md RAID", "md": "md RAID", "dm": "device mapper"}


def memory_mib():
    for line in (read_attribute("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def on_battery(power_supply="/sys/class/power_supply"):
    """True when a battery is present and no mains supply is online."""
    batteries, mains = [], []
    for supply in glob.glob(os.path.join(power_supply, "*")):
        kind = read_attribute(os.path.join(supply, "type"))
        if kind == "Battery" and read_attribute(os.path.join(supply, "present")) != "0":
            batteries.append(read_attribute(os.path.join(supply, "status")))
        elif kind == "Mains":
            mains.append(read_attribute(os.path.join(supply, "online")) == "1")
    if not batteries:
        return False
    return not any(mains) if mains else any(status == "Discharging" for status in batteries)


def uefi_facts(devices, disk, root="/"):
    """What a UEFI PC's boot looks like: the ESPs on the system disk, Secure Boot, the boot order (read
    from efivars, so a system without efibootmgr is seen the same). ``esp_partuuid`` is the ESP the later
    phases find by identity: the one mounted at /boot/efi, else the disk's only one (None when that does not
    decide it)."""
    devices = list(devices)
    esps = efi.esp_partitions(devices, disk) if disk else []
    mounted = [device for device in devices if device["path"] in esps and device.get("mountpoint") == "/boot/efi"]
    chosen = mounted or ([device for device in devices if device["path"] in esps] if len(esps) == 1 else [])
    facts = {"esp": esps, "esp_partuuid": chosen[0].get("partuuid") if chosen else None,
             "esp_mounted": bool(mounted), "secure_boot": efi.secure_boot(root), "boot_current": efi.boot_current(root),
             "boot_order": efi.boot_order(root), "vendor": None, "vendor_error": None}
    if mounted:
        # Which \EFI directory the PC's signed GRUB reads: the stub the store phase rewrites is there.
        try:
            facts["vendor"] = efi_boot.esp_vendor(os.path.join(root, "boot/efi"))
        except MigrationError as error:
            facts["vendor_error"] = str(error)
    return facts


def _lsblk(runner):
    out = runner.output(["lsblk", "--json", "--bytes", "--output",
                         "NAME,PATH,TYPE,FSTYPE,MOUNTPOINT,PKNAME,SIZE,PARTUUID,UUID,PARTTYPE"])
    devices = {}

    def index(nodes, parent):
        for node in nodes:
            node["parent"] = parent
            devices.setdefault(node["path"], node)
            # lsblk names a device-mapper device /dev/mapper/NAME; findmnt's source resolves to /dev/dm-N.
            devices.setdefault(os.path.realpath(node["path"]), node)
            index(node.get("children", []), node["path"])
    index(json.loads(out).get("blockdevices", []), None)
    return devices


def disk_under(devices, path):
    """The disk ``path`` (in lsblk's ``devices``) is on: itself, or the disk its chain of parents ends in."""
    node = devices.get(path)
    while node is not None and node["type"] != "disk" and node.get("parent"):
        node = devices.get(node["parent"])
    return node["path"] if node is not None and node["type"] == "disk" else path


def lvm_facts(runner, devices, device):
    """The volume group and logical volume the root (``device``) is on, and the disks under it."""
    vg_name, lv_name = _lvm.root_volume(runner, device)
    return _lvm.facts(_lvm.Lvm(runner, vg_name).read(), lv_name, lambda pv: disk_under(devices, pv))


def _lvm_root(facts, node, chain):
    """A root on a logical volume whose volume group lies on one disk: the later phases find that disk by the
    physical volume's PARTUUID (kept as the root's ``partuuid``) and the root by its logical volume's path."""
    partition = next((device for device in chain if device["type"] == "part"), None)
    if partition is None or chain[-1]["type"] != "disk" or not partition.get("partuuid"):
        return ["the root's volume group %s is not on a partition of a disk with a PARTUUID, which the later phases "
                "find the disk by." % facts["lvm"]["vg"]]
    facts["root"].update(partuuid=partition["partuuid"], lv_path=node["path"])
    facts["disk"] = chain[-1]["path"]
    facts["disk_bytes"] = int(chain[-1]["size"])
    return []


def _findmnt(runner, target):
    rc, out, unused_err = runner.run(["findmnt", "--noheadings", "--json", "--output", "SOURCE,UUID,FSTYPE,TARGET",
                                      target], ok=None)
    if rc != 0:
        return None
    return json.loads(out)["filesystems"][0]


def inspect(runner, min_ram_mib=768, boot_bytes_needed=0):
    """Facts about the system's root, disk, /boot, memory and power; and the inhibitors found."""
    inhibitors = []
    root = _findmnt(runner, "/")
    devices = _lsblk(runner)
    source = os.path.realpath(root["source"]) if root else None
    node = devices.get(source)
    facts = {"root": {"device": source, "uuid": root and root.get("uuid"), "fstype": root and root.get("fstype"),
                      "partuuid": node and node.get("partuuid")}}
    if node is None:
        inhibitors.append("the root filesystem's device %s is not a block device this tool can follow." % source)
    else:
        chain, current = [], node
        while current is not None:
            chain.append(current)
            current = devices.get(current["parent"]) if current.get("parent") else None
        stacked = [STACKED[d["type"]] for d in chain if d["type"] in STACKED]
        if node["type"] == "lvm":
            try:
                facts["lvm"] = lvm_facts(runner, devices, source)
            except MigrationError as error:
                inhibitors.append(str(error))
        if stacked:
            inhibitors.extend(_inhibitors.stacked_root_findings(stacked, facts.get("lvm")))
            if stacked == ["LVM"] and facts.get("lvm") and len(facts["lvm"]["disks"]) == 1:
                inhibitors.extend(_lvm_root(facts, node, chain))
        elif node["type"] != "part" or chain[-1]["type"] != "disk":
            inhibitors.append("the root filesystem is not on a partition of a disk (%s is a %s)." % (
                source, node["type"]))
        else:
            facts["disk"] = chain[-1]["path"]
            facts["disk_bytes"] = int(chain[-1]["size"])
    inhibitors.extend(_inhibitors.kernel_name_mounts(read_fstab("/")))
    if facts["root"]["fstype"] not in SUPPORTED_ROOT_FS:
        inhibitors.append("the root filesystem is %s, and only a root on %s or %s can be migrated in place; "
                          "install this PC afresh instead." % (
                              facts["root"]["fstype"], ", ".join(SUPPORTED_ROOT_FS[:-1]), SUPPORTED_ROOT_FS[-1]))
    if efi.booted_with_uefi():
        facts["uefi"] = uefi_facts(devices.values(), facts.get("disk"))
        inhibitors.extend(_inhibitors.uefi_findings(facts["uefi"]))
    elif not glob.glob("/boot/grub/i386-pc") and not glob.glob("/boot/grub2/i386-pc"):
        inhibitors.append("no GRUB for BIOS (/boot/grub/i386-pc) was found; the maintenance environment boots "
                          "through GRUB.")
    boot = _findmnt(runner, "/boot")
    stat = os.statvfs("/boot")
    facts["boot"] = {"separate": bool(boot and boot.get("target") == "/boot"),
                     "uuid": (boot or root or {}).get("uuid"), "free_bytes": stat.f_bavail * stat.f_frsize}
    if facts["boot"]["separate"]:
        device = os.path.realpath(boot["source"])
        node = devices.get(device)
        parent = devices.get(node["parent"]) if node and node.get("parent") else None
        facts["boot"].update(device=device, fstype=boot.get("fstype"), disk=parent["path"] if (
            node["type"] == "part" and parent and parent["type"] == "disk") else None)
        inhibitors.extend(_inhibitors.separate_boot_findings(facts["boot"], facts.get("disk")))
    if boot_bytes_needed and facts["boot"]["free_bytes"] < boot_bytes_needed:
        inhibitors.append("/boot has %s free and the maintenance environment needs %s there; free some space." % (
            human(facts["boot"]["free_bytes"]), human(boot_bytes_needed)))
    facts["memory_mib"] = memory_mib()
    if facts["memory_mib"] < min_ram_mib:
        inhibitors.append("the PC has %d MiB of RAM and the RAM-only maintenance environment needs %d MiB." % (
            facts["memory_mib"], min_ram_mib))
    facts["on_battery"] = on_battery()
    if facts["on_battery"]:
        inhibitors.append("the PC runs on battery; plug it in, a power cut while the disk is rewritten can cost "
                          "its data.")
    facts["inhibitors"] = inhibitors
    return facts
