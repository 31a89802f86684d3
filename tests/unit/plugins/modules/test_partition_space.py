"""partition_space's main(): its refusals, and plans made from a real partition table in an image file.

Only a block device is taken as a disk, and none can be made without root; so that check alone is
stood in for, and disk/table.py reads the table sfdisk wrote into an image file in tmp_path. Nothing is
written to it: plans are made in check mode (the steps themselves run in tests/integration).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.disk import parted as _parted
from ansible_collections.inplace.migration.plugins.module_utils.disk import table as _table
from ansible_collections.inplace.migration.plugins.modules import partition_space

MiB = 1024 * 1024
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
pytestmark = pytest.mark.skipif(not (_parted.HAS_PARTED and shutil.which("sfdisk", path=SBIN)
                                     and shutil.which("mkfs.ext4", path=SBIN)),
                                reason="needs pyparted, sfdisk and mkfs.ext4")


def image(path, table, partitions, size_mib=200):
    """An image file of ``size_mib`` with a ``table`` (dos or gpt) holding ``partitions`` (start, size) in MiB."""
    with open(path, "wb") as handle:
        handle.truncate(size_mib * MiB)
    script = "label: %s\n" % table + "".join("start=%dMiB, size=%dMiB\n" % part for part in partitions)
    subprocess.run([shutil.which("sfdisk", path=SBIN), "--quiet", "--no-reread", "--no-tell-kernel", str(path)],
                   input=script.encode(), check=True, capture_output=True)
    return str(path)


def digest(path):
    """The image's tables (first and last MiB: msdos, GPT and its backup), size and mtime."""
    with open(path, "rb") as handle:
        head = handle.read(MiB)
        handle.seek(-MiB, os.SEEK_END)
        tail = handle.read()
    info = os.stat(path)
    return hashlib.sha256(head + tail).hexdigest(), info.st_size, info.st_mtime_ns


@pytest.fixture
def image_as_disk(monkeypatch):
    """Let an image file stand for a whole disk (the only device check that needs a real block device)."""
    def check(path):
        if not os.path.isfile(path):
            raise AssertionError("the test meant an image file, not %s" % path)
    monkeypatch.setattr(_table, "_check_whole_disk", check)


@pytest.fixture
def msdos(tmp_path):
    return image(tmp_path / "disk.img", "dos", [(1, 99)])


@pytest.mark.parametrize("args, check_mode, message", [
    ({"size": "32MiB", "plan_offline": True}, False, "plan_offline only plans; run it in check mode."),
    ({"size": "32MiB", "label": "INPLACE-STORE-2025"}, True,
     "label=INPLACE-STORE-2025 is longer than the 16 characters an ext filesystem label can hold; choose a shorter "
     "one."),
    ({}, False, "state is present but all of the following are missing: size"),
    ({"size": "lots"}, True, "size='lots' is not a size: write bytes or a number with a unit such as 512MiB or 12GiB."),
    ({"size": "32MiB", "min_free": "0"}, True, "min_free='0' must be larger than zero."),
    ({"size": "32MiB", "fstype": "vfat"}, True, "value of fstype must be one of: ext4, ext3, ext2, got: vfat"),
], ids=["plan_offline", "label", "size missing", "size", "min_free", "fstype"])
def test_bad_options_are_refused_before_the_disk_is_read(run_module, msdos, args, check_mode, message):
    before = digest(msdos)
    result = run_module(partition_space, dict(args, disk=msdos), check_mode=check_mode)
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == message
    assert digest(msdos) == before


def test_a_disk_that_is_not_there_is_named(run_module, tmp_path):
    result = run_module(partition_space, {"disk": str(tmp_path / "sdz"), "size": "32MiB"})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == "disk %s does not exist on this host; name the whole disk, such as /dev/sda." % (tmp_path / "sdz")


def test_a_file_is_not_a_disk(run_module, msdos):
    before = digest(msdos)
    result = run_module(partition_space, {"disk": msdos, "size": "32MiB"})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == "%s is not a block device; name a whole disk such as /dev/sda." % msdos
    assert digest(msdos) == before


def test_not_enough_free_space_says_what_there_is(run_module, image_as_disk, msdos):
    before = digest(msdos)
    result = run_module(partition_space, {"disk": msdos, "size": "150MiB", "shrink": "none"})
    assert result["failed"] and not result.get("changed")
    assert result["msg"].startswith("Not enough unallocated space on %s: the store needs " % msdos)
    assert result["msg"].endswith(" and the largest free region holds 100.0 MiB; let the module shrink a partition "
                                  "(shrink: auto or a partition).")
    assert digest(msdos) == before


def test_check_mode_plans_a_primary_store_in_free_space(run_module, image_as_disk, msdos):
    before = digest(msdos)
    result = run_module(partition_space, {"disk": msdos, "size": "32MiB"}, check_mode=True)
    assert not result.get("failed") and result["changed"] is True
    store = result["store"]
    assert store["device"] == msdos + "2" and store["number"] == 2 and store["kind"] == "primary"
    assert store["start"] == 100 * MiB and store["size"] >= 32 * MiB and store["size"] % MiB == 0
    assert store["fstype"] == "ext4" and store["label"] == "INPLACE-STORE" and store["usable_bytes"] is None
    assert result["actions"] == ["create primary partition %s2 of %.1f MiB at 100.0 MiB" % (msdos, store["size"] / MiB),
                                 "format %s2 as ext4 labelled INPLACE-STORE" % msdos]
    assert result["notes"] == ["unallocated space suffices; no partition is shrunk"]
    assert [p["number"] for p in result["layout_before"]["partitions"]] == [1]
    assert result["layout_before"]["table"] == "msdos" and result["layout_before"]["size"] == 200 * MiB
    assert [p["number"] for p in result["layout_after"]["partitions"]] == [1, 2]
    assert "diff" not in result
    assert digest(msdos) == before


def test_check_mode_with_diff_shows_the_layouts(run_module, image_as_disk, tmp_path):
    gpt = image(tmp_path / "gpt.img", "gpt", [(1, 63), (64, 64)], size_mib=256)
    result = run_module(partition_space, {"disk": gpt, "size": "64MiB", "label": "MIGRATION"},
                        check_mode=True, diff=True)
    assert not result.get("failed") and result["changed"] is True
    assert result["store"]["number"] == 3 and result["store"]["label"] == "MIGRATION"
    assert result["layout_after"]["partitions"][-1]["name"] == "MIGRATION"
    assert "MIGRATION" not in result["diff"]["before"] and "MIGRATION" in result["diff"]["after"]
    assert result["diff"]["before_header"] == gpt


def test_absent_without_a_store_changes_nothing(run_module, image_as_disk, msdos):
    before = digest(msdos)
    result = run_module(partition_space, {"disk": msdos, "state": "absent"})
    assert not result.get("failed") and result["changed"] is False
    assert result["actions"] == [] and result["store"] is None
    assert result["layout_after"] == result["layout_before"]
    assert digest(msdos) == before
