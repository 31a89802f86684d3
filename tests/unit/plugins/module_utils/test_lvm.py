"""The store as a logical volume: reading LVM's reports, planning the extents, the order of the steps."""

from __future__ import annotations

import json

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import GiB, MiB
from ansible_collections.inplace.migration.plugins.module_utils.disk import lvm as _lvm
from ansible_collections.inplace.migration.plugins.module_utils.disk.model import Filesystem
from tests.support.lvm_reports import EXTENT, LVS, PVS, VGS, Recorder, group


def ext4(size, used, min_size):
    return Filesystem(type="ext4", size=size, used=used, min_size=min_size)


def test_the_reports_are_read_as_lvm_prints_them():
    vg = _lvm.parse_layout(VGS, LVS, PVS)
    assert (vg.name, vg.uuid, vg.extent, vg.extents, vg.free_extents, vg.free) == (
        "vg0", "rE3DhD-sOZp-zMpc-LTSg-ST4r-DIDo-6ihePH", EXTENT, 49, 24, 96 * MiB)
    assert vg.lv("root") == _lvm.LogicalVolume("root", "D4QVHD-yeGf-dAgC-49Ts-HMmb-bONZ-EowUmN", "/dev/vg0/root",
                                               100 * MiB, "linear")
    assert vg.pvs == ("/dev/sda2",) and vg.lv("home") is None


def test_a_report_of_no_group_is_refused():
    empty = json.dumps({"report": [{"vg": []}]})
    with pytest.raises(MigrationError, match="reported 0 volume groups"):
        _lvm.parse_layout(empty, LVS, PVS)


def test_free_extents_that_suffice_are_used_and_the_root_is_untouched():
    plan = _lvm.plan_store(group(100, 8 * GiB), "root", 300 * MiB + 1, ext4(8 * GiB, 2 * GiB, 2 * GiB))
    assert (plan.store_extents, plan.root_extents, plan.fs_size, plan.shrinks) == (76, 2048, None, False)
    assert plan.descriptions == ["create the logical volume vg0/inplace-store of 304.0 MiB and format it"]


def test_too_few_free_extents_shrink_the_root_filesystem_then_its_volume_by_the_missing_extents():
    plan = _lvm.plan_store(group(10, 8 * GiB), "root", 1 * GiB, ext4(8 * GiB, 2 * GiB, 2 * GiB))
    assert plan.store_extents == 256
    assert plan.root_extents == 2048 - 246
    assert plan.fs_size == 1802 * EXTENT, "the filesystem ends where the volume will end, not below"
    assert plan.descriptions == [
        "shrink the filesystem on /dev/vg0/root to 7.0 GiB",
        "reduce the logical volume vg0/root from 8.0 GiB to 7.0 GiB",
        "create the logical volume vg0/inplace-store of 1.0 GiB and format it"]


def test_a_filesystem_already_smaller_than_the_reduced_volume_is_not_resized():
    plan = _lvm.plan_store(group(0, 8 * GiB), "root", 1 * GiB, ext4(4 * GiB, 1 * GiB, 1 * GiB))
    assert plan.shrinks and plan.fs_size is None


def test_the_root_keeps_its_minimum_and_headroom():
    fs = ext4(8 * GiB, 5 * GiB, 5 * GiB)  # headroom is a tenth of used: 512 MiB
    largest = _lvm.largest_store(group(0, 8 * GiB), "root", fs)
    assert largest == 8 * GiB - 5 * GiB - 512 * MiB
    assert _lvm.plan_store(group(0, 8 * GiB), "root", largest, fs).root_extents * EXTENT == 5 * GiB + 512 * MiB
    with pytest.raises(MigrationError) as refused:
        _lvm.plan_store(group(0, 8 * GiB), "root", largest + 1, fs)
    assert str(refused.value) == (
        "there is no room for the store in the volume group vg0: it needs 2.5 GiB, 0 B are free and /dev/vg0/root "
        "can give 2.5 GiB (its filesystem needs 5.0 GiB plus headroom), so 4.0 MiB is missing.")


def test_min_free_replaces_the_default_headroom():
    fs = ext4(8 * GiB, 5 * GiB, 5 * GiB)
    assert _lvm.largest_store(group(3, 8 * GiB), "root", fs, min_free=0) == 3 * GiB + 3 * EXTENT


@pytest.mark.parametrize("fs", [None, Filesystem(type="xfs", size=GiB, used=0, min_size=None),
                                Filesystem(type="btrfs", size=GiB, used=0, min_size=0)])
def test_a_root_filesystem_that_cannot_shrink_offline_gives_nothing(fs):
    assert _lvm.largest_store(group(5, 8 * GiB), "root", fs) == 5 * EXTENT
    with pytest.raises(MigrationError, match="cannot be shrunk offline here; free space in the volume group"):
        _lvm.plan_store(group(5, 8 * GiB), "root", GiB, fs)


def test_a_root_that_is_not_linear_is_not_shrunk():
    with pytest.raises(MigrationError, match="its root logical volume root is raid1, not linear"):
        _lvm.plan_store(group(0, 8 * GiB, segtype="raid1"), "root", GiB, ext4(8 * GiB, GiB, GiB))


def test_an_existing_store_is_kept_when_large_enough_and_refused_when_not():
    store = _lvm.LogicalVolume("inplace-store", "s-uuid", "/dev/vg0/inplace-store", GiB)
    plan = _lvm.plan_store(group(0, 8 * GiB, others=(store,)), "root", GiB, ext4(8 * GiB, GiB, GiB))
    assert plan.exists and plan.descriptions == [] and not plan.shrinks
    with pytest.raises(MigrationError, match=r"smaller than the 2.0 GiB the store needs; remove it \(lvremove"):
        _lvm.plan_store(group(0, 8 * GiB, others=(store,)), "root", 2 * GiB, ext4(8 * GiB, GiB, GiB))


def test_a_missing_root_volume_is_named():
    with pytest.raises(MigrationError, match="the volume group vg0 has no logical volume system"):
        _lvm.plan_store(group(0, GiB), "system", MiB, None)


def test_making_the_store_shrinks_the_filesystem_before_the_volume_and_growing_back_is_the_other_way(monkeypatch):
    from ansible_collections.inplace.migration.plugins.module_utils.disk import fs as _fs
    monkeypatch.setattr(_fs.Ext, "_resize2fs_minimum", lambda self, runner, device: 0)
    runner = Recorder(group(10, 8 * GiB), 8 * GiB)
    lvm = _lvm.Lvm(runner, "vg0")
    plan = _lvm.plan_store(lvm.read(), "root", GiB, ext4(8 * GiB, 2 * GiB, 2 * GiB))
    store = _lvm.make_store(lvm, plan, "INPLACE-STORE")
    steps = [c.split()[0] for c in runner.commands if c.split()[0] != "dumpe2fs"]
    assert steps == ["e2fsck", "resize2fs", "lvreduce", "lvcreate", "wipefs", "mkfs.ext4"]
    assert store.path == "/dev/vg0/inplace-store" and store.size == GiB
    assert runner.vg.lv("root").size == runner.fs_bytes == 1802 * EXTENT
    assert "mkfs.ext4 -F -q -m 0 -L INPLACE-STORE /dev/vg0/inplace-store" in runner.commands
    # The store says what the root was before it, for cleanup to grow it back to that and no further.
    assert _lvm.root_to_restore(runner.vg.lv(_lvm.STORE_LV)) == {"lv": "root", "extents": 2048}

    runner.commands = []
    root = _lvm.remove_store(lvm, "root", 2048)
    steps = [c.split()[0] for c in runner.commands]
    assert steps == ["wipefs", "lvremove", "lvextend", "e2fsck", "resize2fs"]
    assert root.size == runner.fs_bytes == 8 * GiB
    assert runner.vg.free_extents == 10, "the free extents the group had before stay free"

    runner.commands = []
    _lvm.remove_store(lvm, "root", 2048)
    assert [c.split()[0] for c in runner.commands] == ["e2fsck", "resize2fs"], "a second run only checks"


def test_growing_back_needs_the_extents_it_gave():
    runner = Recorder(group(0, 8 * GiB), 8 * GiB)
    with pytest.raises(MigrationError, match="has 0 free extents and the root /dev/vg0/root needs 1 to grow back"):
        _lvm.remove_store(_lvm.Lvm(runner, "vg0"), "root", 2049)


def test_the_root_s_volume_is_found_by_its_device_whichever_name_lvm_gives():
    class Lvs:
        def output(self, args, ok=(0,)):
            assert args[0] == "lvs" and "--reportformat" in args
            return json.dumps({"report": [{"lv": [
                {"vg_name": "vg0", "lv_name": "swap", "lv_path": "/dev/vg0/swap", "lv_dm_path": "/dev/mapper/vg0-swap"},
                {"vg_name": "vg0", "lv_name": "root", "lv_path": "/dev/vg0/root", "lv_dm_path": "/dev/mapper/vg0-root"},
            ]}]})
    nodes = {"/dev/mapper/vg0-root": "/dev/dm-1", "/dev/vg0/root": "/dev/dm-1", "/dev/mapper/vg0-swap": "/dev/dm-0"}
    assert _lvm.root_volume(Lvs(), "/dev/dm-1", resolve=lambda path: nodes.get(path, path)) == ("vg0", "root")
    with pytest.raises(MigrationError, match="LVM lists 0 logical volumes for the root's device /dev/dm-7, not one"):
        _lvm.root_volume(Lvs(), "/dev/dm-7", resolve=lambda path: nodes.get(path, path))


def test_preflight_s_facts_name_the_group_the_volume_the_free_extents_and_the_disks():
    vg = _lvm.parse_layout(VGS, LVS, PVS)
    assert _lvm.facts(vg, "root", {"/dev/sda2": "/dev/sda"}.get) == {
        "vg": "vg0", "vg_uuid": "rE3DhD-sOZp-zMpc-LTSg-ST4r-DIDo-6ihePH", "lv": "root",
        "lv_uuid": "D4QVHD-yeGf-dAgC-49Ts-HMmb-bONZ-EowUmN", "lv_bytes": 100 * MiB, "extent_bytes": EXTENT,
        "free_extents": 24, "free_bytes": 96 * MiB, "pvs": ["/dev/sda2"], "disks": ["/dev/sda"]}


def test_a_store_cut_off_before_its_format_is_formatted_and_a_foreign_one_refused():
    store = _lvm.LogicalVolume(_lvm.STORE_LV, "s-uuid", "/dev/vg0/inplace-store", GiB)
    runner = Recorder(group(0, 7 * GiB, others=(store,)), 7 * GiB)
    lvm = _lvm.Lvm(runner, "vg0")
    plan = _lvm.plan_store(lvm.read(), "root", GiB, None)
    assert plan.exists and plan.descriptions == []
    _lvm.make_store(lvm, plan, "INPLACE-STORE")
    assert runner.commands[-1] == "mkfs.ext4 -F -q -m 0 -L INPLACE-STORE /dev/vg0/inplace-store"

    runner.blkid["/dev/vg0/inplace-store"] = "TYPE=ext4\nLABEL=INPLACE-STORE\nUSAGE=filesystem\n"
    runner.commands = []
    _lvm.make_store(lvm, plan, "INPLACE-STORE")
    assert [c for c in runner.commands if not c.startswith("blkid")] == [], "a formatted store is kept as it is"

    runner.blkid["/dev/vg0/inplace-store"] = "TYPE=xfs\nLABEL=scratch\nUSAGE=filesystem\n"
    with pytest.raises(MigrationError, match="holds a xfs filesystem labelled scratch, not the store's INPLACE-STORE"):
        _lvm.make_store(lvm, plan, "INPLACE-STORE")


def test_store_volume_plans_in_check_mode_and_refuses_another_group_of_the_same_name(monkeypatch):
    monkeypatch.setattr(_lvm, "store_partition_bytes", lambda runner, fstype, usable: usable + 64 * MiB)
    monkeypatch.setattr(_lvm, "options_here", lambda: [])
    runner = Recorder(group(0, 8 * GiB), 8 * GiB, blkid={"/dev/vg0/root": "TYPE=ext4\nUSAGE=filesystem\n"})
    monkeypatch.setattr(_lvm._fs.Ext, "probe", lambda self, runner, device, blkid, mountpoint: ext4(
        8 * GiB, 2 * GiB, 2 * GiB))
    result = _lvm.store_volume(runner, "vg0", "root", GiB - 64 * MiB, "INPLACE-STORE", vg_uuid="VG-UUID",
                               check_mode=True)
    assert [c for c in runner.commands if not c.startswith("blkid")] == [], "check mode changes nothing, activates nothing"
    assert result["changed"] is True and result["store"]["size"] == GiB and result["store"]["device"] is None
    assert result["actions"] == ["shrink the filesystem on /dev/vg0/root to 7.0 GiB",
                                 "reduce the logical volume vg0/root from 8.0 GiB to 7.0 GiB",
                                 "create the logical volume vg0/inplace-store of 1.0 GiB and format it"]
    assert [v["name"] for v in result["layout_after"]["volumes"]] == ["root", "inplace-store"]
    assert result["layout_after"]["free_bytes"] == 0 and "inplace-store" in result["diff"]["after"]
    with pytest.raises(MigrationError, match="the volume group vg0 has the UUID vg-uuid where other-uuid was recorded"):
        _lvm.store_volume(runner, "vg0", "root", GiB, "INPLACE-STORE", vg_uuid="other-uuid", check_mode=True)
