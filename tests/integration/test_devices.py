"""Finding devices on real loop disks: a label two devices carry is an error naming both, a store is
found by the identity recorded for it, through the modules and through the first-boot program.

Labels are made up per test, so disks other tests attach meanwhile never carry them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.boot import firstboot as _firstboot
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.state.store import Store
from tests.support import adhoc
from tests.support.loopdisk import MiB, mounted, run

GPT = "label: gpt\nstart=2048, size=24MiB, name=system\nsize=24MiB, name=store\n"
DOS = "label: dos\nstart=2048, size=24MiB, type=83\n"


def blkid(device, tag):
    return run("blkid", "-p", "-s", tag, "-o", "value", device, check=False).stdout.strip()


@pytest.fixture
def label():
    return "T" + uuid.uuid4().hex[:10].upper()


@pytest.fixture
def twins(make_disk, label):
    """(store, other): a store partition on a GPT disk, and an msdos disk's partition with the same label."""
    disk, other_disk = make_disk(64 * MiB, GPT), make_disk(32 * MiB, DOS)
    store, other = disk.part(2), other_disk.part(1)
    run("mkfs.ext4", "-q", "-F", "-L", "old-" + label[:8], disk.part(1))
    for device in (store, other):
        run("mkfs.ext4", "-q", "-F", "-L", label, device)
    return store, other


def test_migration_state_finds_the_one_store_on_the_system_disk_and_the_disk_holding_it(make_disk, label):
    disk = make_disk(64 * MiB, GPT)
    run("mkfs.ext4", "-q", "-F", "-L", label, disk.part(2))
    root = blkid(disk.part(1), "PART_ENTRY_UUID")
    result = adhoc.module("migration_state", {"store_label": label, "root_partuuid": root})
    assert result["rc"] == 0, result.get("msg")
    assert result["store"] == {"device": disk.part(2), "disk": disk.path, "mounted_at": None}
    assert result["system_disk"] == {"device": disk.path, "root": "PARTUUID=" + root,
                                     "identity": {"device": disk.path, "ptuuid": blkid(disk.path, "PTUUID")}}
    assert result["ignored_stores"] == []


def test_two_devices_with_the_store_s_label_on_the_system_disk_stop_migration_state_naming_both(make_disk, label):
    disk = make_disk(96 * MiB, GPT + "size=24MiB, name=second\n")
    for number in (2, 3):
        run("mkfs.ext4", "-q", "-F", "-L", label, disk.part(number))
    state = adhoc.module("migration_state", {"store_label": label,
                                             "root_partuuid": blkid(disk.part(1), "PART_ENTRY_UUID")})
    assert state["rc"] != 0 and state["msg"] == (
        "LABEL=%s (the migration store) names 2 devices, %s and %s, where it must name one; remove or relabel the "
        "other one." % (label, disk.part(2), disk.part(3)))


def test_without_disk_of_store_mount_refuses_two_devices_with_the_label_naming_both(twins, label, tmp_path):
    store, other = twins
    both = "names 2 devices, %s and %s, where it must name one; remove or relabel the other one." % tuple(
        sorted([store, other]))
    target = str(tmp_path / "store")
    for args in ({"label": label}, {"device": "LABEL=" + label}):
        mounted_ = adhoc.module("store_mount", dict(args, path=target))
        assert mounted_["rc"] != 0 and mounted_["msg"] == "LABEL=%s %s" % (label, both)
        assert not os.path.ismount(target)


def mounted_source(path):
    return run("findmnt", "--noheadings", "--output", "SOURCE", "--mountpoint", path, check=False).stdout.strip()


def test_a_stick_with_the_store_s_label_is_never_taken_for_the_store(twins, label, tmp_path):
    """A "system disk" whose partition 1 is the root and 2 the store, and a "stick" whose partition carries the
    store's label: migration_state and store_mount take the system disk's store, and never the stick."""
    store, stick = twins
    system_disk, stick_disk = store[:-2], stick[:-2]
    root = "PARTUUID=" + blkid(system_disk + "p1", "PART_ENTRY_UUID")
    with open(stick_disk, "rb") as handle:
        stick_before = hashlib.sha256(handle.read()).hexdigest()

    state = adhoc.module("migration_state", {"store_label": label, "root_partuuid": root[len("PARTUUID="):]})
    assert state["rc"] == 0, state.get("msg")
    assert state["store"] == {"device": store, "disk": system_disk, "mounted_at": None}
    assert state["ignored_stores"] == [stick]

    target = str(tmp_path / "store")
    with mounted(system_disk + "p1") as old_root:
        for disk_of in (root, old_root):  # a spec, or a mount point of a partition of the system disk
            result = adhoc.module("store_mount", {"label": label, "disk_of": disk_of, "path": target})
            assert result["rc"] == 0 and result["device"] == store and result["ignored"] == [stick], result.get("msg")
            assert mounted_source(target) == store
            assert adhoc.module("store_mount", {"path": target, "state": "unmounted"})["rc"] == 0

    # With no store on the system disk, the stick is still not taken: nothing is mounted, nothing read from it.
    run("e2label", store, "other")
    state = adhoc.module("migration_state", {"store_label": label, "root_partuuid": root[len("PARTUUID="):]})
    assert state["rc"] == 0 and state["store"]["device"] is None and state["ignored_stores"] == [stick]
    refused = adhoc.module("store_mount", {"label": label, "disk_of": root, "path": target})
    assert refused["rc"] != 0 and refused["msg"] == (
        "no device on %s (the disk holding %s) has LABEL=%s, only %s elsewhere, which is not taken; put it back or "
        "give the device." % (system_disk, root, label, stick))
    assert not os.path.ismount(target)
    with open(stick_disk, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == stick_before


def test_partition_space_refuses_a_disk_that_is_not_the_recorded_one_and_changes_no_byte(make_disk):
    disk = make_disk(256 * MiB, DOS)
    run("mkfs.ext4", "-q", "-F", disk.part(1))
    root = blkid(disk.part(1), "PART_ENTRY_UUID")
    recorded = _devices.Scan(ProcessRunner(), []).disk_identity(disk.path)
    assert recorded == {"device": disk.path, "ptuuid": blkid(disk.path, "PTUUID")}
    before = disk.digest()
    wrong = dict(recorded, ptuuid="deadbeef")
    for args, check in ((dict(size="64MiB", shrink="none"), False), (dict(size="64MiB", shrink="none"), True),
                        (dict(state="absent"), False)):
        result = adhoc.module("partition_space", dict(args, disk=disk.path, disk_identity=wrong), check=check)
        assert result["rc"] != 0 and result["changed"] is False, result
        assert result["msg"] == (
            "%s is not the disk recorded when the migration was planned (it has partition table UUID %s where "
            "deadbeef was recorded), so %s the store is refused; put the recorded disk back, or run preflight again "
            "on the old system to record this one." % (
                disk.path, recorded["ptuuid"], "removing" if args.get("state") == "absent" else "making"))
        assert disk.digest() == before

    # The recorded disk is changed, and keeps its identity and its root's PARTUUID through the table write, though
    # its MBR has no boot code (which libparted replaces, signature and all): GRUB's check and capture come after.
    made = adhoc.module("partition_space", dict(disk=disk.path, disk_identity=recorded, size="64MiB", shrink="none"))
    assert made["rc"] == 0 and made["changed"] is True, made.get("msg")
    assert disk.digest() != before and len(disk.table()["partitions"]) == 2
    assert _devices.Scan(ProcessRunner(), []).disk_identity(disk.path) == recorded
    assert blkid(disk.part(1), "PART_ENTRY_UUID") == root


def test_a_recorded_identity_finds_the_store_and_notices_a_new_filesystem(twins):
    store, other = twins
    runner = ProcessRunner()
    recorded = _devices.identity(runner, store)
    assert recorded["partuuid"] == blkid(store, "PART_ENTRY_UUID") and recorded["uuid"] == blkid(store, "UUID")
    assert recorded["disk"]["device"] == store[:-2] and recorded["disk"]["ptuuid"] == blkid(store[:-2], "PTUUID")
    assert _devices.find_recorded(runner, recorded, "the store") == store
    assert _devices.is_the_recorded(runner, store, recorded)
    assert not _devices.is_the_recorded(runner, other, recorded)
    run("mkfs.ext4", "-q", "-F", "-L", recorded["label"], store)
    with pytest.raises(MigrationError) as error:
        _devices.find_recorded(runner, recorded, "the store")
    assert "has filesystem UUID %s where %s was recorded" % (blkid(store, "UUID"), recorded["uuid"]) in str(error.value)
    assert not _devices.is_the_recorded(runner, store, recorded)


def _first_boot(tmp_path, config):
    """Install the hook into a bare root with ``config``; run it there, finding the store itself."""
    root = str(tmp_path / "root")
    os.makedirs(root, exist_ok=True)
    _firstboot.install(root, config)
    return subprocess.run([sys.executable, "-I", os.path.join(root, _firstboot.PROGRAM), "--root", root,
                           "--no-restore"], capture_output=True, text=True, check=False)


def test_the_first_boot_program_finds_the_store_by_identity_though_another_device_has_its_label(twins, tmp_path):
    store, other = twins
    recorded = _devices.identity(ProcessRunner(), store)
    proc = _first_boot(tmp_path, {"store_label": recorded["label"], "store_uuid": recorded["uuid"],
                                  "store_partuuid": recorded["partuuid"], "store_identity": recorded})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not _devices.holders(store) and not os.path.exists(os.path.join(str(tmp_path), "root", _firstboot.WANTS))
    with mounted(store) as directory:
        assert Store(directory).journal.get("firstboot")["confirmed"]
    with mounted(other) as directory:
        assert not os.path.exists(os.path.join(directory, "inplace"))


def _digest(device):
    with open(device, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_the_first_boot_program_by_label_alone_looks_on_the_root_s_disk_only(twins, label, tmp_path):
    store, other = twins
    before = _digest(other)
    # A root on no partition of a disk: there is no system disk, so neither device is taken.
    proc = _first_boot(tmp_path, {"store_label": label})
    assert proc.returncode == 1
    assert "root is on no partition of a disk, so there is no system disk to look for LABEL=%s on" % label in proc.stdout
    assert os.path.lexists(os.path.join(str(tmp_path), "root", _firstboot.WANTS))
    with mounted(store) as directory:
        assert not os.path.exists(os.path.join(directory, "inplace"))

    # The new root on the store's disk: the store there is found, the other device with the label left alone.
    with mounted(store[:-1] + "1", readonly=False) as root:
        _firstboot.install(root, {"store_label": label})
        proc = subprocess.run([sys.executable, "-I", os.path.join(root, _firstboot.PROGRAM), "--root", root,
                               "--no-restore"], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not os.path.lexists(os.path.join(root, _firstboot.WANTS))
    with mounted(store) as directory:
        assert Store(directory).journal.get("firstboot")["confirmed"]
    assert _digest(other) == before


def test_store_mount_in_check_mode_and_a_mount_point_something_else_holds(make_disk, tmp_path):
    disk = make_disk(64 * MiB, DOS)
    run("mkfs.ext4", "-q", "-F", disk.part(1))
    target = str(tmp_path / "store")
    planned = adhoc.module("store_mount", {"device": disk.part(1), "path": target}, check=True)
    assert planned["changed"] is True and planned["path"] == target and not os.path.exists(target)
    refused = adhoc.module("store_mount", {"device": disk.part(1), "path": "/proc"})
    adhoc.assert_one_sentence_naming_the_fix(refused, [])
    assert refused["msg"] == "something else (proc) is mounted at /proc; unmount it, or give another path to mount " \
        "the store on."
    assert not os.path.ismount(target)
