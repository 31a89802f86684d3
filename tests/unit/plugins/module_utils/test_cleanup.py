"""The cleanup's decisions that need no disk (when and how a filesystem is grown, what is left of removed files),
the store's modes, and the files roles used to write without fsync."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.units import MiB
from ansible_collections.inplace.migration.plugins.module_utils.profiles.standalone import OPTIONS, put_restore_options
from ansible_collections.inplace.migration.plugins.module_utils.state.cleanup import GROW_SLACK, growth, zero_and_remove
from ansible_collections.inplace.migration.plugins.module_utils.state.store import BOOT, IMAGES, MANIFEST, PROFILES, Store


@pytest.mark.parametrize("fs_size, partition, mountpoint, expected", [
    (64 * MiB, 96 * MiB, None, "offline"),
    (64 * MiB, 96 * MiB, "/", "online"),
    (96 * MiB, 96 * MiB, "/", None),
    # resize2fs leaving the partition's last few blocks unused is no reason to run it again and again.
    (96 * MiB - GROW_SLACK + 4096, 96 * MiB, None, None),
    (96 * MiB - GROW_SLACK, 96 * MiB, None, "offline"),
    (None, 96 * MiB, None, None),
], ids=["smaller, unmounted", "smaller, mounted", "fills it", "within the slack", "just beyond the slack",
        "size unknown"])
def test_a_filesystem_is_grown_only_when_smaller_than_its_partition_online_when_mounted(
        fs_size, partition, mountpoint, expected):
    assert growth(fs_size, partition, mountpoint) == expected


def test_removed_maintenance_files_leave_only_zeros_in_their_blocks(tmp_path):
    boot = tmp_path / "boot"
    files = boot / "inplace"
    files.mkdir(parents=True)
    secret = b"-----BEGIN OPENSSH PRIVATE KEY-----" + os.urandom(3 * MiB)
    (files / "overlay.img").write_bytes(secret)
    (files / "vmlinuz").write_bytes(b"kernel")
    # A second name for the same inode reads the blocks the removed file had.
    os.link(str(files / "overlay.img"), str(tmp_path / "same-blocks"))

    removed = zero_and_remove(str(files))

    assert removed == [str(files / "overlay.img"), str(files / "vmlinuz")]
    assert os.listdir(str(boot)) == []
    assert (tmp_path / "same-blocks").read_bytes() == bytes(len(secret))
    assert zero_and_remove(str(files)) == []


def test_every_directory_of_the_store_is_root_only_even_one_made_before(tmp_path):
    (tmp_path / "inplace").mkdir(mode=0o755)
    store = Store(str(tmp_path))
    for relative in (PROFILES, IMAGES, BOOT, os.path.dirname(MANIFEST)):
        store.ensure_dir(relative)
    for base, dirs, unused_files in os.walk(str(tmp_path / "inplace")):
        assert stat.S_IMODE(os.stat(base).st_mode) == 0o700, base
    assert sorted(os.listdir(str(tmp_path / "inplace"))) == ["boot", "images", "profiles"]


def test_the_restore_options_are_written_whole_and_synced_before_they_count(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda descriptor: synced.append(os.readlink("/proc/self/fd/%d" % descriptor))
                        or real_fsync(descriptor))
    store = Store(str(tmp_path))
    options = {"conflict": "rename", "settings": ["network"]}

    assert put_restore_options(store, options) is True
    path = tmp_path / OPTIONS
    assert json.loads(path.read_text()) == options
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(path.parent)).st_mode) == 0o700
    # The file's data before its rename, then the directory holding the rename.
    assert str(path.parent) in synced and any(name.startswith(str(path.parent / ".")) for name in synced)
    assert [p.name for p in path.parent.iterdir()] == ["restore-options.json"]
    synced.clear()
    assert put_restore_options(store, options) is False
    assert synced == []


def test_a_store_volume_goes_and_the_root_grows_back_to_its_tagged_size_also_after_a_cut(tmp_path, monkeypatch):
    """A root on LVM: the tags on the store name the root and its extents before the store; the cleanup record keeps
    them, so a run cut off after lvremove still grows the root back, and only to that size (free stays free)."""
    from ansible_collections.inplace.migration.plugins.module_utils.common.units import GiB
    from ansible_collections.inplace.migration.plugins.module_utils.disk import fs as _fs
    from ansible_collections.inplace.migration.plugins.module_utils.disk import lvm as _lvm
    from ansible_collections.inplace.migration.plugins.module_utils.state.cleanup import StoreCleanup
    from tests.support.lvm_reports import EXTENT, Recorder, group
    monkeypatch.setattr(_fs.Ext, "_resize2fs_minimum", lambda self, runner, device: 0)
    store = _lvm.LogicalVolume(_lvm.STORE_LV, "s-uuid", "/dev/vg0/inplace-store", GiB,
                               tags=(_lvm.ROOT_LV_TAG + "root", _lvm.ROOT_EXTENTS_TAG + "2048"))
    runner = Recorder(group(10, 7 * GiB, others=(store,)), 7 * GiB)
    cleanup = StoreCleanup(runner, root=str(tmp_path))
    grow = cleanup.plan_volume_removal("s-uuid")
    assert grow == {"vg": "vg0", "lv": "root", "extents": 2048}
    assert cleanup.result["actions"] == ["remove the logical volume vg0/inplace-store",
                                         "grow the logical volume vg0/root back to 2048 extents, and its filesystem"]
    record = {"store": {"lv_uuid": "s-uuid"}, "grow_lv": grow}

    # Cut off after lvremove, before the root took the extents back.
    runner.vg = group(10 + 256, 7 * GiB)
    cleanup.remove_volume(record)
    assert [c.split()[0] for c in runner.commands] == ["lvextend", "e2fsck", "resize2fs"]
    assert runner.vg.lv("root").size == runner.fs_bytes == 2048 * EXTENT and runner.vg.free_extents == 10

    runner.commands = []
    cleanup.remove_volume(record)
    assert [c.split()[0] for c in runner.commands] == ["e2fsck", "resize2fs"], "a second run only checks"
