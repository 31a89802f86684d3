# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure planner behind partition_space: where the store goes and what must shrink for it.

It works on the immutable model (``disk.model``) and never touches a device, so the
rules (alignment, msdos slots, headroom, no gaps) are unit-tested without root.
All positions are byte offsets; a partition spans ``[start, end)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import align_down, align_up, human
from ansible_collections.inplace.migration.plugins.module_utils.disk.model import (
    ALIGNMENT, DEFAULT_HEADROOM_MIN, FS_GRAIN, MSDOS_FIRST_LOGICAL, MSDOS_PRIMARY_SLOTS, OFFLINE_SHRINK_ONLY,
    SHRINKABLE, GROWABLE, CreateFilesystem, CreatePartition, DeletePartition, GrowFilesystem, Partition, Plan,
    ResizePartition, ShrinkFilesystem, free_gaps, replace_partition,
)


def default_headroom(used):
    return max((used or 0) // 10, DEFAULT_HEADROOM_MIN)


def find_store(disk, label):
    """The partition that is the store: its filesystem label or GPT name is ``label``."""
    found = [p for p in disk.data_partitions if (p.fs and p.fs.label == label) or p.name == label]
    if len(found) > 1:
        raise MigrationError("%s has %d partitions labelled %s (%s); keep one and relabel the others." % (
            disk.path, len(found), label, ", ".join(p.path for p in found)))
    return found[0] if found else None


@dataclass(frozen=True)
class _Region:
    """Unallocated space where one new partition of ``kind`` may go."""
    start: int
    end: int
    kind: str


def _regions(disk):
    """Where a new partition may go, primaries first (msdos: primary while a slot is free)."""
    if disk.label == "gpt":
        if len(disk.partitions) >= disk.max_partitions:
            return []
        return [_Region(s, e, "primary") for s, e in free_gaps(disk.partitions, disk.first_usable, disk.usable_end)]
    top = disk.top_level
    regions = []
    if len(top) < MSDOS_PRIMARY_SLOTS:
        regions += [_Region(s, e, "primary") for s, e in free_gaps(top, disk.first_usable, disk.usable_end)]
    extended = disk.extended
    if extended is not None:
        # A new logical goes after the last one: inserting it earlier would renumber
        # the logical partitions behind it, and the old system may name them by number.
        logicals = disk.logicals
        tail = logicals[-1].end if logicals else extended.start
        following = [p.start for p in top if p.start >= extended.end]
        limit = min(following) if following else disk.usable_end
        regions.append(_Region(tail, max(limit, extended.end), "logical"))
    return regions


def _new_number(disk, kind):
    used = {p.number for p in disk.partitions}
    if kind == "logical":
        return max([p.number for p in disk.logicals] + [MSDOS_FIRST_LOGICAL - 1]) + 1
    limit = MSDOS_PRIMARY_SLOTS if disk.label == "msdos" else disk.max_partitions
    for number in range(1, limit + 1):
        if number not in used:
            return number
    raise MigrationError("%s has no free partition entry left." % disk.path)


def _placement_start(region, sector_size):
    # A logical partition is preceded by its extended boot record.
    start = region.start + (sector_size if region.kind == "logical" else 0)
    return max(align_up(start, ALIGNMENT), ALIGNMENT)


def _fits(region, store_bytes, sector_size):
    return _placement_start(region, sector_size) + store_bytes <= region.end


def _add_store(plan, region, store_bytes, label, fstype):
    disk = plan.after
    start = _placement_start(region, disk.sector_size)
    end = start + store_bytes
    extended = disk.extended
    if region.kind == "logical" and end > extended.end:
        plan.add(ResizePartition(extended.number, extended.start, end))
    number = _new_number(plan.after, region.kind)
    plan.add(CreatePartition(number, start, end, region.kind, label if disk.label == "gpt" else None))
    plan.add(CreateFilesystem(number, fstype, label))
    plan.store = plan.after.partition(number)


def _check_labels(disk):
    if disk.label not in ("msdos", "gpt"):
        raise MigrationError("%s has a %s partition table; only msdos and gpt are supported." % (
            disk.path, disk.label))


@dataclass(frozen=True)
class _ShrinkOption:
    part: Partition
    new_end: Optional[int]  # None when the store cannot be made room for by shrinking this partition
    can_give: int  # bytes of partition the filesystem could give up
    room: int  # largest store this partition could make room for
    reason: Optional[str] = None


def _shrink_option(disk, part, store_bytes, min_free):
    fs = part.fs
    if part.kind == "extended":
        return _ShrinkOption(part, None, 0, 0, "%s is an extended partition" % part.path)
    if fs is None or fs.type is None:
        return _ShrinkOption(part, None, 0, 0, "%s holds no filesystem this module knows" % part.path)
    if fs.type not in SHRINKABLE:
        return _ShrinkOption(part, None, 0, 0, "%s holds %s, which cannot be shrunk" % (part.path, fs.type))
    if fs.min_size is None or fs.size is None:
        return _ShrinkOption(part, None, 0, 0, "the size of the %s filesystem on %s is unknown" % (fs.type, part.path))
    if fs.size > part.size:
        return _ShrinkOption(part, None, 0, 0, "the filesystem on %s is larger than its partition" % part.path)
    headroom = default_headroom(fs.used) if min_free is None else min_free
    lowest_end = align_up(part.start + align_up(fs.min_size + headroom, FS_GRAIN) + FS_GRAIN, ALIGNMENT)
    can_give = max(0, part.end - lowest_end)
    if can_give == 0:
        return _ShrinkOption(part, None, 0, 0, "%s has no space to give: its filesystem needs %s plus %s headroom" % (
            part.path, human(fs.min_size), human(headroom)))
    shrunk = replace_partition(disk, replace(part, end=lowest_end))
    regions = [r for r in _regions(shrunk) if r.start == lowest_end]
    if not regions:
        return _ShrinkOption(part, None, can_give, 0, _no_region_reason(disk, part))
    region = regions[0]
    ebr = ALIGNMENT if region.kind == "logical" else 0
    room = max(0, align_down(region.end, ALIGNMENT) - lowest_end - ebr)
    new_end = min(align_down(region.end - store_bytes, ALIGNMENT) - ebr, part.end)
    if new_end < lowest_end:
        return _ShrinkOption(part, None, can_give, room, None)
    return _ShrinkOption(part, new_end, can_give, room, None)


def _no_region_reason(disk, part):
    if part.kind == "logical":
        return "%s is not the last logical partition, and a store behind it would renumber the ones after it" % part.path
    return "space freed at the end of %s could not hold a new partition: all four msdos primary slots are taken" % part.path


def refuse_full_msdos(disk):
    if disk.label == "msdos" and len(disk.top_level) >= MSDOS_PRIMARY_SLOTS and disk.extended is None:
        raise MigrationError(
            "%s has an msdos label with four primary partitions and no extended partition, so no store "
            "partition can be added; delete one partition or convert the disk to GPT first." % disk.path)


def plan_present(disk, store_bytes, label="INPLACE-STORE", fstype="ext4", shrink="auto", min_free=None):
    """Plan a store partition of ``store_bytes`` (a whole number of MiB) on ``disk``.

    ``shrink`` is ``auto``, ``none`` or a partition (number or device path).
    """
    _check_labels(disk)
    if store_bytes % ALIGNMENT or store_bytes <= 0:
        raise MigrationError("the store partition size must be a positive whole number of MiB, not %d." % store_bytes)
    plan = Plan(before=disk, after=disk)
    store = find_store(disk, label)
    if store is not None:
        if store.size < store_bytes:
            raise MigrationError(
                "%s already exists as %s with %s, which is too small: %s is needed; remove it with "
                "state=absent, or ask for a size that fits." % (label, store.path, human(store.size), human(store_bytes)))
        plan.store = store
        if store.fs is None or store.fs.type is None:
            # The partition was made (a GPT name carries the label) but never formatted.
            plan.add(CreateFilesystem(store.number, fstype, label))
            plan.store = plan.after.partition(store.number)
        return plan

    for region in sorted(_regions(disk), key=lambda r: (r.kind != "primary", r.start)):
        if _fits(region, store_bytes, disk.sector_size):
            _add_store(plan, region, store_bytes, label, fstype)
            plan.notes.append("unallocated space suffices; no partition is shrunk")
            return plan

    refuse_full_msdos(disk)
    free = max([align_down(r.end, ALIGNMENT) - _placement_start(r, disk.sector_size) for r in _regions(disk)] + [0])
    if shrink == "none":
        raise MigrationError(
            "Not enough unallocated space on %s: the store needs %s and the largest free region holds %s; "
            "let the module shrink a partition (shrink: auto or a partition)." % (
                disk.path, human(store_bytes), human(free)))

    if shrink == "auto":
        candidates = list(disk.data_partitions)
    else:
        named = disk.find(shrink)
        if named is None:
            raise MigrationError("shrink=%s names no partition on %s (it has %s); name one of its partitions, or "
                                 "use shrink=auto." % (
                                     shrink, disk.path, ", ".join(p.path for p in disk.partitions) or "none"))
        candidates = [named]

    options = [_shrink_option(disk, part, store_bytes, min_free) for part in candidates]
    feasible = [o for o in options if o.new_end is not None]
    offline_ok = [o for o in feasible if not (o.part.fstype in OFFLINE_SHRINK_ONLY and o.part.fs.mountpoint)]
    if offline_ok:
        choice = max(offline_ok, key=lambda o: (o.can_give, -o.part.start))
        _add_shrink(plan, choice.part, choice.new_end)
        region = [r for r in _regions(plan.after) if r.start == choice.new_end][0]
        _add_store(plan, region, store_bytes, label, fstype)
        return plan
    if feasible:
        part = feasible[0].part
        raise MigrationError(
            "%s (%s) is mounted at %s and ext filesystems shrink only offline; run this from the maintenance "
            "environment, where nothing of the old system is mounted." % (part.path, part.fstype, part.fs.mountpoint))
    if shrink != "auto" and options[0].reason:
        raise MigrationError("Cannot make room for the store on %s: %s; use shrink=none with unallocated space, "
                             "or name another partition." % (disk.path, options[0].reason))
    most = max([o.room for o in options] + [free])
    reasons = "; ".join(o.reason for o in options if o.reason)
    raise MigrationError(
        "Not enough reclaimable space on %s: the store needs %s, and at most %s can be had%s; free space by "
        "deleting files on the disk's filesystems, or ask for a smaller store." % (
            disk.path, human(store_bytes), human(most), " (%s)" % reasons if reasons else ""))


def _add_shrink(plan, part, new_end):
    plan.add(ShrinkFilesystem(part.number, align_down(new_end - part.start, FS_GRAIN)))
    plan.add(ResizePartition(part.number, part.start, new_end))


def plan_absent(disk, label="INPLACE-STORE", number=None):
    """Plan the removal of the store (by ``label``, or partition ``number``) and the growth of the partition before it.

    A wiped store has no label left: cleanup names it by the number of the partition its PARTUUID is on.
    """
    _check_labels(disk)
    plan = Plan(before=disk, after=disk)
    store = find_store(disk, label) if number is None else disk.partition(number)
    if store is None:
        return plan
    plan.store = store
    plan.add(DeletePartition(store.number))
    extended = plan.after.extended
    if store.kind == "logical" and not plan.after.logicals:
        plan.add(DeletePartition(extended.number))
    previous = [p for p in plan.after.data_partitions if p.end <= store.start]
    if not previous:
        plan.notes.append("no partition precedes the store; its space is left unallocated")
        return plan
    return _grow_over_free_space(plan, max(previous, key=lambda p: p.end))


def plan_grow(disk, number):
    """Plan growing partition ``number`` over the unallocated space behind it (a removal cut off after its delete)."""
    _check_labels(disk)
    return _grow_over_free_space(Plan(before=disk, after=disk), disk.partition(number))


def _grow_over_free_space(plan, prev):
    new_end = align_down(_growth_limit(plan, prev), ALIGNMENT)
    if new_end <= prev.end:
        return plan
    if prev.fstype not in GROWABLE:
        plan.notes.append("%s is left as it is: its content (%s) cannot be grown, so %s stays unallocated" % (
            prev.path, prev.fstype or "no filesystem", human(new_end - prev.end)))
        return plan
    plan.add(ResizePartition(prev.number, prev.start, new_end))
    plan.add(GrowFilesystem(prev.number))
    return plan


def _growth_limit(plan, prev):
    disk = plan.after
    extended = disk.extended
    if prev.kind == "logical":
        later = [p.start for p in disk.logicals if p.start >= prev.end]
        if later:
            # The next logical's extended boot record sits in the aligned gap before it.
            return align_down(min(later) - disk.sector_size, ALIGNMENT)
        # The last logical: its extended partition grows into the space freed behind it.
        behind = [p.start for p in disk.top_level if p.start >= extended.end]
        new_end = align_down(min(behind) if behind else disk.usable_end, ALIGNMENT)
        if new_end > extended.end:
            plan.add(ResizePartition(extended.number, extended.start, new_end))
            return new_end
        return extended.end
    following = [p for p in disk.top_level if p.start >= prev.end]
    if not following:
        return disk.usable_end
    nxt = min(following, key=lambda p: p.start)
    if nxt.kind == "extended" and disk.logicals:
        first = disk.logicals[0]
        new_start = align_down(first.start - disk.sector_size, ALIGNMENT)
        if new_start > nxt.start:
            plan.add(ResizePartition(nxt.number, new_start, nxt.end))
            return new_start
    return nxt.start
