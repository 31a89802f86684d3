# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The disk model partition_space plans on: disks, partitions, filesystems, the steps that change them.

Everything here works on immutable values and never touches a device; the planner
(``disk.planner``) and the executor (``disk.space``) share it.
All positions are byte offsets; a partition spans ``[start, end)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

from ansible_collections.inplace.migration.plugins.module_utils.common.units import (
    MiB, align_down, human,
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
        return partition_name(self.path, number)

    def with_partitions(self, partitions):
        return replace(self, partitions=tuple(partitions))

    def find(self, spec):
        """A partition named by device path or number, or None."""
        spec = str(spec)
        for part in self.partitions:
            if spec in (str(part.number), part.path, self.partition_path(part.number)):
                return part
        return None


def partition_name(disk, number):
    """The kernel's name for partition ``number`` of ``disk`` (a name or a /dev path), as the kernel makes it.

    A ``p`` separates the number when the disk's name ends in a digit: nvme0n1 -> nvme0n1p2,
    mmcblk0 -> mmcblk0p1, loop0 -> loop0p1, but sda -> sda2 (``add_partition`` in the kernel's block/partitions/core.c).
    For a partition that does not exist yet only; an existing one is asked of the kernel
    (``devices.partition_node``), and none is ever found again by a name recorded in another boot.
    """
    separator = "p" if disk[-1:].isdigit() else ""
    return "%s%s%d" % (disk, separator, number)


# Actions: each knows how it changes the model, so the planner's "after" layout is
# what the executor is then held to.

@dataclass(frozen=True)
class ShrinkFilesystem:
    number: int
    size: int

    def apply(self, disk):
        return with_filesystem_size(disk, self.number, self.size)

    def describe(self, disk):
        part = disk.partition(self.number)
        return "shrink the %s filesystem on %s from %s to %s" % (
            part.fstype, part.path, human(part.fs.size), human(self.size))


@dataclass(frozen=True)
class _Span:
    """A step that puts partition ``number`` at ``[start, end)``."""
    number: int
    start: int
    end: int

    @property
    def size(self):
        return self.end - self.start


@dataclass(frozen=True)
class ResizePartition(_Span):
    def apply(self, disk):
        return replace_partition(disk, replace(disk.partition(self.number), start=self.start, end=self.end))

    def describe(self, disk):
        part = disk.partition(self.number)
        verb = "grow" if self.size > part.size else "shrink"
        return "%s partition %s (%s) from %s to %s" % (verb, part.path, part.kind, human(part.size), human(self.size))


@dataclass(frozen=True)
class CreatePartition(_Span):
    kind: str
    name: Optional[str] = None

    def apply(self, disk):
        created = Partition(number=self.number, start=self.start, end=self.end, kind=self.kind,
                            name=self.name, path=disk.partition_path(self.number))
        return disk.with_partitions(disk.partitions + (created,))

    def describe(self, disk):
        return "create %s partition %s of %s at %s" % (
            self.kind, disk.partition_path(self.number), human(self.size), human(self.start))


@dataclass(frozen=True)
class CreateFilesystem:
    number: int
    fstype: str
    label: str

    def apply(self, disk):
        part = disk.partition(self.number)
        return replace_partition(disk, replace(part, fs=Filesystem(
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
        return with_filesystem_size(disk, self.number, align_down(disk.partition(self.number).size, FS_GRAIN))

    def describe(self, disk):
        part = disk.partition(self.number)
        return "grow the %s filesystem on %s to fill its partition" % (part.fstype, part.path)


def replace_partition(disk, new):
    return disk.with_partitions(new if p.number == new.number else p for p in disk.partitions)


def with_filesystem_size(disk, number, size):
    part = disk.partition(number)
    return replace_partition(disk, replace(part, fs=replace(part.fs, size=size)))


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


def free_gaps(partitions, start, end):
    cursor = start
    for part in sorted(partitions, key=lambda p: p.start):
        if part.start > cursor:
            yield cursor, part.start
        cursor = max(cursor, part.end)
    if end > cursor:
        yield cursor, end


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
    entries += [(s, (s, e)) for s, e in free_gaps(disk.top_level, disk.first_usable, disk.usable_end)
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
