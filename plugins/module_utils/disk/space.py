# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""partition_space's work: read the disk, plan, then carry the plan out step by step.

After every step the disk is read again and held to the plan's model of that
step, and the filesystem that changed is checked, so a surprise stops the run
before the next step builds on it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace

from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk import model as _model
from ansible_collections.inplace.migration.plugins.module_utils.disk import planner as _planner
from ansible_collections.inplace.migration.plugins.module_utils.disk import fs as _fs
from ansible_collections.inplace.migration.plugins.module_utils.disk import parted as _parted
from ansible_collections.inplace.migration.plugins.module_utils.disk import table as _table
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import MiB, align_up, human

TABLE_STEPS = (_model.ResizePartition, _model.CreatePartition, _model.DeletePartition)


def _shape(disk):
    return sorted((p.number, p.kind, p.start, p.end) for p in disk.partitions)


def _store_result(disk, store, usable=None):
    if store is None:
        return None
    current = disk.partition(store.number) or store
    fs = current.fs
    return {
        "device": current.path or disk.partition_path(current.number),
        "number": current.number,
        "kind": current.kind,
        "start": current.start,
        "size": current.size,
        "fstype": fs.type if fs else None,
        "label": fs.label if fs else current.name,
        "uuid": fs.uuid if fs else None,
        "usable_bytes": usable,
    }


def _result(plan, after, store, usable=None):
    return {
        "changed": bool(plan.actions),
        "actions": plan.descriptions,
        "notes": plan.notes,
        "store": _store_result(after, store, usable),
        "layout_before": _model.layout(plan.before),
        "layout_after": _model.layout(after),
        "diff": {"before": _model.render(plan.before), "after": _model.render(after),
                 "before_header": plan.before.path, "after_header": plan.before.path},
    }


class PartitionSpace:
    def __init__(self, runner, disk, label, disk_identity=None):
        self.runner = runner
        self.path = disk
        self.label = label
        # The disk's identity recorded when the migration was planned: a disk that is not that one
        # (a kernel name that now names a stick or a second disk) is refused before any change.
        self.disk_identity = disk_identity

    def check_identity(self, refused):
        if self.disk_identity:
            _devices.Scan(self.runner, []).check_disk(self.path, self.disk_identity, refused)

    def read(self):
        return _table.read_disk(self.runner, self.path)

    def present(self, size, shrink, min_free, fstype, check_mode, plan_offline=False):
        disk = self.read()
        self.check_identity("making the store")
        if plan_offline:
            # Planned from the old system for the maintenance environment, where none of it is mounted.
            disk = disk.with_partitions(
                replace(p, fs=replace(p.fs, mountpoint=None)) if p.fs else p for p in disk.partitions)
        store_bytes = store_partition_bytes(self.runner, fstype, size)
        if shrink.startswith("/"):
            shrink = os.path.realpath(shrink)  # a /dev/disk/by-* link names the partition by its kernel name now
        plan = _planner.plan_present(disk, store_bytes, label=self.label, fstype=fstype, shrink=shrink,
                                     min_free=min_free)
        if check_mode or not plan.actions:
            return _result(plan, plan.after, plan.store)
        after = self.execute(plan)
        usable = usable_bytes(self.runner, after.partition(plan.store.number).path)
        if usable < size:
            raise MigrationError("the new store holds %s, less than the %s asked for." % (human(usable), human(size)),
                                 **_result(plan, after, plan.store))
        return _result(plan, after, plan.store, usable)

    def absent(self, check_mode, number=None):
        disk = self.read()
        self.check_identity("removing the store")
        store = _planner.find_store(disk, self.label) if number is None else disk.partition(number)
        if store is not None and store.fs is not None and store.fs.mountpoint:
            raise MigrationError("the store %s is mounted at %s; unmount it before removing it." % (
                store.path, store.fs.mountpoint))
        plan = _planner.plan_absent(disk, label=self.label, number=number)
        if check_mode or not plan.actions:
            return _result(plan, plan.after, None)
        after = self.execute(plan)
        return _result(plan, after, None)

    def grow(self, number):
        """Grow partition ``number``, and its filesystem, over the unallocated space behind it."""
        plan = _planner.plan_grow(self.read(), number)
        after = self.execute(plan) if plan.actions else plan.after
        return _result(plan, after, None)

    def execute(self, plan):
        """Carry out ``plan`` step by step; return the disk as finally read."""
        expected = plan.before
        done = []
        current = plan.before
        try:
            for step, text in plan.actions:
                self._apply(step, current)
                expected = step.apply(expected)
                current = self._verify(step, expected)
                done.append(text)
        except Exception as error:  # pylint: disable=broad-except
            # Whatever went wrong, the user must learn which steps already changed the disk.
            partial = {"actions_done": done, "layout_before": _model.layout(plan.before)}
            try:
                partial["layout_now"] = _model.layout(self.read())
            except Exception:  # pylint: disable=broad-except
                pass
            raise MigrationError("%s (done before this: %s)" % (error, "; ".join(done) or "nothing"), **partial)
        return current

    def _apply(self, step, current):
        if isinstance(step, TABLE_STEPS):
            if isinstance(step, _model.DeletePartition):
                doomed = current.partition(step.number)
                if doomed.kind != "extended" and doomed.fs is not None:
                    # Leave no stale store signature for blkid to find in the space later.
                    self.runner.run(["wipefs", "-a", "-q", doomed.path])
            _parted.apply_table_step(current, step)
            return
        part = current.partition(step.number)
        if isinstance(step, _model.ShrinkFilesystem):
            _fs.kind(part.fstype).shrink(self.runner, part.path, step.size, part.fs.mountpoint)
        elif isinstance(step, _model.GrowFilesystem):
            _fs.kind(part.fstype).grow(self.runner, part.path, part.fs.mountpoint)
        elif isinstance(step, _model.CreateFilesystem):
            _fs.make(self.runner, part.path, step.fstype, step.label)
        else:
            raise TypeError("unknown step %r" % (step,))

    def _verify(self, step, expected):
        actual = self.read()
        _parted.wait_for_nodes(self.runner, actual)
        if _shape(actual) != _shape(expected):
            raise MigrationError("after this step the partition table of %s is not as planned (expected %s, found "
                                 "%s); stopping." % (self.path, _shape(expected), _shape(actual)))
        for part in actual.data_partitions:
            fs = part.fs
            if fs is not None and fs.size is not None and fs.size > part.size:
                raise MigrationError("the %s filesystem on %s (%s) is larger than its partition (%s); stopping." % (
                    fs.type, part.path, human(fs.size), human(part.size)))
        number = getattr(step, "number", None)
        part = actual.partition(number)
        if part is not None and part.fs is not None and not part.fs.mountpoint and part.kind != "extended":
            _fs.kind(part.fstype).check(self.runner, part.path)
        if isinstance(step, _model.ShrinkFilesystem) and part.fs.size != step.size:
            raise MigrationError("the filesystem on %s is %s after shrinking, not %s; stopping." % (
                part.path, human(part.fs.size), human(step.size)))
        return actual


def usable_bytes(runner, device):
    """Bytes a freshly made ext filesystem on ``device`` (a device or an image file) takes for data.

    The kernel keeps min(2 %, 4096 blocks) in reserve for delayed allocation and
    reports the rest as available, so that is what counts.
    """
    header = _fs.key_values(runner.output(["dumpe2fs", "-h", device]))
    block = int(header["Block size"])
    count = int(header["Block count"])
    free = int(header["Free blocks"]) - int(header.get("Reserved block count", "0"))
    return (free - min(count // 50, 4096)) * block


def store_partition_bytes(runner, fstype, usable):
    """The smallest partition (whole MiB) whose fresh ``fstype`` filesystem holds ``usable`` bytes.

    Measured, not guessed: mke2fs's layout depends on its version and mke2fs.conf,
    so each candidate size is formatted as a sparse file on this host and read back.
    """
    if fstype not in ("ext2", "ext3", "ext4"):
        raise MigrationError("a store can be formatted as ext2, ext3 or ext4, not %s." % fstype)
    directory = tempfile.mkdtemp(prefix="inplace-size-")
    image = os.path.join(directory, "probe.img")
    try:
        def measure(size):
            with open(image, "wb") as handle:
                handle.truncate(size)
            runner.run(["mkfs.%s" % fstype, "-F", "-q", "-m", "0",
                        "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", image])
            return usable_bytes(runner, image)

        size = align_up(usable, MiB)
        for _attempt in range(12):
            got = measure(size)
            if got >= usable:
                return size
            # Overhead is nearly proportional to size: scale the shortfall, then align up.
            size = align_up(size + (usable - got) * size // max(got, 1) + 1, MiB)
        raise MigrationError("could not find a partition size that holds %s of %s; try a larger size." % (
            human(usable), fstype))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
