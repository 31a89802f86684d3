"""An xfs root on loop disks: its store comes from room beside it, never from shrinking it.

xfs cannot shrink, so preflight's plan must take the store from unallocated space or from
another partition (an ext4 /home), and refuse in one sentence when there is neither. The
old system's GRUB boots the maintenance environment from the xfs root's /boot, and the
maintenance environment mounts that root read-only for the capture.
"""

from __future__ import annotations

import os

import pytest

from tests.support import adhoc
from tests.support import images
from tests.support.loopdisk import GiB, MiB, mounted, run, tree_digests, write_tree
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.boot import grub as _grub
from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.preflight import check as _check
from ansible_collections.inplace.migration.plugins.module_utils.preflight import inhibitors as _inhibitors

LABEL = "INPLACE-%06d" % (os.getpid() % 1000000)
# mkfs.xfs makes nothing smaller than 300 MB.
ROOT_MIB = 320


def xfs_root(device, tmp_path):
    """An xfs root holding a small tree; its file digests."""
    run("mkfs.xfs", "-q", "-f", device)
    with mounted(device, readonly=False) as root:
        return write_tree(root, files=20, big=4 * MiB, seed=3)


def plan(disk, need_bytes):
    root = {"device": disk.part(1), "fstype": "xfs"}
    return _check.plan_store(ProcessRunner(), disk.path, _inhibitors.store_need(0, 0, 0, need_bytes), LABEL, "auto",
                             root)


def test_an_xfs_root_s_store_is_made_by_shrinking_home_and_the_root_s_bytes_stay(make_disk, tmp_path):
    disk = make_disk(ROOT_MIB * MiB + GiB + 2 * MiB,
                     "label: gpt\nstart=2048, size=%dMiB\nsize=%dMiB\n" % (ROOT_MIB, 1000))
    root_files = xfs_root(disk.part(1), tmp_path)
    home_tree = str(tmp_path / "home")
    home_files = write_tree(home_tree, files=20, big=8 * MiB, seed=4)
    run("mkfs.ext4", "-q", "-F", "-d", home_tree, disk.part(2))
    root_bytes = images.sha256(disk.part(1))

    planned = plan(disk, 200 * MiB)
    shrinks = [a for a in planned["actions"] if a.startswith("shrink")]
    assert shrinks and all(disk.part(2) in action for action in shrinks), planned["actions"]

    made = adhoc.module("partition_space", {"disk": disk.path, "size": "200MiB", "label": LABEL, "shrink": "auto"})
    assert made["rc"] == 0 and made["changed"] is True, made.get("msg")
    assert made["actions"] == planned["actions"], "partition_space did not do what preflight planned"
    assert made["store"]["number"] == 3 and made["store"]["usable_bytes"] >= 200 * MiB
    assert images.sha256(disk.part(1)) == root_bytes, "the xfs root changed"
    with mounted(disk.part(1)) as root:
        assert tree_digests(root) == root_files
    with mounted(disk.part(2)) as home:
        assert {k: v for k, v in tree_digests(home).items() if not k.startswith("lost+found")} == home_files


def test_an_xfs_root_s_store_comes_from_unallocated_space_without_a_shrink(make_disk, tmp_path):
    disk = make_disk(ROOT_MIB * MiB + 300 * MiB, "label: dos\nstart=2048, size=%dMiB, type=83\n" % ROOT_MIB)
    xfs_root(disk.part(1), tmp_path)
    planned = plan(disk, 200 * MiB)
    assert planned["notes"] == ["unallocated space suffices; no partition is shrunk"]
    assert not [a for a in planned["actions"] if a.startswith("shrink")], planned["actions"]


@pytest.mark.parametrize("layout", [
    "label: dos\nstart=2048, type=83\n",
    # A /home that is too full to give what is missing.
    "label: gpt\nstart=2048, size=%dMiB\nsize=60MiB\n" % ROOT_MIB,
])
def test_an_xfs_root_with_no_room_beside_it_is_refused_in_one_sentence(make_disk, tmp_path, layout):
    disk = make_disk(ROOT_MIB * MiB + 64 * MiB, layout)
    xfs_root(disk.part(1), tmp_path)
    if "size=60MiB" in layout:
        run("mkfs.ext4", "-q", "-F", disk.part(2))
    before = disk.digest()
    with pytest.raises(MigrationError) as refused:
        plan(disk, 200 * MiB)
    # As preflight_facts reports it: the sentence is the inhibitor, the run fails.
    adhoc.assert_one_sentence_naming_the_fix({"msg": str(refused.value), "rc": 1, "failed": True}, [
        disk.part(1), "is xfs, which cannot be shrunk", "unallocated space on " + disk.path, "/home"])
    assert disk.digest() == before


def test_the_capture_reads_an_xfs_root_left_with_a_dirty_log_as_last_written(make_disk, tmp_path):
    disk = make_disk(ROOT_MIB * MiB + 2 * MiB, "label: dos\nstart=2048, type=83\n")
    run("mkfs.xfs", "-q", "-f", disk.part(1))
    with mounted(disk.part(1), readonly=False) as root:
        with open(os.path.join(root, "written-before-the-crash"), "w") as handle:
            handle.write("kept\n")
            handle.flush()
            os.fsync(handle.fileno())
        # A power cut: the file's metadata is in the log only, the filesystem is left dirty.
        run("xfs_io", "-x", "-c", "shutdown -f", root)
    assert "DIRTY" in run("xfs_logprint", "-t", disk.part(1)).stdout
    target = str(tmp_path / "old-root")
    mounted_ro = adhoc.module("store_mount", {"device": disk.part(1), "path": target, "readonly": True})
    try:
        assert mounted_ro["rc"] == 0, mounted_ro.get("msg")
        # The log was replayed (as the capture's ro mount does for ext4's journal): norecovery would miss the file.
        with open(os.path.join(target, "written-before-the-crash")) as handle:
            assert handle.read() == "kept\n"
    finally:
        unmounted = adhoc.module("store_mount", {"path": target, "state": "unmounted"})
        if unmounted["rc"] != 0:
            run("umount", target)
        assert unmounted["rc"] == 0, unmounted.get("msg")


GRUB_FSTEST = "usr/bin/grub-fstest"


@pytest.fixture(scope="module")
def grub_fstest(tmp_path_factory):
    """Debian 12's grub-fstest: the xfs driver of the GRUB (2.06) an old system boots with, run here."""
    directory = tmp_path_factory.mktemp("grub")
    run("tar", "-xf", images.debian_root(), "-C", str(directory), "./" + GRUB_FSTEST)
    return str(directory / GRUB_FSTEST)


def test_grub_reads_the_maintenance_files_from_an_xfs_root_and_can_clear_its_one_shot_in_place(
        make_disk, tmp_path, grub_fstest):
    disk = make_disk(ROOT_MIB * MiB + 2 * MiB, "label: dos\nstart=2048, type=83\n")
    device = disk.part(1)
    xfs_root(device, tmp_path)
    staged = {"vmlinuz": os.urandom(6 * MiB), "initrd.img": os.urandom(24 * MiB)}
    with mounted(device, readonly=False) as root:
        os.makedirs(os.path.join(root, "boot", "inplace"))
        os.makedirs(os.path.join(root, "boot", "grub"))
        for name, data in staged.items():
            with open(os.path.join(root, "boot", "inplace", name), "wb") as handle:
                handle.write(data)
        _grub.write_grubenv(os.path.join(root, "boot", "grub", "grubenv"), {"next_entry": "inplace-maintenance"})
    for name, data in staged.items():
        local = tmp_path / name
        local.write_bytes(data)
        assert run(grub_fstest, device, "cmp", "/boot/inplace/" + name, str(local), check=False).returncode == 0, \
            "GRUB reads %s from xfs otherwise" % name
    # save_env rewrites grubenv's sectors where the blocklist says they are, through no filesystem
    # driver: one extent of two sectors, written here as GRUB would, must be what Linux reads back.
    blocklist = run(grub_fstest, device, "blocklist", "/boot/grub/grubenv").stdout.strip()
    start, count = (int(n) for n in blocklist.split("+"))
    assert count == 2, blocklist
    scratch = tmp_path / "grubenv"
    _grub.write_grubenv(str(scratch), {"saved_entry": "0"})
    cleared = scratch.read_bytes()
    with open(device, "r+b") as handle:
        handle.seek(start * 512)
        handle.write(cleared)
    with mounted(device) as root:
        assert _grub.read_grubenv(os.path.join(root, "boot", "grub", "grubenv")) == {"saved_entry": "0"}


def test_the_maintenance_environment_keeps_the_xfs_module_and_what_it_needs_from_a_debian_kernel(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "build_base", os.path.join(adhoc.REPO, "roles", "maintenance_env", "files", "build_base.py"))
    build_base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_base)
    names = run("tar", "-tf", images.debian_root()).stdout.split()
    texts = []
    for name in ("modules.dep", "modules.softdep", "modules.builtin"):
        member = [n for n in names if n.endswith("/" + name)][0]
        texts.append(run("tar", "-xOf", images.debian_root(), member).stdout)
    kept, unused_every = build_base.kept_modules(*texts[:2])
    builtin = set(texts[2].split())
    dependencies = {line.partition(":")[0]: line.partition(":")[2].split() for line in texts[0].splitlines()}
    assert "kernel/fs/xfs/xfs.ko" in kept and "kernel/fs/xfs/xfs.ko" not in builtin
    for fstype in ("xfs", "btrfs", "ext4"):
        module = "kernel/fs/%s/%s.ko" % (fstype, fstype)
        if module in builtin:
            continue
        assert module in kept, "%s is pruned" % module
        assert set(dependencies[module]) <= kept, "%s needs %s" % (module, set(dependencies[module]) - kept)
