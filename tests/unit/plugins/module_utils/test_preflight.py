"""Preflight's inspection: power supply reading on a made-up sysfs tree, the root filesystems accepted."""

from __future__ import annotations

import json

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.preflight import inspect as _inspect
from ansible_collections.inplace.migration.plugins.module_utils.preflight.inspect import on_battery


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
    assert uefi_facts(devices, "/dev/nvme0n1", str(tmp_path)) == {
        "esp": ["/dev/nvme0n1p1"], "secure_boot": True, "boot_current": "0004", "boot_order": ["0004", "0001"]}
    assert uefi_facts(devices, None, str(tmp_path))["esp"] == []


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
