# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""partition_space's work: read the disk, plan, then carry the plan out step by step.

After every step the disk is read again and held to the plan's model of that
step, and the filesystem that changed is checked, so a surprise stops the run
before the next step builds on it.
"""

from __future__ import annotations

from dataclasses import replace

from ansible_collections.inplace.migration.plugins.module_utils import _disk, _fs, _parted
from ansible_collections.inplace.migration.plugins.module_utils._errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils._units import human

TABLE_STEPS = (_disk.ResizePartition, _disk.CreatePartition, _disk.DeletePartition)


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
        "layout_before": _disk.layout(plan.before),
        "layout_after": _disk.layout(after),
        "diff": {"before": _disk.render(plan.before), "after": _disk.render(after),
                 "before_header": plan.before.path, "after_header": plan.before.path},
    }


class PartitionSpace:
    def __init__(self, runner, disk, label):
        self.runner = runner
        self.path = disk
        self.label = label

    def read(self):
        return _parted.read_disk(self.runner, self.path)

    def present(self, size, shrink, min_free, fstype, check_mode, plan_offline=False):
        disk = self.read()
        if plan_offline:
            # Planned from the old system for the maintenance environment, where none of it is mounted.
            disk = disk.with_partitions(
                replace(p, fs=replace(p.fs, mountpoint=None)) if p.fs else p for p in disk.partitions)
        store_bytes = _fs.store_partition_bytes(self.runner, fstype, size)
        plan = _disk.plan_present(disk, store_bytes, label=self.label, fstype=fstype, shrink=shrink,
                                  min_free=min_free)
        if check_mode or not plan.actions:
            return _result(plan, plan.after, plan.store)
        after = self.execute(plan)
        usable = _fs.usable_bytes(self.runner, after.partition(plan.store.number).path)
        if usable < size:
            raise MigrationError("the new store holds %s, less than the %s asked for." % (human(usable), human(size)),
                                 **_result(plan, after, plan.store))
        return _result(plan, after, plan.store, usable)

    def absent(self, check_mode):
        disk = self.read()
        store = _disk.find_store(disk, self.label)
        if store is not None and store.fs is not None and store.fs.mountpoint:
            raise MigrationError("the store %s is mounted at %s; unmount it before removing it." % (
                store.path, store.fs.mountpoint))
        plan = _disk.plan_absent(disk, label=self.label)
        if check_mode or not plan.actions:
            return _result(plan, plan.after, None)
        after = self.execute(plan)
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
            partial = {"actions_done": done, "layout_before": _disk.layout(plan.before)}
            try:
                partial["layout_now"] = _disk.layout(self.read())
            except Exception:  # pylint: disable=broad-except
                pass
            raise MigrationError("%s (done before this: %s)" % (error, "; ".join(done) or "nothing"), **partial)
        return current

    def _apply(self, step, current):
        if isinstance(step, TABLE_STEPS):
            if isinstance(step, _disk.DeletePartition):
                doomed = current.partition(step.number)
                if doomed.kind != "extended" and doomed.fs is not None:
                    # Leave no stale store signature for blkid to find in the space later.
                    self.runner.run(["wipefs", "-a", "-q", doomed.path])
            _parted.apply_table_step(current, step)
            return
        part = current.partition(step.number)
        if isinstance(step, _disk.ShrinkFilesystem):
            _fs.kind(part.fstype).shrink(self.runner, part.path, step.size, part.fs.mountpoint)
        elif isinstance(step, _disk.GrowFilesystem):
            _fs.kind(part.fstype).grow(self.runner, part.path, part.fs.mountpoint)
        elif isinstance(step, _disk.CreateFilesystem):
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
        if isinstance(step, _disk.ShrinkFilesystem) and part.fs.size != step.size:
            raise MigrationError("the filesystem on %s is %s after shrinking, not %s; stopping." % (
                part.path, human(part.fs.size), human(step.size)))
        return actual
