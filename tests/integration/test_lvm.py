"""The store as a logical volume, with lvm2's own tools on a volume group on a loop disk.

Where the kernel has no device-mapper (some containers), logical volumes cannot be activated: the
metadata steps then run with ``--driverloaded n`` (lvm2's switch for exactly that), and the test
that moves real files through a shrink is skipped with that reason.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.disk import fs as _fs
from ansible_collections.inplace.migration.plugins.module_utils.disk import lvm as _lvm
from ansible_collections.inplace.migration.plugins.module_utils.disk.model import Filesystem
from tests.support.loopdisk import MiB, mounted, run, tree_digests, write_tree

LABEL = "INPLACE-STORE"
EXTENT = 4 * MiB

pytestmark = pytest.mark.skipif(not shutil.which("lvcreate"), reason="needs lvm2")


def device_mapper_works():
    return shutil.which("dmsetup") is not None and subprocess.run(
        ["dmsetup", "version"], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def volume_group(disk, options):
    """A volume group of one PV on ``disk``, seen by LVM alone (``--devices``): removed with its LVs
    and the PV wiped afterwards, pass or fail."""
    name = "inplacetest%06d" % random.randrange(10 ** 6)
    scope = options + ["--devices", disk.path]
    run("pvcreate", *scope, disk.path)
    try:
        run("vgcreate", *scope, "--physicalextentsize", "4m", name, disk.path)
        try:
            yield name, scope
        finally:
            run("vgchange", *scope, "--activate", "n", name, check=False)
            run("vgremove", *scope, "--force", name, check=False)
    finally:
        run("pvremove", *scope, "--force", "--yes", disk.path, check=False)


def test_lvm_s_reports_and_extents_through_store_and_back(make_disk):
    """Real lvm2 metadata: the plan's extents are what LVM then holds, and cleanup gives them all back."""
    disk = make_disk(400 * MiB)
    offline = ["--driverloaded", "n"]  # metadata only, whatever the kernel has
    with volume_group(disk, offline) as (name, scope):
        run("lvcreate", *scope, "--activate", "n", "--zero", "n", "--extents", "80", "--name", "root", name)
        lvm = _lvm.Lvm(ProcessRunner(), name, scope)
        before = lvm.read()
        root = before.lv("root")
        assert (before.extent, root.size, root.path) == (EXTENT, 80 * EXTENT, "/dev/%s/root" % name)
        assert before.pvs == (disk.path,)
        free = before.free_extents
        assert free + 80 == before.extents
        fs = Filesystem(type="ext4", size=root.size, used=100 * MiB, min_size=100 * MiB)
        plan = _lvm.plan_store(before, "root", (free + 20) * EXTENT, fs, min_free=0)
        assert plan.shrinks and plan.root_extents == 60 and plan.store_extents == free + 20

        lvm.reduce("root", plan.root_extents)
        lvm.create(plan.name, plan.store_extents, wipe=False,
                   tags=(_lvm.ROOT_LV_TAG + "root", _lvm.ROOT_EXTENTS_TAG + "80"))
        made = lvm.read()
        assert made.lv("root").size == 60 * EXTENT
        # What cleanup grows the root back to, carried by the store itself.
        assert _lvm.root_to_restore(made.lv(_lvm.STORE_LV)) == {"lv": "root", "extents": 80}
        assert _lvm.root_to_restore(made.lv("root")) is None
        assert made.lv(_lvm.STORE_LV).size == (free + 20) * EXTENT and made.free_extents == 0
        assert made.lv(_lvm.STORE_LV).uuid not in (root.uuid, made.uuid)
        assert _lvm.plan_store(made, "root", MiB, fs).exists

        lvm.remove(_lvm.STORE_LV)
        lvm.extend("root", 80)
        after = lvm.read()
        assert after.lv(_lvm.STORE_LV) is None
        assert (after.lv("root").size, after.lv("root").uuid, after.free_extents) == (80 * EXTENT, root.uuid, free)


@pytest.mark.skipif(not device_mapper_works(), reason="the kernel has no device-mapper here (dmsetup version fails)")
def test_a_store_made_by_shrinking_the_root_volume_keeps_every_file_and_is_given_back(make_disk, tmp_path):
    disk = make_disk(600 * MiB)
    with volume_group(disk, _lvm.NO_UDEV) as (name, scope):
        run("lvcreate", *scope, "--yes", "--extents", "100", "--name", "root", name)
        runner = ProcessRunner()
        lvm = _lvm.Lvm(runner, name, scope)
        root = lvm.read().lv("root")
        run("mkfs.ext4", "-q", "-F", root.path)
        with mounted(root.path, readonly=False) as directory:
            digests = write_tree(directory + "/data", files=30, big=40 * MiB)
        fs = _fs.probe(runner, root.path)
        free = lvm.read().free_extents
        plan = _lvm.plan_store(lvm.read(), "root", (free + 10) * EXTENT, fs)
        assert plan.shrinks and plan.fs_size == 90 * EXTENT

        store = _lvm.make_store(lvm, plan, LABEL)
        assert run("blkid", "-p", "-s", "LABEL", "-o", "value", store.path).stdout.strip() == LABEL
        assert _fs.probe(runner, root.path).size == 90 * EXTENT
        with mounted(root.path) as directory:
            assert tree_digests(directory + "/data") == digests
        with mounted(store.path, readonly=False) as directory:
            write_tree(directory, files=3)

        grown = _lvm.remove_store(lvm, "root", 100)
        assert grown.size == 100 * EXTENT and lvm.read().lv(_lvm.STORE_LV) is None
        assert _fs.probe(runner, root.path).size == 100 * EXTENT
        with mounted(root.path) as directory:
            assert tree_digests(directory + "/data") == digests
