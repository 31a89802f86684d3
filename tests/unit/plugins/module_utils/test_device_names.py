"""Partition names: the kernel's rule for a partition not made yet, sysfs for one that exists, and the callers that
used to build names or take a device by its label anywhere (no root, no devices: a fake sysfs and /dev)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.boot import firstboot as _firstboot
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk import mount as _mount
from ansible_collections.inplace.migration.plugins.module_utils.disk import parted as _parted
from ansible_collections.inplace.migration.plugins.module_utils.disk.model import (
    CreateFilesystem, CreatePartition, Disk, Partition, partition_name,
)
from ansible_collections.inplace.migration.plugins.module_utils.state.cleanup import StoreCleanup

MiB = 1024 * 1024


@pytest.mark.parametrize("disk, number, name", [
    ("nvme0n1", 2, "nvme0n1p2"), ("/dev/nvme0n1", 2, "/dev/nvme0n1p2"), ("/dev/nvme1n12", 10, "/dev/nvme1n12p10"),
    ("mmcblk0", 1, "mmcblk0p1"), ("loop0", 1, "loop0p1"), ("/dev/loop12", 3, "/dev/loop12p3"),
    ("md127", 1, "md127p1"), ("sda", 2, "sda2"), ("/dev/sdaa", 15, "/dev/sdaa15"), ("/dev/vda", 1, "/dev/vda1"),
    ("xvda", 4, "xvda4"),
])
def test_a_partition_is_named_as_the_kernel_names_it_p_after_a_disk_name_ending_in_a_digit(disk, number, name):
    assert partition_name(disk, number) == name


def test_the_steps_planned_on_an_nvme_disk_name_its_partitions_with_p():
    disk = Disk(path="/dev/nvme0n1", size=1024 * MiB, sector_size=512, label="gpt",
                partitions=(Partition(1, MiB, 512 * MiB, path="/dev/nvme0n1p1"),), first_usable=MiB,
                usable_end=1023 * MiB)
    create = CreatePartition(number=2, start=512 * MiB, end=1023 * MiB, kind="primary")
    assert create.describe(disk) == "create primary partition /dev/nvme0n1p2 of 511.0 MiB at 512.0 MiB"
    after = create.apply(disk)
    assert after.partition(2).path == "/dev/nvme0n1p2"
    assert CreateFilesystem(2, "ext4", "INPLACE-STORE").describe(after) == \
        "format /dev/nvme0n1p2 as ext4 labelled INPLACE-STORE"
    assert disk.find("/dev/nvme0n1p1").number == 1 and disk.find("/dev/nvme0n11") is None


@pytest.fixture
def fake_sysfs(monkeypatch, tmp_path):
    """sysfs and /dev for an NVMe disk with partitions 1 and 2 (as the kernel shows them), and a stick sda."""
    sys_block, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    layout = {"nvme0n1": {"nvme0n1p1": "1", "nvme0n1p2": "2"}, "sda": {"sda1": "1"}}
    for disk, parts in layout.items():
        (sys_block / disk / "queue").mkdir(parents=True)  # a directory of the disk that is no partition
        (sys_block / disk / "holders").mkdir()
        (dev / disk).write_text("")
        for name, number in parts.items():
            (sys_block / disk / name).mkdir()
            (sys_block / disk / name / "partition").write_text(number + "\n")
            (dev / name).write_text("")
    monkeypatch.setattr(_devices, "DEV", str(dev))

    def sysfs(path):  # as the real one, by the device the path is (a /dev/disk/by-id link too)
        name = os.path.basename(os.path.realpath(path))
        if name in layout:
            return str(sys_block / name)
        return str(next(sys_block / disk / name for disk in layout if name.startswith(disk)))
    monkeypatch.setattr(_devices, "sysfs", sysfs)
    return dev


def test_the_partitions_of_a_disk_and_their_numbers_are_read_from_sysfs_not_made_from_its_name(fake_sysfs):
    dev = fake_sysfs
    assert _devices.partition_nodes(str(dev / "nvme0n1")) == {1: str(dev / "nvme0n1p1"), 2: str(dev / "nvme0n1p2")}
    assert _devices.partition_nodes(str(dev / "sda")) == {1: str(dev / "sda1")}
    assert _devices.partition_number(str(dev / "nvme0n1p2")) == 2


class PartxRunner:
    def __init__(self):
        self.calls = []

    def has(self, tool):
        return tool != "udevadm"

    def run(self, args, ok=(0,), data=None):
        self.calls.append(args)
        return 0, "", ""


def test_the_wait_for_new_partitions_asks_the_kernel_for_their_nodes(fake_sysfs, monkeypatch):
    dev = fake_sysfs
    disk = Disk(path=str(dev / "nvme0n1"), size=1024 * MiB, sector_size=512, label="gpt", partitions=(
        Partition(1, MiB, 512 * MiB, path=str(dev / "nvme0n1p1")), Partition(2, 512 * MiB, 1023 * MiB)))
    runner = PartxRunner()
    _parted.wait_for_nodes(runner, disk)
    assert runner.calls == []

    monkeypatch.setattr(_parted, "NODE_TIMEOUT", 0.05)
    missing = disk.with_partitions(disk.partitions + (Partition(3, 1023 * MiB, 1024 * MiB),))
    with pytest.raises(MigrationError, match=r"no device node for .*nvme0n1p3 after"):
        _parted.wait_for_nodes(runner, missing)
    assert runner.calls == [["partx", "-a", str(dev / "nvme0n1")]]


def test_the_wait_for_new_partitions_of_a_disk_named_by_a_link_finds_them(fake_sysfs, tmp_path):
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "nvme-QEMU_NVMe_Ctrl_INPLACE-SYS").symlink_to(fake_sysfs / "nvme0n1")
    disk = Disk(path=str(by_id / "nvme-QEMU_NVMe_Ctrl_INPLACE-SYS"), size=1024 * MiB, sector_size=512, label="gpt",
                partitions=(Partition(1, MiB, 512 * MiB), Partition(2, 512 * MiB, 1023 * MiB)))
    runner = PartxRunner()
    _parted.wait_for_nodes(runner, disk)
    assert runner.calls == []


class FindmntRunner:
    """Answers findmnt with ``source`` (or fails when it is None), and blkid with nothing."""

    def __init__(self, source):
        self.source = source
        self.calls = []

    def has(self, tool):
        return True

    def run(self, args, ok=(0,), data=None):
        self.calls.append(args)
        if args[0] == "findmnt":
            return (1, "", "") if self.source is None else (0, self.source + "\n", "")
        return 0, "", ""


@pytest.mark.parametrize("source, disk", [
    ("/dev/nvme0n1p2", "/dev/nvme0n1"), ("/dev/nvme0n1p2[/@]", "/dev/nvme0n1"), ("/dev/sda", None),
    ("tmpfs", None), (None, None),
], ids=["partition", "btrfs subvolume", "whole disk", "tmpfs", "nothing mounted"])
def test_the_disk_holding_a_path_is_the_parent_of_the_partition_findmnt_names_else_none(monkeypatch, source, disk):
    monkeypatch.setattr(_devices, "is_block_device", lambda path: path.startswith("/dev/"))
    monkeypatch.setattr(_devices, "is_partition", lambda path: path[-1].isdigit())
    monkeypatch.setattr(_devices, "parent_disk", lambda path: path[:-2])
    runner = FindmntRunner(source)
    assert _mount.disk_holding(runner, "/") == disk
    assert runner.calls[0][:2] == ["findmnt", "--noheadings"] and runner.calls[0][-2:] == ["--target", "/"]


class LabelScan:
    """A scan in which the store's label is on the system disk's partition 3 and on a stick's partition 1."""

    def __init__(self, with_store=True):
        self.devices = {"/dev/sda1": {"LABEL": "INPLACE-STORE"}}
        if with_store:
            self.devices["/dev/nvme0n1p3"] = {"LABEL": "INPLACE-STORE"}

    def on_disk(self, spec, disk, what=None):
        found = sorted(self.devices)
        here = [d for d in found if d.startswith(disk)]
        return (here[0] if here else None), [d for d in found if d not in here]

    def identity(self, device):
        return {"device": device, "label": "INPLACE-STORE"}


def test_cleanup_without_a_recorded_identity_takes_the_label_on_the_system_disk_only(tmp_path, monkeypatch):
    monkeypatch.setattr(_mount, "disk_holding", lambda runner, path: "/dev/nvme0n1")
    cleanup = StoreCleanup(None, str(tmp_path))
    assert cleanup.recorded_identity(LabelScan()) == ({"device": "/dev/nvme0n1p3", "label": "INPLACE-STORE"},
                                                      "/dev/nvme0n1p3")
    assert cleanup.result["ignored_stores"] == ["/dev/sda1"]
    # The store gone already: the stick with its label is still not the store.
    cleanup = StoreCleanup(None, str(tmp_path))
    assert cleanup.recorded_identity(LabelScan(with_store=False)) == (None, None)
    assert cleanup.result["ignored_stores"] == ["/dev/sda1"]


def test_cleanup_without_a_recorded_identity_or_a_system_disk_refuses_to_look_by_label(tmp_path, monkeypatch):
    monkeypatch.setattr(_mount, "disk_holding", lambda runner, path: None)
    with pytest.raises(MigrationError, match="is on no partition of a disk, so there is no system disk to look for "
                                             "the label INPLACE-STORE on; run store_cleanup in the new system"):
        StoreCleanup(None, str(tmp_path)).recorded_identity(LabelScan())


def test_the_first_boot_hook_finds_the_store_by_its_label_on_the_system_disk_only(monkeypatch):
    scans = []

    def scan(runner):
        scans.append(LabelScan(with_store=len(scans) == 0))
        return scans[-1]
    monkeypatch.setattr(_devices, "Scan", scan)
    monkeypatch.setattr(_firstboot, "disk_holding", lambda runner, path: "/dev/nvme0n1")
    assert _firstboot.find_store_device(None, {"store_label": "INPLACE-STORE"}) == "/dev/nvme0n1p3"
    with pytest.raises(MigrationError, match=r"no device on /dev/nvme0n1 \(the disk holding /\) has "
                                             r"LABEL=INPLACE-STORE, only /dev/sda1 elsewhere, which is not taken"):
        _firstboot.find_store_device(None, {"store_label": "INPLACE-STORE"})
    monkeypatch.setattr(_firstboot, "disk_holding", lambda runner, path: None)
    with pytest.raises(MigrationError, match="no partition of a disk"):
        _firstboot.find_store_device(None, {}, root="/mnt")
