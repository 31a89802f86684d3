# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk model and the pure planner behind partition_space.

Everything here works on immutable values and never touches a device, so the
rules (alignment, msdos slots, headroom, no gaps) are unit-tested without root.
All positions are byte offsets; a partition spans ``[start, end)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

from ansible_collections.inplace.migration.plugins.module_utils._errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils._units import (
    MiB, align_down, align_up, human,
)

ALIGNMENT = MiB
# Filesystem sizes are kept in whole 4 KiB units, a multiple of every block size we shrink.
FS_GRAIN = 4096
DEFAULT_HEADROOM_MIN = 256 * MiB

SHRINKABLE = ("ext2", "ext3", "ext4", "btrfs")
OFFLINE_SHRINK_ONLY = ("ext2", "ext3", "ext4")
GROWABLE = ("ext2", "ext3", "ext4", "btrfs", "xfs")
STORE_FSTYPES = ("ext4", "ext3", "ext2")
MSDOS_PRIMARY_SLOTS = 4
MSDOS_FIRST_LOGICAL = 5


@dataclass(frozen=True)
class Filesystem:
    type: Optional[str]
    uuid: Optional[str] = None
    label: Optional[str] = None
    size: Optional[int] = None
    used: Optional[int] = None
    # Smallest size the filesystem can be shrunk to, as its own tool reports it.
    min_size: Optional[int] = None
    mountpoint: Optional[str] = None


@dataclass(frozen=True)
class Partition:
    number: int
    start: int
    end: int
    kind: str = "primary"  # primary, extended or logical (GPT partitions are all primary)
    name: Optional[str] = None  # GPT partition name
    fs: Optional[Filesystem] = None
    path: Optional[str] = None

    @property
    def size(self):
        return self.end - self.start

    @property
    def fstype(self):
        return self.fs.type if self.fs else None


@dataclass(frozen=True)
class Disk:
    path: str
    size: int
    sector_size: int
    label: str  # msdos or gpt
    partitions: Tuple[Partition, ...] = ()
    first_usable: int = 0
    usable_end: int = 0  # exclusive
    max_partitions: int = 128

    def __post_init__(self):
        object.__setattr__(self, "partitions", tuple(sorted(self.partitions, key=lambda p: (p.start, p.number))))

    def partition(self, number):
        for part in self.partitions:
            if part.number == number:
                return part
        return None

    @property
    def extended(self):
        for part in self.partitions:
            if part.kind == "extended":
                return part
        return None

    @property
    def logicals(self):
        return [p for p in self.partitions if p.kind == "logical"]

    @property
    def top_level(self):
        """Partitions that sit directly on the disk: primaries and the extended one."""
        return [p for p in self.partitions if p.kind != "logical"]

    @property
    def data_partitions(self):
        return [p for p in self.partitions if p.kind != "extended"]

    def partition_path(self, number):
        separator = "p" if self.path[-1:].isdigit() else ""
        return "%s%s%d" % (self.path, separator, number)

    def with_partitions(self, partitions):
        return replace(self, partitions=tuple(partitions))

    def find(self, spec):
        """A partition named by device path or number, or None."""
        spec = str(spec)
        for part in self.partitions:
            if spec in (str(part.number), part.path, self.partition_path(part.number)):
                return part
        return None


# Actions: each knows how it changes the model, so the planner's "after" layout is
# what the executor is then held to.

@dataclass(frozen=True)
class ShrinkFilesystem:
    number: int
    size: int

    def apply(self, disk):
        part = disk.partition(self.number)
        return _replace_partition(disk, replace(part, fs=replace(part.fs, size=self.size)))

    def describe(self, disk):
        part = disk.partition(self.number)
        return "shrink the %s filesystem on %s from %s to %s" % (
            part.fstype, part.path, human(part.fs.size), human(self.size))


@dataclass(frozen=True)
class ResizePartition:
    number: int
    start: int
    end: int

    def apply(self, disk):
        part = disk.partition(self.number)
        return _replace_partition(disk, replace(part, start=self.start, end=self.end))

    def describe(self, disk):
        part = disk.partition(self.number)
        verb = "grow" if self.end - self.start > part.size else "shrink"
        return "%s partition %s (%s) from %s to %s" % (
            verb, part.path, part.kind, human(part.size), human(self.end - self.start))


@dataclass(frozen=True)
class CreatePartition:
    number: int
    start: int
    end: int
    kind: str
    name: Optional[str] = None

    def apply(self, disk):
        created = Partition(number=self.number, start=self.start, end=self.end, kind=self.kind,
                            name=self.name, path=disk.partition_path(self.number))
        return disk.with_partitions(disk.partitions + (created,))

    def describe(self, disk):
        return "create %s partition %s of %s at %s" % (
            self.kind, disk.partition_path(self.number), human(self.end - self.start), human(self.start))


@dataclass(frozen=True)
class CreateFilesystem:
    number: int
    fstype: str
    label: str

    def apply(self, disk):
        part = disk.partition(self.number)
        return _replace_partition(disk, replace(part, fs=Filesystem(
            type=self.fstype, label=self.label, size=part.size, used=0)))

    def describe(self, disk):
        return "format %s as %s labelled %s" % (disk.partition_path(self.number), self.fstype, self.label)


@dataclass(frozen=True)
class DeletePartition:
    number: int

    def apply(self, disk):
        return disk.with_partitions(p for p in disk.partitions if p.number != self.number)

    def describe(self, disk):
        part = disk.partition(self.number)
        return "delete %s partition %s (%s)" % (part.kind, part.path, human(part.size))


@dataclass(frozen=True)
class GrowFilesystem:
    number: int

    def apply(self, disk):
        part = disk.partition(self.number)
        return _replace_partition(disk, replace(part, fs=replace(part.fs, size=align_down(part.size, FS_GRAIN))))

    def describe(self, disk):
        part = disk.partition(self.number)
        return "grow the %s filesystem on %s to fill its partition" % (part.fstype, part.path)


def _replace_partition(disk, new):
    return disk.with_partitions(new if p.number == new.number else p for p in disk.partitions)


@dataclass
class Plan:
    before: Disk
    after: Disk
    actions: list = field(default_factory=list)
    store: Optional[Partition] = None
    notes: list = field(default_factory=list)

    def add(self, action):
        self.actions.append((action, action.describe(self.after)))
        self.after = action.apply(self.after)

    @property
    def steps(self):
        return [action for action, unused_text in self.actions]

    @property
    def descriptions(self):
        return [text for unused_action, text in self.actions]


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


def _gaps(partitions, start, end):
    cursor = start
    for part in sorted(partitions, key=lambda p: p.start):
        if part.start > cursor:
            yield cursor, part.start
        cursor = max(cursor, part.end)
    if end > cursor:
        yield cursor, end


def _regions(disk):
    """Where a new partition may go, primaries first (msdos: primary while a slot is free)."""
    if disk.label == "gpt":
        if len(disk.partitions) >= disk.max_partitions:
            return []
        return [_Region(s, e, "primary") for s, e in _gaps(disk.partitions, disk.first_usable, disk.usable_end)]
    top = disk.top_level
    regions = []
    if len(top) < MSDOS_PRIMARY_SLOTS:
        regions += [_Region(s, e, "primary") for s, e in _gaps(top, disk.first_usable, disk.usable_end)]
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
    shrunk = _replace_partition(disk, replace(part, end=lowest_end))
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


def _refuse_full_msdos(disk):
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
                "%s already exists as %s with %s, which is too small: %s is needed. Remove it with "
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

    _refuse_full_msdos(disk)
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
            raise MigrationError("shrink=%s names no partition on %s (it has %s)." % (
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
        "Not enough reclaimable space on %s: the store needs %s, and at most %s can be had%s." % (
            disk.path, human(store_bytes), human(most), " (%s)" % reasons if reasons else ""))


def _add_shrink(plan, part, new_end):
    plan.add(ShrinkFilesystem(part.number, align_down(new_end - part.start, FS_GRAIN)))
    plan.add(ResizePartition(part.number, part.start, new_end))


def plan_absent(disk, label="INPLACE-STORE"):
    """Plan the removal of the store and the growth of the partition before it."""
    _check_labels(disk)
    plan = Plan(before=disk, after=disk)
    store = find_store(disk, label)
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
    prev = max(previous, key=lambda p: p.end)
    limit = _growth_limit(plan, prev)
    new_end = align_down(limit, ALIGNMENT)
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


def layout(disk):
    """The disk as a list of plain dicts, for module results."""
    return {
        "device": disk.path,
        "table": disk.label,
        "size": disk.size,
        "sector_size": disk.sector_size,
        "partitions": [{
            "number": p.number,
            "device": p.path or disk.partition_path(p.number),
            "kind": p.kind,
            "start": p.start,
            "end": p.end,
            "size": p.size,
            "name": p.name,
            "fstype": p.fstype,
            "fs_label": p.fs.label if p.fs else None,
            "fs_uuid": p.fs.uuid if p.fs else None,
            "fs_size": p.fs.size if p.fs else None,
            "mountpoint": p.fs.mountpoint if p.fs else None,
        } for p in disk.partitions],
    }


def render(disk):
    """The disk as text, one line per partition and free region, for --diff."""
    lines = ["%s: %s, %s (%d bytes)" % (disk.path, disk.label, human(disk.size), disk.size),
             "%-4s %-10s %-12s %-12s %-10s %-8s %-7s %s" % (
                 "#", "type", "start MiB", "end MiB", "size", "fs", "fs size", "label")]
    entries = [(p.start, p) for p in disk.partitions]
    entries += [(s, (s, e)) for s, e in _gaps(disk.top_level, disk.first_usable, disk.usable_end)
                if e - s >= ALIGNMENT]
    for unused_start, entry in sorted(entries, key=lambda item: item[0]):
        if isinstance(entry, tuple):
            start, end = entry
            lines.append("%-4s %-10s %-12s %-12s %-10s" % (
                "", "free", _mib(start), _mib(end), human(end - start)))
            continue
        p = entry
        fs = p.fs
        lines.append("%-4s %-10s %-12s %-12s %-10s %-8s %-7s %s" % (
            p.number, p.kind, _mib(p.start), _mib(p.end), human(p.size), (fs.type if fs else None) or "-",
            human(fs.size) if fs and fs.size else "-", (fs.label if fs else None) or p.name or ""))
    return "\n".join(lines) + "\n"


def _mib(value):
    return ("%.2f" % (value / MiB)).rstrip("0").rstrip(".")
