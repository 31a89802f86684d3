"""Properties of the partition_space planner, over generated disks."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ansible_collections.inplace.migration.plugins.module_utils.disk.model import (
    ALIGNMENT, CreatePartition, Disk, Filesystem, GROWABLE, Partition, ShrinkFilesystem, render,
)
from ansible_collections.inplace.migration.plugins.module_utils.disk.planner import (
    _fits, _regions, default_headroom, find_store, plan_absent, plan_present,
)
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import align_down, align_up

MiB = 1024 * 1024
SECTOR = 512
LABEL = "INPLACE-STORE"


def make_disk(label, size, parts):
    if label == "gpt":
        first, end = 34 * SECTOR, size - 33 * SECTOR
    else:
        first, end = SECTOR, size
    named = []
    for part in parts:
        named.append(Partition(path="/dev/sdx%d" % part.number, **{
            k: getattr(part, k) for k in ("number", "start", "end", "kind", "name", "fs")}))
    return Disk(path="/dev/sdx", size=size, sector_size=SECTOR, label=label, partitions=tuple(named),
                first_usable=first, usable_end=end, max_partitions=128 if label == "gpt" else 4)


def ext4(size, used, minimum=None, mounted=None, label=None):
    return Filesystem(type="ext4", size=size, used=used, min_size=minimum if minimum is not None else used + 16 * MiB,
                      mountpoint=mounted, label=label)


@st.composite
def filesystems(draw, size):
    kind = draw(st.sampled_from(["ext4", "ext4", "btrfs", "xfs", "swap", None]))
    if kind is None:
        return None
    fs_size = size - draw(st.sampled_from([0, 0, 0, 4096, MiB]))
    used = draw(st.integers(min_value=0, max_value=fs_size))
    minimum = min(fs_size, used + draw(st.integers(min_value=0, max_value=64)) * MiB)
    if kind in ("xfs", "swap"):
        return Filesystem(type=kind, size=fs_size)
    return Filesystem(type=kind, size=fs_size, used=used, min_size=minimum)


@st.composite
def disks(draw):
    label = draw(st.sampled_from(["msdos", "gpt"]))
    disk_mib = draw(st.integers(min_value=64, max_value=64 * 1024))
    size = disk_mib * MiB + draw(st.sampled_from([0, 0, 7 * SECTOR]))
    cursor = MiB
    parts = []
    use_extended = label == "msdos" and draw(st.booleans())
    primaries = draw(st.integers(min_value=0, max_value=3 if use_extended else 4))
    logicals = draw(st.integers(min_value=0, max_value=3)) if use_extended else 0
    count = primaries + logicals
    assume(count > 0)
    # Share the disk among the partitions, leaving random gaps.
    weights = draw(st.lists(st.integers(min_value=1, max_value=100), min_size=count, max_size=count))
    gaps = draw(st.lists(st.sampled_from([0, 0, 0, 1, 5]), min_size=count + 1, max_size=count + 1))
    usable_mib = size // MiB - 2 - sum(gaps) - 2 * logicals
    assume(usable_mib >= count * 4)
    sizes = [max(2, usable_mib * w // sum(weights)) for w in weights]
    number = 1
    for index in range(primaries):
        cursor += gaps[index] * MiB
        end = cursor + sizes[index] * MiB
        parts.append(Partition(number=number, start=cursor, end=end, fs=draw(filesystems(end - cursor)),
                               name="part%d" % number if label == "gpt" else None))
        cursor, number = end, number + 1
    if use_extended:
        ext_start = cursor + gaps[primaries] * MiB
        cursor = ext_start
        logical_number = 5
        for index in range(primaries, count):
            cursor += MiB + gaps[index + 1] * MiB
            end = cursor + sizes[index] * MiB
            parts.append(Partition(number=logical_number, start=cursor, end=end, kind="logical",
                                   fs=draw(filesystems(end - cursor))))
            cursor, logical_number = end, logical_number + 1
        ext_end = min(size, cursor + draw(st.sampled_from([0, MiB, 16 * MiB])))
        parts.append(Partition(number=number, start=ext_start, end=max(ext_end, ext_start + MiB), kind="extended"))
    assume(all(p.end <= size - (33 * SECTOR if label == "gpt" else 0) for p in parts))
    return make_disk(label, size, parts)


@st.composite
def cases(draw):
    """A disk, and a store request sized to it (so that most plans can succeed)."""
    disk = draw(disks())
    store_bytes = draw(st.integers(min_value=1, max_value=max(1, disk.size // MiB // 3))) * MiB
    shrink = draw(st.sampled_from(["auto", "auto", "none"] + [str(p.number) for p in disk.partitions] + ["9"]))
    min_free = draw(st.sampled_from([None, 0, 64 * MiB, 1024 * MiB]))
    return disk, (store_bytes, shrink, min_free)


def assert_sane(disk):
    top = sorted(disk.top_level, key=lambda p: p.start)
    for a, b in zip(top, top[1:]):
        assert a.end <= b.start, "top-level partitions overlap:\n" + render(disk)
    for part in disk.partitions:
        assert disk.first_usable <= part.start < part.end <= disk.usable_end, render(disk)
        if part.fs is not None and part.fs.size is not None:
            assert part.fs.size <= part.size, "filesystem larger than its partition:\n" + render(disk)
    if disk.label == "msdos":
        assert len(top) <= 4
        extended = disk.extended
        logicals = disk.logicals
        for a, b in zip(logicals, logicals[1:]):
            assert a.end + SECTOR <= b.start, "logical partitions overlap or lack room for an EBR"
        for part in logicals:
            assert extended is not None and extended.start + SECTOR <= part.start and part.end <= extended.end
            assert part.number >= 5
        assert sorted(p.number for p in logicals) == list(range(5, 5 + len(logicals))), "logicals renumbered"


def changed_boundaries(before, after):
    """(number, which, value) of every partition boundary the plan moved or created."""
    moved = []
    for part in after.partitions:
        old = before.partition(part.number)
        if old is None:
            moved += [(part.number, "start", part.start), (part.number, "end", part.end)]
            continue
        if old.start != part.start:
            moved.append((part.number, "start", part.start))
        if old.end != part.end:
            moved.append((part.number, "end", part.end))
    return moved


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(cases())
def test_present_plans_keep_every_rule(case):
    disk, request = case
    store_bytes, shrink, min_free = request
    try:
        plan = plan_present(disk, store_bytes, label=LABEL, shrink=shrink, min_free=min_free)
    except MigrationError as error:
        assert str(error).endswith(".") and "\n" not in str(error)
        return
    after = plan.after
    assert_sane(after)
    store = find_store(after, LABEL)
    assert store is not None and store.size >= store_bytes
    assert store.start % ALIGNMENT == 0 and store.end % ALIGNMENT == 0
    for number, which, value in changed_boundaries(disk, after):
        grown_to_disk_end = which == "end" and value == disk.usable_end
        assert value % ALIGNMENT == 0 or grown_to_disk_end, "unaligned %s of partition %d" % (which, number)
    for step in plan.steps:
        if isinstance(step, ShrinkFilesystem):
            old = disk.partition(step.number)
            headroom = default_headroom(old.fs.used) if min_free is None else min_free
            assert step.size >= old.fs.min_size + headroom
            assert shrink in ("auto", str(step.number))
    # Partitions other than the one shrunk (and an extended one grown) keep their place and number.
    touched = {s.number for s in plan.steps}
    for part in disk.partitions:
        if part.number not in touched:
            assert after.partition(part.number) == part
    if disk.label == "msdos":
        created = [s for s in plan.steps if isinstance(s, CreatePartition)]
        if created and created[0].kind == "logical" and len(disk.top_level) < 4:
            # A logical store with a primary slot free: only in space freed inside the extended
            # partition, or when no unallocated region could take a primary.
            shrunk_logical = any(isinstance(s, ShrinkFilesystem) and disk.partition(s.number).kind == "logical"
                                 for s in plan.steps)
            primary_fits = any(r.kind == "primary" and _fits(r, store_bytes, SECTOR) for r in _regions(disk))
            assert shrunk_logical or not primary_fits, "a primary slot was free, yet the store is logical"
    # Planning again on the result changes nothing.
    assert plan_present(after, store_bytes, label=LABEL, shrink=shrink, min_free=min_free).actions == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(cases())
def test_absent_leaves_no_gap_after_the_preceding_partition(case):
    disk, request = case
    store_bytes, shrink, min_free = request
    try:
        made = plan_present(disk, store_bytes, label=LABEL, shrink=shrink, min_free=min_free).after
    except MigrationError:
        return
    store = find_store(made, LABEL)
    removed = plan_absent(made, label=LABEL)
    after = removed.after
    assert_sane(after)
    assert find_store(after, LABEL) is None
    assert plan_absent(after, label=LABEL).actions == []
    previous = [p for p in made.data_partitions if p.end <= store.start and p.number != store.number]
    if not previous:
        return
    prev = after.partition(max(previous, key=lambda p: p.end).number)
    if prev.fstype not in GROWABLE:
        return
    if prev.kind == "logical":
        later = [p.start for p in after.logicals if p.start > prev.start]
        limit = min(later) - ALIGNMENT if later else after.extended.end
        if not later:
            behind = [p.start for p in after.top_level if p.start >= after.extended.end]
            assert (min(behind) if behind else after.usable_end) - after.extended.end < ALIGNMENT
    else:
        later = [p.start for p in after.top_level if p.start > prev.start]
        limit = min(later) if later else after.usable_end
    assert limit - prev.end < ALIGNMENT, "gap of %d bytes left after %s:\n%s" % (limit - prev.end, prev.path, render(after))
    if prev.end != made.partition(prev.number).end:
        assert prev.fs.size <= prev.size and prev.size - prev.fs.size < 4096


def simple_disk(label="msdos", size_mib=2048, used_mib=512, mounted=None):
    size = size_mib * MiB
    end = size - (MiB if label == "gpt" else 0)
    part = Partition(number=1, start=MiB, end=end, fs=ext4(end - MiB, used_mib * MiB, mounted=mounted))
    return make_disk(label, size, [part])


def test_shrink_takes_only_what_is_missing():
    disk = make_disk("msdos", 2048 * MiB, [
        Partition(number=1, start=MiB, end=1800 * MiB, fs=ext4(1799 * MiB, 100 * MiB))])
    plan = plan_present(disk, 300 * MiB)
    shrunk = plan.after.partition(1)
    # 248 MiB are free behind partition 1; 52 MiB more come from shrinking it.
    assert shrunk.end == 1748 * MiB
    assert plan.store.start == 1748 * MiB and plan.store.end == 2048 * MiB
    assert plan.store.kind == "primary" and plan.store.number == 2


def test_free_space_is_used_before_shrinking():
    disk = make_disk("gpt", 4096 * MiB, [
        Partition(number=1, start=MiB, end=2049 * MiB, name="root", fs=ext4(2048 * MiB, 100 * MiB))])
    plan = plan_present(disk, 1024 * MiB, shrink="1")
    assert [type(s).__name__ for s in plan.steps] == ["CreatePartition", "CreateFilesystem"]
    assert plan.store.name == LABEL and plan.store.start == 2049 * MiB
    assert plan.notes == ["unallocated space suffices; no partition is shrunk"]


def test_headroom_defaults_to_a_tenth_of_used_and_at_least_256_mib():
    assert default_headroom(100 * MiB) == 256 * MiB
    assert default_headroom(10 * 1024 * MiB) == 1024 * MiB


def test_mounted_ext_is_refused_with_the_maintenance_environment_named():
    disk = simple_disk(mounted="/")
    with pytest.raises(MigrationError, match="maintenance environment"):
        plan_present(disk, 512 * MiB)


def test_xfs_is_refused():
    disk = make_disk("msdos", 2048 * MiB, [
        Partition(number=1, start=MiB, end=2048 * MiB, fs=Filesystem(type="xfs", size=2047 * MiB))])
    with pytest.raises(MigrationError, match="holds xfs, which cannot be shrunk"):
        plan_present(disk, 512 * MiB, shrink="1")
    with pytest.raises(MigrationError, match="at most 0 B can be had.*holds xfs"):
        plan_present(disk, 512 * MiB)


def xfs_root_and_ext4_home(home_used):
    return make_disk("gpt", 4096 * MiB, [
        Partition(number=1, start=MiB, end=2048 * MiB, fs=Filesystem(type="xfs", size=2047 * MiB, used=MiB)),
        Partition(number=2, start=2048 * MiB, end=4095 * MiB, fs=ext4(2047 * MiB, home_used))])


def test_an_xfs_root_is_passed_over_for_a_home_that_can_shrink():
    plan = plan_present(xfs_root_and_ext4_home(200 * MiB), 512 * MiB)
    assert [type(step).__name__ for step, unused in plan.actions][:2] == ["ShrinkFilesystem", "ResizePartition"]
    assert {step.number for step, unused in plan.actions if hasattr(step, "number")} == {2, 3}
    assert plan.after.partition(1) == plan.before.partition(1)
    assert plan.store.start == plan.after.partition(2).end


def test_an_xfs_root_named_to_shrink_is_refused_and_another_partition_is_suggested():
    with pytest.raises(MigrationError, match="holds xfs, which cannot be shrunk; .*name another partition"):
        plan_present(xfs_root_and_ext4_home(200 * MiB), 512 * MiB, shrink="/dev/sdx1")
    assert plan_present(xfs_root_and_ext4_home(200 * MiB), 512 * MiB, shrink="/dev/sdx2").store.number == 3


def test_not_enough_space_says_what_is_needed_and_what_can_be_had():
    disk = simple_disk(size_mib=2048, used_mib=1500)
    with pytest.raises(MigrationError) as caught:
        plan_present(disk, 1024 * MiB)
    assert str(caught.value) == "Not enough reclaimable space on /dev/sdx: the store needs 1.0 GiB, and at most " \
        "274.0 MiB can be had; free space by deleting files on the disk's filesystems, or ask for a smaller store."


def test_four_msdos_primaries_without_extended_are_refused():
    parts = [Partition(number=n, start=n * 100 * MiB, end=(n + 1) * 100 * MiB - MiB,
                       fs=ext4(99 * MiB, MiB, minimum=2 * MiB)) for n in range(1, 5)]
    disk = make_disk("msdos", 2048 * MiB, parts)
    with pytest.raises(MigrationError, match="four primary partitions and no extended"):
        plan_present(disk, 64 * MiB)


def test_logical_store_goes_after_the_last_logical_and_grows_the_extended():
    parts = [
        Partition(number=1, start=MiB, end=100 * MiB, fs=ext4(99 * MiB, MiB)),
        Partition(number=2, start=100 * MiB, end=200 * MiB, fs=ext4(100 * MiB, MiB)),
        Partition(number=3, start=200 * MiB, end=300 * MiB),
        Partition(number=4, start=300 * MiB, end=1000 * MiB, kind="extended"),
        Partition(number=5, start=301 * MiB, end=1000 * MiB, kind="logical", fs=ext4(699 * MiB, 50 * MiB)),
    ]
    disk = make_disk("msdos", 2048 * MiB, parts)
    plan = plan_present(disk, 512 * MiB, shrink="none")
    assert plan.store.kind == "logical" and plan.store.number == 6
    assert plan.after.extended.end == plan.store.end
    plan = plan_present(disk, 1400 * MiB)
    assert plan.store.kind == "logical" and plan.after.partition(5).end < 1000 * MiB


def test_named_partition_that_does_not_exist_is_refused():
    with pytest.raises(MigrationError) as caught:
        plan_present(simple_disk(), 512 * MiB, shrink="/dev/sdx9")
    assert str(caught.value) == "shrink=/dev/sdx9 names no partition on /dev/sdx (it has /dev/sdx1); name one of its " \
        "partitions, or use shrink=auto."


def test_store_that_exists_but_is_too_small_is_refused():
    disk = make_disk("msdos", 2048 * MiB, [
        Partition(number=1, start=MiB, end=1800 * MiB, fs=ext4(1799 * MiB, 100 * MiB)),
        Partition(number=2, start=1800 * MiB, end=1900 * MiB, fs=ext4(100 * MiB, MiB, label=LABEL)),
    ])
    with pytest.raises(MigrationError, match="too small"):
        plan_present(disk, 512 * MiB)
    assert plan_present(disk, 100 * MiB).actions == []


def test_absent_deletes_an_extended_partition_left_empty_and_grows_the_primary():
    parts = [
        Partition(number=1, start=MiB, end=1000 * MiB, fs=ext4(999 * MiB, MiB)),
        Partition(number=2, start=1000 * MiB, end=2048 * MiB, kind="extended"),
        Partition(number=5, start=1001 * MiB, end=2048 * MiB, kind="logical", fs=ext4(1047 * MiB, MiB, label=LABEL)),
    ]
    plan = plan_absent(make_disk("msdos", 2048 * MiB, parts))
    assert [p.number for p in plan.after.partitions] == [1]
    assert plan.after.partition(1).end == 2048 * MiB


# Feasible requests succeed ----------------------------------------------------------------------------
#
# The properties above check the plans that are made; these check that a plan is made whenever a
# store certainly fits. room_for() is a deliberately simple, conservative reckoning of the space the
# rules allow (it may say less than the planner can find, never more), written apart from the planner.

def _following_start(disk, part, siblings):
    later = [p.start for p in siblings if p.start >= part.end]
    return min(later) if later else None


def _region_room(disk):
    """(room, where) of the largest store unallocated space can take."""
    rooms = [(0, None)]
    if disk.label == "gpt" or len(disk.top_level) < 4:
        top = disk.partitions if disk.label == "gpt" else disk.top_level
        cursor = disk.first_usable
        for part in sorted(top, key=lambda p: p.start) + [None]:
            end = part.start if part is not None else disk.usable_end
            rooms.append((align_down(end, ALIGNMENT) - align_up(cursor, ALIGNMENT), "free"))
            if part is not None:
                cursor = max(cursor, part.end)
    extended = disk.extended
    if disk.label == "msdos" and extended is not None:
        logicals = disk.logicals
        tail = logicals[-1].end if logicals else extended.start
        limit = _following_start(disk, extended, disk.top_level)
        limit = max(limit if limit is not None else disk.usable_end, extended.end)
        rooms.append((align_down(limit, ALIGNMENT) - align_up(tail + SECTOR, ALIGNMENT), "free"))
    return max(rooms, key=lambda r: r[0])


def _shrink_room(disk, part, min_free):
    """The largest store that shrinking ``part`` to its minimum plus headroom makes room for, behind it."""
    fs = part.fs
    if part.kind == "extended" or fs is None or fs.type not in ("ext2", "ext3", "ext4", "btrfs"):
        return 0
    if fs.min_size is None or fs.size is None or fs.size > part.size:
        return 0
    if fs.type != "btrfs" and fs.mountpoint:
        return 0
    headroom = default_headroom(fs.used) if min_free is None else min_free
    lowest_end = align_up(part.start + fs.min_size + headroom, ALIGNMENT) + ALIGNMENT
    if disk.label == "gpt":
        boundary = _following_start(disk, part, disk.partitions)
        ebr = 0
    elif part.kind == "logical":
        if part != disk.logicals[-1]:
            return 0  # a store behind it would renumber the logicals after it
        boundary = _following_start(disk, disk.extended, disk.top_level)
        ebr = ALIGNMENT
    else:
        if len(disk.top_level) >= 4:
            return 0
        boundary = _following_start(disk, part, disk.top_level)
        ebr = 0
    boundary = disk.usable_end if boundary is None else boundary
    return max(0, align_down(boundary, ALIGNMENT) - lowest_end - ebr)


def room_for(disk, shrink, min_free):
    """(room, how): the largest store certainly possible on ``disk`` with these options."""
    best = _region_room(disk)
    if shrink == "none":
        return best
    for part in disk.data_partitions:
        if shrink in ("auto", str(part.number)):
            room = _shrink_room(disk, part, min_free)
            if room > best[0]:
                best = (room, "shrink %d" % part.number)
    return best


@st.composite
def roomy_disks(draw):
    """Disks built to have room: a large gap at the end, or a big, little-used last partition."""
    label = draw(st.sampled_from(["msdos", "gpt"]))
    size = draw(st.integers(min_value=512, max_value=64 * 1024)) * MiB
    end_limit = size - (MiB if label == "gpt" else 0)
    count = draw(st.integers(min_value=1, max_value=3))
    cursor = MiB
    parts = []
    way = draw(st.sampled_from(["gap", "shrink-ext4", "shrink-btrfs"]))
    share = (end_limit - MiB) // MiB // (count + 1)
    for number in range(1, count + 1):
        last = number == count
        if last and way != "gap":
            end = end_limit
        else:
            end = cursor + draw(st.integers(min_value=1, max_value=max(1, share))) * MiB
        part_size = end - cursor
        if last and way != "gap":
            fstype = "ext4" if way == "shrink-ext4" else "btrfs"
            used = draw(st.integers(min_value=0, max_value=part_size // 4))
            fs = Filesystem(type=fstype, size=part_size - draw(st.sampled_from([0, 4096])), used=used,
                            min_size=used + draw(st.integers(min_value=0, max_value=64)) * MiB,
                            mountpoint=draw(st.sampled_from([None, "/"])) if fstype == "btrfs" else None)
        else:
            fs = draw(filesystems(part_size))
        parts.append(Partition(number=number, start=cursor, end=end, fs=fs,
                               name="part%d" % number if label == "gpt" else None))
        cursor = end
    return make_disk(label, size, parts)


@st.composite
def feasible_cases(draw):
    disk = draw(st.one_of(disks(), roomy_disks()))
    shrink = draw(st.sampled_from(["auto", "auto", "none"] + [str(p.number) for p in disk.partitions]))
    min_free = draw(st.sampled_from([None, 0, 64 * MiB]))
    room, how = room_for(disk, shrink, min_free)
    assume(room >= MiB)
    store_bytes = draw(st.integers(min_value=1, max_value=room // MiB)) * MiB
    return disk, (store_bytes, shrink, min_free), how


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(feasible_cases())
def test_a_store_that_certainly_fits_is_planned(case):
    disk, (store_bytes, shrink, min_free), how = case
    try:
        plan = plan_present(disk, store_bytes, label=LABEL, shrink=shrink, min_free=min_free)
    except MigrationError as error:
        raise AssertionError("refused a store of %d MiB that fits (%s, shrink=%s, min_free=%s): %s\n%s" % (
            store_bytes // MiB, how, shrink, min_free, error, render(disk)))
    store = find_store(plan.after, LABEL)
    assert store is not None and store.size >= store_bytes, render(plan.after)
    assert_sane(plan.after)
    assert plan_present(plan.after, store_bytes, label=LABEL, shrink=shrink, min_free=min_free).actions == []


def _logical_layout():
    return make_disk("msdos", 4096 * MiB, [
        Partition(number=1, start=MiB, end=1000 * MiB, fs=ext4(999 * MiB, 900 * MiB)),
        Partition(number=2, start=1000 * MiB, end=3000 * MiB, kind="extended"),
        Partition(number=5, start=1001 * MiB, end=2000 * MiB, kind="logical", fs=ext4(999 * MiB, 100 * MiB)),
        Partition(number=6, start=2001 * MiB, end=3000 * MiB, kind="logical",
                  fs=Filesystem(type="btrfs", size=999 * MiB, used=50 * MiB, min_size=80 * MiB, mountpoint="/srv")),
    ])


@pytest.mark.parametrize("disk, how", [
    (simple_disk("msdos", used_mib=300), "shrink 1"),
    (simple_disk("gpt", size_mib=8192, used_mib=3000), "shrink 1"),
    (_logical_layout(), "shrink 6"),
    (make_disk("gpt", 4096 * MiB, [Partition(number=1, start=MiB, end=1025 * MiB, name="root",
                                             fs=ext4(1024 * MiB, 1000 * MiB))]), "free"),
], ids=["msdos primary", "gpt", "msdos last logical, btrfs mounted", "gpt free space"])
def test_the_largest_store_certainly_possible_is_planned(disk, how):
    room, found = room_for(disk, "auto", None)
    assert found == how and room >= 64 * MiB
    plan = plan_present(disk, room)
    assert plan.store.size >= room
    assert_sane(plan.after)
