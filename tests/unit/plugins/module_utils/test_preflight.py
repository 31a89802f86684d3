"""Preflight's inspection: power supply reading on a made-up sysfs tree, the root filesystems accepted."""

from __future__ import annotations

import json

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.preflight import inspect as _inspect
from ansible_collections.inplace.migration.plugins.module_utils.preflight.inspect import on_battery
from tests.support.lvm_reports import LVS, PVS, VGS


def supply(root, name, **files):
    directory = root / name
    directory.mkdir()
    for key, value in files.items():
        (directory / key).write_text(value + "\n")


@pytest.mark.parametrize("mains_online, battery_status, expected", [
    ("1", "Charging", False), ("0", "Discharging", True), (None, "Discharging", True), (None, "Full", False)])
def test_on_battery(tmp_path, mains_online, battery_status, expected):
    supply(tmp_path, "BAT0", type="Battery", present="1", status=battery_status)
    if mains_online is not None:
        supply(tmp_path, "AC", type="Mains", online=mains_online)
    assert on_battery(str(tmp_path)) is expected


def test_a_desktop_without_battery_is_on_mains(tmp_path):
    supply(tmp_path, "AC", type="Mains", online="0")
    assert on_battery(str(tmp_path)) is False


def _efivar(root, name, data):
    directory = root / "sys/firmware/efi/efivars"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / (name + "-8be4df61-93ca-11d2-aa0d-00e098032b8c")).write_bytes(data)


def test_uefi_facts_name_the_system_disk_s_esp_secure_boot_and_the_boot_order(tmp_path):
    from ansible_collections.inplace.migration.plugins.module_utils.preflight.inspect import uefi_facts
    _efivar(tmp_path, "SecureBoot", b"\x06\x00\x00\x00\x01")
    _efivar(tmp_path, "BootOrder", b"\x07\x00\x00\x00\x04\x00\x01\x00")
    _efivar(tmp_path, "BootCurrent", b"\x06\x00\x00\x00\x04\x00")
    devices = [{"path": "/dev/sda1", "parent": "/dev/sda", "parttype": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"},
               {"path": "/dev/nvme0n1p1", "parent": "/dev/nvme0n1", "parttype": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"},
               {"path": "/dev/nvme0n1p2", "parent": "/dev/nvme0n1", "parttype": "0fc63daf-8483-4772-8e79-3d69d8477de4"}]
    devices[1]["partuuid"] = "8f3c1a52-0d4e-4b7a-9c61-2e5f7a8b9c0d"
    assert uefi_facts(devices, "/dev/nvme0n1", str(tmp_path)) == {
        "esp": ["/dev/nvme0n1p1"], "esp_partuuid": "8f3c1a52-0d4e-4b7a-9c61-2e5f7a8b9c0d", "esp_mounted": False,
        "secure_boot": True, "boot_current": "0004", "boot_order": ["0004", "0001"], "vendor": None,
        "vendor_error": None}
    assert uefi_facts(devices, None, str(tmp_path))["esp"] == []
    # Two ESPs on the disk: the one mounted at /boot/efi is the PC's; with none mounted nothing decides it.
    devices.append({"path": "/dev/nvme0n1p3", "parent": "/dev/nvme0n1", "partuuid": "11111111-2222-4333-8444-555555555555",
                    "parttype": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"})
    assert uefi_facts(devices, "/dev/nvme0n1", str(tmp_path))["esp_partuuid"] is None
    devices[-1]["mountpoint"] = "/boot/efi"
    facts = uefi_facts(devices, "/dev/nvme0n1", str(tmp_path))
    assert facts["esp"] == ["/dev/nvme0n1p1", "/dev/nvme0n1p3"] and facts["esp_mounted"] is True
    assert facts["esp_partuuid"] == "11111111-2222-4333-8444-555555555555"
    # The mounted ESP's GRUB says which \EFI directory it reads; without one the sentence says so.
    assert facts["vendor"] is None and facts["vendor_error"].startswith("no GRUB on the EFI system partition (%s" % (
        tmp_path / "boot/efi"))
    from tests.unit.plugins.module_utils.test_efi_boot import grub_image
    (tmp_path / "boot/efi/EFI/debian").mkdir(parents=True)
    (tmp_path / "boot/efi/EFI/debian/grubx64.efi").write_bytes(grub_image("debian", size=70000))
    facts = uefi_facts(devices, "/dev/nvme0n1", str(tmp_path))
    assert (facts["vendor"], facts["vendor_error"]) == ("debian", None)


def test_the_disk_under_a_logical_volume_s_physical_volume_is_its_partition_s_disk():
    from ansible_collections.inplace.migration.plugins.module_utils.preflight.inspect import disk_under
    devices = {"/dev/sda": {"path": "/dev/sda", "type": "disk", "parent": None},
               "/dev/sda2": {"path": "/dev/sda2", "type": "part", "parent": "/dev/sda"},
               "/dev/sdb": {"path": "/dev/sdb", "type": "disk", "parent": None}}
    assert disk_under(devices, "/dev/sda2") == "/dev/sda"
    assert disk_under(devices, "/dev/sdb") == "/dev/sdb", "a PV on a whole disk"
    assert disk_under(devices, "/dev/md0") == "/dev/md0", "a device lsblk did not list stays as named"


class LvmRoot:
    """findmnt, lsblk and LVM's reports of a PC whose root is vg0/root on /dev/sda2 (and, with
    ``second_pv``, on /dev/sdb1 too)."""

    def __init__(self, second_pv=False, crypt=False):
        self.second_pv = second_pv
        self.crypt = crypt

    def run(self, args, ok=(0,), data=None):
        command = args[0]
        if command == "findmnt":
            if args[-1] != "/":
                return 1, "", ""
            return 0, json.dumps({"filesystems": [{"source": "/dev/mapper/vg0-root", "uuid": "r-uuid",
                                                   "fstype": "ext4", "target": "/"}]}), ""
        if command == "lsblk":
            lv = {"name": "vg0-root", "path": "/dev/mapper/vg0-root", "type": "lvm", "size": 104857600}
            pv = {"name": "sda2", "path": "/dev/sda2", "type": "part", "size": 205520896, "partuuid": "pv-partuuid",
                  "children": [lv]}
            if self.crypt:
                pv["children"] = [{"name": "sda2_crypt", "path": "/dev/mapper/sda2_crypt", "type": "crypt",
                                   "children": [lv]}]
            disks = [{"name": "sda", "path": "/dev/sda", "type": "disk", "size": 10 ** 10, "children": [pv]}]
            if self.second_pv:
                disks.append({"name": "sdb", "path": "/dev/sdb", "type": "disk", "size": 10 ** 10, "children": [
                    {"name": "sdb1", "path": "/dev/sdb1", "type": "part", "children": [lv]}]})
            return 0, json.dumps({"blockdevices": disks}), ""
        if command == "lvs" and "vg_name,lv_name,lv_path,lv_dm_path" in args:
            return 0, json.dumps({"report": [{"lv": [{"vg_name": "vg0", "lv_name": "root", "lv_path": "/dev/vg0/root",
                                                      "lv_dm_path": "/dev/mapper/vg0-root"}]}]}), ""
        if command == "pvs" and self.second_pv:
            rows = json.loads(PVS)["report"][0]["pv"] + [{"pv_name": "/dev/sdb1", "pv_uuid": "u2", "pv_size": "1"}]
            return 0, json.dumps({"report": [{"pv": rows}]}), ""
        return 0, {"vgs": VGS, "lvs": LVS, "pvs": PVS}[command], ""

    def output(self, args, ok=(0,)):
        return self.run(args, ok)[1]


def test_a_root_on_lvm_on_one_disk_is_accepted_and_found_by_its_physical_volume():
    from ansible_collections.inplace.migration.plugins.module_utils.preflight.inspect import inspect
    facts = inspect(LvmRoot())
    assert facts["lvm"]["vg"] == "vg0" and facts["lvm"]["lv"] == "root"
    assert facts["lvm"]["free_bytes"] == 96 * 1024 * 1024 and facts["lvm"]["disks"] == ["/dev/sda"]
    assert not [s for s in facts["inhibitors"] if "LVM" in s or "volume group" in s]
    assert facts["disk"] == "/dev/sda" and facts["disk_bytes"] == 10 ** 10
    assert facts["root"]["partuuid"] == "pv-partuuid", "the disk is found later by the physical volume's PARTUUID"
    assert facts["root"]["lv_path"] == "/dev/mapper/vg0-root"


def test_a_volume_group_over_two_disks_is_refused_for_that():
    from ansible_collections.inplace.migration.plugins.module_utils.preflight.inspect import inspect
    facts = inspect(LvmRoot(second_pv=True))
    assert facts["lvm"]["disks"] == ["/dev/sda", "/dev/sdb"]
    assert [s for s in facts["inhibitors"] if "volume group" in s or "LVM" in s] == [
        "the root's volume group vg0 spans the disks /dev/sda, /dev/sdb; the store and the new system are kept on "
        "one disk, so the volume group must lie on the system disk alone."]


def test_lvm_on_luks_is_refused_as_luks():
    from ansible_collections.inplace.migration.plugins.module_utils.preflight import inhibitors
    from ansible_collections.inplace.migration.plugins.module_utils.preflight.inspect import inspect
    facts = inspect(LvmRoot(crypt=True))
    assert inhibitors.LUKS in facts["inhibitors"] and "disk" not in facts


class SystemRunner:
    """findmnt and lsblk as they answer on a PC whose root filesystem, of ``fstype``, is /dev/vda1."""

    def __init__(self, fstype):
        self.fstype = fstype

    def run(self, command, ok=None):
        if command[-1] != "/":
            return 1, "", ""
        return 0, json.dumps({"filesystems": [{"source": "/dev/vda1", "uuid": "r-uuid", "fstype": self.fstype,
                                               "target": "/"}]}), ""

    def output(self, command):
        part = {"name": "vda1", "path": "/dev/vda1", "type": "part", "fstype": self.fstype, "size": 8 << 30,
                "partuuid": "p-uuid"}
        return json.dumps({"blockdevices": [{"name": "vda", "path": "/dev/vda", "type": "disk", "size": 8 << 30,
                                             "children": [part]}]})


@pytest.mark.parametrize("fstype, refused", [("ext4", False), ("btrfs", False), ("xfs", False), ("f2fs", True),
                                             ("zfs", True)])
def test_the_root_filesystems_preflight_accepts(monkeypatch, fstype, refused):
    monkeypatch.setattr(_inspect.os.path, "realpath", lambda path: path)
    sentences = _inspect.inspect(SystemRunner(fstype))["inhibitors"]
    sentence = ("the root filesystem is %s, and only a root on ext2, ext3, ext4, btrfs or xfs can be migrated in "
                "place; install this PC afresh instead." % fstype)
    assert (sentence in sentences) is refused, sentences
    assert not [s for s in sentences if fstype in s and s != sentence], sentences
