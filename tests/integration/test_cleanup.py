"""store_cleanup through Ansible on loop disks: nothing of the store can be read back, and a cut anywhere resumes.

The disk holds a root partition whose filesystem is smaller than the partition (as an image
written over it leaves it) and behind it the store, holding what a capture puts there: an
incompressible block from a profile and a password hash. The new root is a directory holding
what image_deploy leaves in it: the first-boot hook's configuration with the store's identity,
and the maintenance files in /boot/inplace.
"""

from __future__ import annotations

import json
import os
import secrets

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.state.cleanup import StoreCleanup, WIPED
from tests.support import adhoc
from tests.support.loopdisk import MiB, run

LABEL = "INPLACE-STORE"
SECTOR = 512
BLOCK = 4096
# Root: 1 MiB to 97 MiB, its filesystem 64 MiB; the store: 97 MiB to the end of a 256 MiB disk.
TABLE = "label: dos\nstart=2048, size=196608, type=83\nstart=198656, type=83\n"
ROOT_FS = 64 * MiB


def cleanup(root, check=False, diff=False, **args):
    return adhoc.module("store_cleanup", dict(args, root=str(root)), check=check, diff=diff)


def fs_bytes(device):
    header = dict(line.split(":", 1) for line in run("dumpe2fs", "-h", device).stdout.splitlines() if ":" in line)
    return int(header["Block count"]) * int(header["Block size"])


class Migrated:
    """A disk as the new system finds it before cleanup, with its secrets and the new root's directory."""

    def __init__(self, make_disk, tmp_path):
        self.disk = make_disk(256 * MiB, TABLE)
        self.root_part, self.store_part = self.disk.part(1), self.disk.part(2)
        run("mkfs.ext4", "-q", "-F", self.root_part, "%dK" % (ROOT_FS // 1024))
        self.block = secrets.token_bytes(MiB)
        self.hash = "$6$%s$%s" % (secrets.token_hex(8), secrets.token_urlsafe(64))
        content = tmp_path / "store-content"
        profile = content / "inplace" / "profiles" / "alice"
        profile.mkdir(parents=True)
        (profile / "random.bin").write_bytes(self.block)
        (content / "inplace" / "profiles" / "manifest.json").write_text(json.dumps(
            {"users": [{"name": "alice", "uid": 1000, "password": self.hash}]}))
        run("mkfs.ext4", "-q", "-F", "-L", LABEL, "-d", str(content), self.store_part)
        os.chmod(str(content), 0o700)
        self.table = self.disk.table()
        store = self.table["partitions"][1]
        self.store_range = (store["start"] * SECTOR, (store["start"] + store["size"]) * SECTOR)
        self.root = tmp_path / "newroot"
        config = self.root / "etc" / "inplace-migration" / "firstboot.json"
        config.parent.mkdir(parents=True)
        self.identity = _devices.identity(ProcessRunner(), self.store_part)
        config.write_text(json.dumps({"store_label": LABEL, "store_identity": self.identity}))
        maintenance = self.root / "boot" / "inplace"
        maintenance.mkdir(parents=True)
        (maintenance / "overlay.img").write_bytes(b"ssh_host_ed25519_key " + self.hash.encode() + bytes(8192))
        (maintenance / "vmlinuz").write_bytes(b"kernel")

    def found_in_store_range(self):
        """Which secrets the bytes of the store's recorded sector range still hold (read from the image file)."""
        pieces = {self.block[i:i + BLOCK] for i in range(0, MiB, BLOCK)}
        needle = self.hash.encode()
        found = set()
        start, end = self.store_range
        tail = b""
        with open(self.disk.image, "rb") as handle:
            handle.seek(start)
            position = start
            while position < end:
                chunk = handle.read(min(MiB, end - position))
                position += len(chunk)
                if any(chunk[i:i + BLOCK] in pieces for i in range(0, len(chunk), BLOCK)):
                    found.add("random block")
                if needle in tail + chunk:
                    found.add("password hash")
                tail = chunk[-len(needle):]
        return found

    def assert_cleaned(self):
        assert self.found_in_store_range() == set()
        table = self.disk.table()
        assert len(table["partitions"]) == 1
        root = table["partitions"][0]
        # The root partition took the store's space, up to the disk's last whole MiB.
        assert root["start"] == 2048
        assert (root["start"] + root["size"]) * SECTOR == 256 * MiB
        self.disk.refresh()
        assert fs_bytes(self.root_part) == root["size"] * SECTOR
        assert run("e2fsck", "-f", "-n", self.root_part, check=False).returncode == 0
        completion = json.loads((self.root / "etc" / "inplace-migration" / "complete.json").read_text())
        assert completion["store"] == "delete" and completion["completed"]
        record = json.loads((self.root / "var" / "lib" / "inplace-migration" / "cleanup.json").read_text())
        assert record["state"] == "complete"
        assert record["store"]["partuuid"] == self.identity["partuuid"]
        assert [p for p in (self.root / "boot").rglob("*") if "inplace" in p.name] == []


@pytest.fixture
def migrated(make_disk, tmp_path):
    return Migrated(make_disk, tmp_path)


def test_nothing_of_the_store_can_be_read_back_and_the_root_takes_its_space(migrated):
    assert migrated.found_in_store_range() == {"random block", "password hash"}
    assert fs_bytes(migrated.root_part) == ROOT_FS

    planned = cleanup(migrated.root, check=True, diff=True)
    assert planned["rc"] == 0, planned["stdout"]
    assert planned["changed"] is True
    assert planned["done"][:3] == ["record the cleanup of %s in /var/lib/inplace-migration/cleanup.json" % migrated.store_part,
                                   "zero %s" % migrated.store_part,
                                   "delete primary partition %s (159.0 MiB)" % migrated.store_part]
    assert migrated.found_in_store_range() == {"random block", "password hash"}
    assert not (migrated.root / "var" / "lib" / "inplace-migration" / "cleanup.json").exists()

    done = cleanup(migrated.root)
    assert done["rc"] == 0, done["stdout"]
    assert done["changed"] is True and done["state"] == "complete"
    migrated.assert_cleaned()

    again = cleanup(migrated.root)
    assert again["rc"] == 0 and again["changed"] is False


def _cut_after_the_record(migrated, cleanup_, scan):
    cleanup_.begin(scan)


def _cut_in_the_wipe(migrated, cleanup_, scan):
    cleanup_.begin(scan)
    # The first MiB zeroed (the superblock with the filesystem's UUID and label), the rest not yet.
    with open(migrated.store_part, "r+b") as handle:
        handle.write(bytes(MiB))
        os.fsync(handle.fileno())


def _cut_after_the_wipe(migrated, cleanup_, scan):
    cleanup_.wipe(scan, cleanup_.begin(scan))


def _cut_after_the_delete(migrated, cleanup_, scan):
    record = cleanup_.wipe(scan, cleanup_.begin(scan))
    assert record["state"] == WIPED
    run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", "--delete", migrated.disk.path, "2")
    migrated.disk.refresh()


@pytest.mark.parametrize("cut", [_cut_after_the_record, _cut_in_the_wipe, _cut_after_the_wipe, _cut_after_the_delete],
                         ids=["after the record", "in the wipe", "after the wipe", "after the delete, before the grow"])
def test_a_cleanup_cut_off_anywhere_is_finished_by_the_next_run(migrated, cut):
    runner = ProcessRunner()
    cut(migrated, StoreCleanup(runner, str(migrated.root)), _devices.Scan(runner))

    done = cleanup(migrated.root)
    assert done["rc"] == 0, done["stdout"]
    assert done["state"] == "complete"
    migrated.assert_cleaned()


def test_a_stick_carrying_the_store_s_label_is_not_touched(migrated, make_disk):
    stick = make_disk(64 * MiB, "label: dos\nstart=2048, type=83\n")
    run("mkfs.ext4", "-q", "-F", "-L", LABEL, stick.part(1))
    before = stick.digest()

    done = cleanup(migrated.root)
    assert done["rc"] == 0, done["stdout"]
    migrated.assert_cleaned()
    assert stick.digest() == before


def test_without_a_recorded_identity_and_a_root_on_no_disk_nothing_is_taken_by_its_label(migrated, make_disk):
    # The label is looked for on the disk holding the root only (tests/integration/test_stick.py); this root is
    # a directory on no partition, so there is no such disk, and neither device with the label is taken.
    (migrated.root / "etc" / "inplace-migration" / "firstboot.json").unlink()
    stick = make_disk(64 * MiB, "label: dos\nstart=2048, type=83\n")
    run("mkfs.ext4", "-q", "-F", "-L", LABEL, stick.part(1))
    before = migrated.disk.digest(), stick.digest()

    done = cleanup(migrated.root)
    assert done["rc"] != 0
    assert "is on no partition of a disk, so there is no system disk to look for the label %s on" % LABEL in done["msg"]
    assert (migrated.disk.digest(), stick.digest()) == before
    assert not (migrated.root / "var" / "lib" / "inplace-migration" / "cleanup.json").exists()


def test_a_device_that_is_not_the_recorded_store_is_refused(migrated):
    config = migrated.root / "etc" / "inplace-migration" / "firstboot.json"
    identity = dict(migrated.identity, uuid="0" * 8 + "-0000-4000-8000-" + "0" * 12)
    config.write_text(json.dumps({"store_identity": identity}))
    before = migrated.disk.digest()

    done = cleanup(migrated.root)
    assert done["rc"] != 0
    assert "is not the device recorded" in done["msg"]
    assert migrated.disk.digest() == before
