"""A USB stick attached before the system disk is never touched: not read as the store, not mounted, not written.

Two loop "disks", the stick attached first so it has the lower number (as a stick that enumerates
first is sda): its first partition carries the store's label, its second an ext4 filesystem with
files. The system disk gets its store from partition_space, migration_state and store_mount find
that one, and store_cleanup, with no identity of the store recorded (so it looks by the label),
removes it and grows the root back, the root mounted as the new system's is. Every byte of the
stick's image file is the same afterwards. Loop devices take the ``p`` in their partitions' names
(loop3p2) that NVMe disks do (nvme0n1p2).
"""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.support import adhoc, images
from tests.support.loopdisk import MiB, mounted, run

# Per test run: other test runs on this host may attach stores of their own meanwhile.
LABEL = "INPLACE-%06d" % (os.getpid() % 1000000)
STICK_TABLE = "label: dos\nstart=2048, size=40960, type=83\nstart=43008, type=83\n"
# The root, then a data partition that gives the store its room and takes it back offline (online growth
# needs a resize this host's kernel denies on loop devices).
SYSTEM_TABLE = ("label: gpt\nstart=2048, size=131072, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=system\n"
                "start=133120, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=data\n")


def loop_number(device):
    return int(re.search(r"(\d+)$", device).group(1))


def blkid(device, tag):
    return run("blkid", "-p", "-s", tag, "-o", "value", device, check=False).stdout.strip()


@pytest.fixture
def stick_then_system(make_disk, tmp_path):
    stick = make_disk(64 * MiB, STICK_TABLE)
    run("mkfs.ext4", "-q", "-F", "-L", LABEL, stick.part(1))
    files = tmp_path / "stick-files"
    (files / "photos").mkdir(parents=True)
    (files / "photos" / "holiday.jpg").write_bytes(bytes(range(256)) * 1024)
    run("mkfs.ext4", "-q", "-F", "-L", "MYSTICK", "-d", str(files), stick.part(2))
    system = make_disk(384 * MiB, SYSTEM_TABLE)
    run("mkfs.ext4", "-q", "-F", "-L", "root", system.part(1))
    run("mkfs.ext4", "-q", "-F", "-L", "data", system.part(2))
    with mounted(system.part(2), readonly=False) as data:
        run("dd", "if=/dev/urandom", "of=%s/data.bin" % data, "bs=1M", "count=24")
    assert loop_number(stick.path) < loop_number(system.path)
    return stick, system


def test_the_stick_attached_first_is_never_read_as_the_store_mounted_or_written(stick_then_system, tmp_path):
    stick, system = stick_then_system
    before = images.sha256(stick.image)
    root_partuuid = blkid(system.part(1), "PART_ENTRY_UUID")

    made = adhoc.module("partition_space", {"disk": system.path, "size": "64M", "shrink": system.part(2),
                                            "min_free": "16M", "label": LABEL})
    assert made["rc"] == 0, made.get("msg")
    assert made["store"]["device"] == system.part(3)
    assert blkid(system.part(3), "LABEL") == LABEL

    state = adhoc.module("migration_state", {"store_label": LABEL, "root_partuuid": root_partuuid})
    assert state["rc"] == 0, state.get("msg")
    assert state["system_disk"]["device"] == system.path
    assert state["store"]["device"] == system.part(3)
    assert state["ignored_stores"] == [stick.part(1)]

    store = tmp_path / "store"
    mount = adhoc.module("store_mount", {"label": LABEL, "path": str(store), "disk_of": "PARTUUID=" + root_partuuid})
    assert mount["rc"] == 0, mount.get("msg")
    assert mount["device"] == system.part(3) and mount["ignored"] == [stick.part(1)]
    assert adhoc.module("store_mount", {"path": str(store), "state": "unmounted"})["rc"] == 0

    # The new system's root, mounted as it is when cleanup runs; no identity of the store recorded.
    with mounted(system.part(1), readonly=False) as root:
        done = adhoc.module("store_cleanup", {"root": root, "label": LABEL})
        assert done["rc"] == 0, done.get("msg")
        assert done["state"] == "complete"
        assert done["store"] == system.part(3)
        assert done["ignored_stores"] == [stick.part(1)]
        assert all(stick.path not in line for line in done["done"]), done["done"]

    assert [p["node"] for p in system.table()["partitions"]] == [system.part(1), system.part(2)]
    assert images.sha256(stick.image) == before
    assert blkid(stick.part(1), "LABEL") == LABEL and blkid(stick.part(2), "LABEL") == "MYSTICK"


def test_with_the_store_gone_a_stick_carrying_its_label_is_not_taken_for_it(stick_then_system):
    stick, system = stick_then_system
    before = images.sha256(stick.image)
    system_before = images.sha256(system.image)

    with mounted(system.part(1), readonly=False) as root:
        done = adhoc.module("store_cleanup", {"root": root, "label": LABEL})
        assert done["rc"] == 0, done.get("msg")
        assert done["store"] is None
        assert done["ignored_stores"] == [stick.part(1)]

    assert images.sha256(stick.image) == before
    assert [p["node"] for p in system.table()["partitions"]] == [system.part(1), system.part(2)]
    assert system_before != images.sha256(system.image)  # the root got its records: the run did write, elsewhere


def test_image_deploy_with_the_stick_first_writes_the_system_disk_and_records_its_store(stick_then_system, tmp_path):
    stick, system = stick_then_system
    before = images.sha256(stick.image)
    # The system disk's second partition becomes the store, mounted as the deploy role mounts it.
    run("mkfs.ext4", "-q", "-F", "-L", LABEL, system.part(2))
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    images.write_root(old, "labpc09", users=[("ansible", 1001, 1001, True)], files={
        "etc/fstab": "UUID=11111111-2222-3333-4444-555555555555 / ext4 errors=remount-ro 0 1\n"})
    run("mkfs.ext4", "-q", "-F", "-d", old, "-L", "oldsystem", system.part(1))
    images.write_root(new, "debian", users=[("debian", 1000, 1000, False)], files={
        "etc/fstab": "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n", "usr/bin/python3": ""})
    src = images.tar_archive(new, str(tmp_path / "new.tar.zst"), "zst")
    dest = "PARTUUID=" + blkid(system.part(1), "PART_ENTRY_UUID")

    with mounted(system.part(2), readonly=False) as store:
        done = adhoc.module("image_deploy", {"store": store, "src": src, "checksum": "sha256:" + images.sha256(src),
                                             "dest": dest, "store_label": LABEL, "bootloader": "none",
                                             "carry_accounts": ["ansible"], "require_capture": False})
        assert done["rc"] == 0, done.get("msg")
        assert done["dest"]["device"] == system.part(1) and done["state"] == "complete"
    with mounted(system.part(1)) as root:
        with open(os.path.join(root, "etc", "inplace-migration", "firstboot.json")) as handle:
            identity = json.load(handle)["store_identity"]
    assert identity["partuuid"] == blkid(system.part(2), "PART_ENTRY_UUID")
    assert identity["disk"]["ptuuid"] == blkid(system.path, "PTUUID")
    assert images.sha256(stick.image) == before
