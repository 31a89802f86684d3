"""partition_space through Ansible on loop disks with real filesystems holding real files."""

from __future__ import annotations

import os
import re

import pytest

from tests.support import adhoc
from tests.support.loopdisk import GiB, MiB, mounted, run, tree_digests, write_tree

LABEL = "INPLACE-STORE"


def partition_space(check=False, diff=False, **args):
    return adhoc.module("partition_space", args, check=check, diff=diff)


def make_fs(device, fstype, content=None, label=None):
    """Format ``device``; with ``content`` (a directory) fill it without mounting."""
    if fstype.startswith("ext"):
        args = ["mkfs." + fstype, "-q", "-F"] + (["-d", content] if content else []) + (["-L", label] if label else [])
    elif fstype == "btrfs":
        args = ["mkfs.btrfs", "-q", "-f"] + (["--rootdir", content] if content else []) + (["-L", label] if label else [])
    else:
        args = ["mkfs." + fstype, "-q", "-f"] + (["-L", label] if label else [])
    run(*(args + [device]))


def files_on(device):
    with mounted(device, options=["noload"] if fstype_of(device).startswith("ext") else None) as directory:
        return tree_digests(directory)


def fstype_of(device):
    return run("blkid", "-p", "-s", "TYPE", "-o", "value", device).stdout.strip()


def assert_clean(device):
    fstype = fstype_of(device)
    if fstype.startswith("ext"):
        proc = run("e2fsck", "-f", "-n", device, check=False)
    elif fstype == "btrfs":
        proc = run("btrfs", "check", "--readonly", device, check=False)
    else:
        raise AssertionError("no checker for %s" % fstype)
    assert proc.returncode == 0, "%s is not clean:\n%s%s" % (device, proc.stdout, proc.stderr)


def fs_bytes(device):
    """Size of the filesystem on ``device`` as its own tools report it."""
    fstype = fstype_of(device)
    if fstype.startswith("ext"):
        header = dict(line.split(":", 1) for line in run("dumpe2fs", "-h", device).stdout.splitlines() if ":" in line)
        return int(header["Block count"]) * int(header["Block size"])
    with mounted(device) as directory:
        out = run("btrfs", "filesystem", "show", "--raw", directory).stdout
        return int(out.split("size")[1].split()[0])


def usable(device):
    with mounted(device) as directory:
        stat = os.statvfs(directory)
        return stat.f_bavail * stat.f_frsize


def partitions(disk):
    """{number: entry} from the partition table as sfdisk reads it from the disk's bytes."""
    table = disk.table()
    entries = {}
    for entry in table["partitions"]:
        number = int(entry["node"].rsplit("p", 1)[1])
        entries[number] = dict(entry, start_bytes=entry["start"] * 512, end_bytes=(entry["start"] + entry["size"]) * 512)
    return entries


@pytest.fixture
def content(tmp_path):
    def factory(name="data", files=30, big=8 * MiB, seed=1):
        root = tmp_path / name
        digests = write_tree(str(root), files=files, big=big, seed=seed)
        return str(root), digests
    return factory


def shape(layout):
    return [(p["number"], p["kind"], p["start"], p["end"]) for p in layout["partitions"]]


def converge(loop, **args):
    """Check mode first (the disk's bytes must not change), then the change, then a rerun that changes nothing."""
    before = loop.digest()
    planned = partition_space(check=True, **args)
    assert planned["rc"] == 0 and planned["changed"] is True, planned.get("msg")
    assert loop.digest() == before, "check mode changed the disk"
    made = partition_space(**args)
    assert made["rc"] == 0 and made["changed"] is True, made.get("msg")
    assert shape(made["layout_after"]) == shape(planned["layout_after"]), "the disk is not as check mode planned"
    again = partition_space(**args)
    assert again["rc"] == 0 and again["changed"] is False and again["actions"] == []
    return made


def assert_store(disk, result, number, kind, size):
    store = result["store"]
    assert store["number"] == number and store["kind"] == kind and store["device"] == disk.part(number)
    table = partitions(disk)
    assert table[number]["start_bytes"] == store["start"] and table[number]["start_bytes"] % MiB == 0
    assert table[number]["end_bytes"] - table[number]["start_bytes"] == store["size"]
    assert fstype_of(disk.part(number)) == "ext4"
    assert run("blkid", "-p", "-s", "LABEL", "-o", "value", disk.part(number)).stdout.strip() == LABEL
    assert run("blkid", "-p", "-s", "UUID", "-o", "value", disk.part(number)).stdout.strip() == store["uuid"]
    assert usable(disk.part(number)) >= size
    assert store["usable_bytes"] >= size
    assert_clean(disk.part(number))
    header = run("dumpe2fs", "-h", disk.part(number)).stdout
    assert "Reserved block count:     0" in header


def test_msdos_single_ext4_is_shrunk_then_grown_back(make_disk, content):
    disk = make_disk(2 * GiB, "label: dos\nstart=2048, type=83\n")
    tree, digests = content(big=64 * MiB)
    make_fs(disk.part(1), "ext4", tree)
    before = disk.digest()

    planned = partition_space(disk=disk.path, size="512MiB", check=True, diff=True)
    assert planned["changed"] is True and planned["rc"] == 0
    assert disk.digest() == before, "check mode changed the disk"
    assert "+2    primary" in planned["stdout"] and "INPLACE-STORE" in planned["stdout"]

    made = partition_space(disk=disk.path, size="512MiB")
    assert made["changed"] is True, made.get("msg")
    assert shape(made["layout_after"]) == shape(planned["layout_after"]), "the disk is not as check mode planned"
    table = partitions(disk)
    assert sorted(table) == [1, 2]
    assert table[1]["start_bytes"] == MiB and table[1]["end_bytes"] == table[2]["start_bytes"]
    assert table[2]["end_bytes"] == 2 * GiB
    assert fs_bytes(disk.part(1)) <= table[1]["end_bytes"] - table[1]["start_bytes"]
    assert_store(disk, made, 2, "primary", 512 * MiB)
    assert_clean(disk.part(1))
    assert files_on(disk.part(1)) == digests

    again = partition_space(disk=disk.path, size="512MiB")
    assert again["changed"] is False and again["actions"] == []
    after_made = disk.digest()
    assert partition_space(disk=disk.path, size="512MiB", check=True)["changed"] is False
    assert disk.digest() == after_made

    planned_removal = partition_space(disk=disk.path, state="absent", check=True)
    assert planned_removal["changed"] is True and disk.digest() == after_made

    removed = partition_space(disk=disk.path, state="absent")
    assert removed["changed"] is True, removed.get("msg")
    table = partitions(disk)
    assert sorted(table) == [1] and table[1]["start_bytes"] == MiB and table[1]["end_bytes"] == 2 * GiB
    assert fs_bytes(disk.part(1)) == 2 * GiB - MiB
    assert_clean(disk.part(1))
    assert files_on(disk.part(1)) == digests
    assert not os.path.exists(disk.part(2))
    assert partition_space(disk=disk.path, state="absent")["changed"] is False


def test_msdos_three_primaries_gets_a_primary_store(make_disk, content):
    disk = make_disk(2 * GiB, "label: dos\nstart=2048, size=2097152, type=83\n"
                              "size=262144, type=83\ntype=83\n")
    trees = [content("p%d" % n, files=10, big=4 * MiB, seed=n) for n in (1, 2, 3)]
    for number, (tree, unused_digests) in enumerate(trees, start=1):
        make_fs(disk.part(number), "ext4", tree)
    layout = partitions(disk)

    made = converge(disk, disk=disk.path, size="256MiB")
    table = partitions(disk)
    assert sorted(table) == [1, 2, 3, 4]
    # Partition 1 can give most; the store sits right behind it, before partition 2.
    assert table[4]["start_bytes"] == table[1]["end_bytes"] and table[4]["end_bytes"] <= table[2]["start_bytes"]
    assert table[1]["end_bytes"] < layout[1]["end_bytes"]
    for number in (2, 3):
        assert table[number] == layout[number]
    assert_store(disk, made, 4, "primary", 256 * MiB)
    for number, (unused_tree, digests) in enumerate(trees, start=1):
        assert_clean(disk.part(number))
        assert files_on(disk.part(number)) == digests


def test_msdos_four_primaries_with_extended_gets_a_logical_store(make_disk, content):
    disk = make_disk(2 * GiB, "label: dos\nstart=2048, size=524288, type=83\nsize=262144, type=83\n"
                              "size=131072, type=82\ntype=5\ntype=83\n")
    tree, digests = content(big=32 * MiB)
    make_fs(disk.part(1), "ext4")
    make_fs(disk.part(2), "ext4")
    make_fs(disk.part(5), "ext4", tree)
    layout = partitions(disk)

    made = converge(disk, disk=disk.path, size="300MiB")
    table = partitions(disk)
    assert sorted(table) == [1, 2, 3, 4, 5, 6]
    assert table[5]["end_bytes"] < layout[5]["end_bytes"]
    assert table[4]["end_bytes"] >= table[6]["end_bytes"] > table[6]["start_bytes"] > table[5]["end_bytes"]
    for number in (1, 2, 3, 4):
        assert table[number] == layout[number]
    assert_store(disk, made, 6, "logical", 300 * MiB)
    assert_clean(disk.part(5))
    assert files_on(disk.part(5)) == digests

    removed = partition_space(disk=disk.path, state="absent")
    assert removed["changed"] is True, removed.get("msg")
    table = partitions(disk)
    assert sorted(table) == [1, 2, 3, 4, 5]
    assert table[5]["end_bytes"] == table[4]["end_bytes"] == 2 * GiB
    assert fs_bytes(disk.part(5)) == table[5]["end_bytes"] - table[5]["start_bytes"]
    assert files_on(disk.part(5)) == digests
    assert_clean(disk.part(5))


def test_gpt_store_is_a_named_partition(make_disk, content):
    disk = make_disk(2 * GiB, "label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\n"
                              "start=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n")
    tree, digests = content(big=16 * MiB)
    make_fs(disk.part(2), "ext4", tree)
    made = converge(disk, disk=disk.path, size="700MiB", shrink=disk.part(2))
    table = partitions(disk)
    assert sorted(table) == [1, 2, 3]
    assert table[3]["name"] == LABEL
    assert table[2]["end_bytes"] == table[3]["start_bytes"]
    assert_store(disk, made, 3, "primary", 700 * MiB)
    assert files_on(disk.part(2)) == digests
    assert_clean(disk.part(2))

    removed = partition_space(disk=disk.path, state="absent")
    assert removed["changed"] is True, removed.get("msg")
    table = partitions(disk)
    assert sorted(table) == [1, 2]
    # GPT keeps its backup table in the last 33 sectors; the grown partition ends at the last whole MiB.
    assert table[2]["end_bytes"] == 2 * GiB - MiB
    assert fs_bytes(disk.part(2)) == table[2]["end_bytes"] - table[2]["start_bytes"]
    assert files_on(disk.part(2)) == digests
    assert_clean(disk.part(2))


def test_btrfs_is_shrunk_and_grown_back(make_disk, content):
    disk = make_disk(2 * GiB, "label: dos\nstart=2048, type=83\n")
    tree, digests = content(big=32 * MiB)
    make_fs(disk.part(1), "btrfs", tree)
    made = converge(disk, disk=disk.path, size="400MiB")
    table = partitions(disk)
    assert sorted(table) == [1, 2]
    assert fs_bytes(disk.part(1)) == table[1]["end_bytes"] - table[1]["start_bytes"]
    assert_store(disk, made, 2, "primary", 400 * MiB)
    assert_clean(disk.part(1))
    assert files_on(disk.part(1)) == digests

    removed = partition_space(disk=disk.path, state="absent")
    assert removed["changed"] is True, removed.get("msg")
    assert partitions(disk)[1]["end_bytes"] == 2 * GiB
    assert fs_bytes(disk.part(1)) == 2 * GiB - MiB
    assert_clean(disk.part(1))
    assert files_on(disk.part(1)) == digests


def test_free_space_only_leaves_existing_partitions_alone(make_disk, content):
    disk = make_disk(2 * GiB, "label: gpt\nstart=2048, size=2097152, name=root\n")
    tree, digests = content()
    make_fs(disk.part(1), "ext4", tree)
    layout = partitions(disk)
    fs_before = fs_bytes(disk.part(1))

    made = converge(disk, disk=disk.path, size="512MiB", shrink="none")
    assert made["notes"] == ["unallocated space suffices; no partition is shrunk"]
    table = partitions(disk)
    assert table[1] == layout[1] and fs_bytes(disk.part(1)) == fs_before
    assert table[2]["start_bytes"] == layout[1]["end_bytes"]
    assert_store(disk, made, 2, "primary", 512 * MiB)
    assert files_on(disk.part(1)) == digests


def test_xfs_is_refused_and_nothing_changes(make_disk):
    disk = make_disk(1 * GiB, "label: dos\nstart=2048, type=83\n")
    make_fs(disk.part(1), "xfs")
    before = disk.digest()
    for shrink in ("auto", disk.part(1)):
        result = partition_space(disk=disk.path, size="200MiB", shrink=shrink)
        assert result["rc"] != 0 and result["changed"] is False
        assert "holds xfs, which cannot be shrunk" in result["msg"]
        assert result["msg"].count(". ") == 0, "more than one sentence: %s" % result["msg"]
    assert disk.digest() == before


def test_refusals_change_nothing(make_disk, content):
    disk = make_disk(1 * GiB, "label: dos\nstart=2048, type=83\n")
    tree = content(big=0)[0]
    make_fs(disk.part(1), "ext4", tree)
    before = disk.digest()
    cases = [
        (dict(disk=disk.path, size="12 parsecs"), "is not a size"),
        (dict(disk="/dev/inplace-no-such-disk", size="1GiB"), "does not exist"),
        (dict(disk=disk.part(1), size="100MiB"), "is a partition; name the whole disk"),
        (dict(disk=disk.path, size="100MiB", shrink=disk.path + "p9"), re.escape(
            "shrink=%sp9 names no partition on %s (it has %sp1); name one of its partitions, or use shrink=auto." % (
                disk.path, disk.path, disk.path))),
        # 5 GiB and the filesystem's overhead; what the half-full filesystem can give.
        (dict(disk=disk.path, size="5GiB"), re.escape("Not enough reclaimable space on %s: " % disk.path) +
            r"the store needs 5\.[0-9] GiB, and at most [0-9.]+ MiB can be had; free space by deleting files on the "
            r"disk's filesystems, or ask for a smaller store\."),
        (dict(disk=disk.path, size="100MiB", shrink="none"), "Not enough unallocated space"),
    ]
    for args, expected in cases:
        result = partition_space(**args)
        assert result["rc"] != 0 and result["changed"] is False, args
        adhoc.assert_one_sentence_naming_the_fix(result, [])
        assert re.fullmatch(expected, result["msg"]) or (len(expected) < 40 and expected in result["msg"]), (
            args, result["msg"])
    assert disk.digest() == before

    with mounted(disk.part(1), readonly=False):
        result = partition_space(disk=disk.path, size="100MiB")
        assert result["rc"] != 0 and "maintenance environment" in result["msg"]
        planned = partition_space(disk=disk.path, size="100MiB", plan_offline=True, check=True)
        assert planned["rc"] == 0 and planned["changed"] is True and len(planned["actions"]) == 4
        refused = partition_space(disk=disk.path, size="100MiB", plan_offline=True)
        assert refused["rc"] != 0 and "only plans" in refused["msg"]
    after_mount = disk.digest()

    made = partition_space(disk=disk.path, size="100MiB")
    assert made["changed"] is True, made.get("msg")
    made_digest = disk.digest()
    too_small = partition_space(disk=disk.path, size="300MiB")
    assert too_small["rc"] != 0 and "too small" in too_small["msg"]
    assert disk.digest() == made_digest != after_mount


def test_four_msdos_primaries_without_extended_are_refused(make_disk):
    disk = make_disk(1 * GiB, "label: dos\n" + "size=409600, type=83\n" * 3 + "type=83\n")
    for number in (1, 2, 3, 4):
        make_fs(disk.part(number), "ext4")
    before = disk.digest()
    result = partition_space(disk=disk.path, size="64MiB")
    assert result["rc"] != 0 and "four primary partitions and no extended" in result["msg"]
    assert disk.digest() == before


def test_not_enough_space_names_need_and_what_can_be_had(make_disk):
    disk = make_disk(256 * MiB, "label: dos\nstart=2048, type=83\n")
    make_fs(disk.part(1), "ext4")
    result = partition_space(disk=disk.path, size="1TiB")
    assert result["rc"] != 0
    adhoc.assert_one_sentence_naming_the_fix(result, [])
    assert re.fullmatch(re.escape("Not enough reclaimable space on %s: the store needs 1.0 TiB, and at most 0 B can be "
                                  "had (%sp1 has no space to give: its filesystem needs " % (disk.path, disk.path)) +
                        r"[0-9.]+ MiB plus 256\.0 MiB headroom\); free space by deleting files on the disk's "
                        r"filesystems, or ask for a smaller store\.", result["msg"]), result["msg"]


def test_half_full_filesystem_shrinks_below_resize2fs_estimate(make_disk, content):
    """resize2fs -P asks for nearly the whole filesystem here; the module's own sum lets it give 512 MiB."""
    disk = make_disk(2 * GiB, "label: dos\nstart=2048, type=83\n")
    tree, digests = content(files=200, big=900 * MiB)
    make_fs(disk.part(1), "ext4", tree)
    estimate = int(run("resize2fs", "-P", disk.part(1)).stdout.split()[-1]) * 4096
    # With that minimum plus 256 MiB headroom, no 512 MiB store would fit on this disk.
    assert estimate > 1500 * MiB

    made = converge(disk, disk=disk.path, size="512MiB")
    assert fs_bytes(disk.part(1)) < 1600 * MiB
    assert_clean(disk.part(1))
    assert files_on(disk.part(1)) == digests
    assert_store(disk, made, 2, "primary", 512 * MiB)


def test_mounted_btrfs_is_shrunk_online(make_disk, content):
    disk = make_disk(2 * GiB, "label: dos\nstart=2048, type=83\n")
    tree, digests = content(big=16 * MiB)
    make_fs(disk.part(1), "btrfs", tree)
    with mounted(disk.part(1), readonly=False) as directory:
        made = partition_space(disk=disk.path, size="400MiB")
        assert made["changed"] is True, made.get("msg")
        assert tree_digests(directory) == digests
        table = partitions(disk)
        out = run("btrfs", "filesystem", "show", "--raw", directory).stdout
        assert int(out.split("size")[1].split()[0]) == table[1]["end_bytes"] - table[1]["start_bytes"]
        assert partition_space(disk=disk.path, size="400MiB")["changed"] is False
    assert_store(disk, made, 2, "primary", 400 * MiB)
    assert_clean(disk.part(1))
