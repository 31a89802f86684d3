# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""store_cleanup's run: in the new system, zero the store, delete it (or keep it as data), grow
the root back over the space, remove the maintenance files, record completion.

The store's journal is the first thing destroyed, so before anything is, the cleanup record
(``locate.CLEANUP_RECORD`` in the new root) is written durably: it holds the store's identity
and how far cleanup got. ``locate.detect`` reads it, so a run cut off anywhere here is taken
for the new system with cleanup to finish, never for the old one. Each step reads the disk
as it is now and does only what is left, so rerunning finishes the job.
"""

from __future__ import annotations

import os
import shutil
import time

from ansible_collections.inplace.migration.plugins.module_utils.boot import firstboot as _firstboot
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.rootfs import inside
from ansible_collections.inplace.migration.plugins.module_utils.common.units import MiB, human
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk import fs as _fs
from ansible_collections.inplace.migration.plugins.module_utils.disk import lvm as _lvm
from ansible_collections.inplace.migration.plugins.module_utils.disk import mount as _mount
from ansible_collections.inplace.migration.plugins.module_utils.disk import model as _model
from ansible_collections.inplace.migration.plugins.module_utils.disk import planner as _planner
from ansible_collections.inplace.migration.plugins.module_utils.disk.space import PartitionSpace
from ansible_collections.inplace.migration.plugins.module_utils.state.files import (
    atomic_write_json, fsync_directory, make_directories, read_json)
from ansible_collections.inplace.migration.plugins.module_utils.state.locate import CLEANUP_RECORD, COMPLETION_RECORD

WHAT = "the migration store"
# The states of the cleanup record, in order.
WIPING, WIPED, RELEASED, COMPLETE = "wiping", "wiped", "released", "complete"
STATES = (WIPING, WIPED, RELEASED, COMPLETE)
# Where maintenance_env put the maintenance kernel, initramfs and overlay (the overlay holds the
# PC's host keys); on a /boot of its own that the new system kept, they are still there.
MAINTENANCE_FILES = "/boot/inplace"
# resize2fs may leave the tail of a partition unused (a last block group too small to hold its
# own metadata); a gap below this is that, not a filesystem left small.
GROW_SLACK = 4 * MiB


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def growth(fs_size, partition_size, mountpoint):
    """How a filesystem of ``fs_size`` on a partition of ``partition_size`` is to be grown: None (it fills the
    partition), ``online`` (mounted: the filesystem grows itself) or ``offline`` (checked first, then grown)."""
    if fs_size is None or partition_size - fs_size < GROW_SLACK:
        return None
    return "online" if mountpoint else "offline"


def zero_and_remove(directory):
    """Remove ``directory``'s files after overwriting each with zeros in place, so their blocks hold nothing."""
    removed = []
    if not os.path.isdir(directory) or os.path.islink(directory):
        return removed
    for base, unused_dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(base, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "r+b") as handle:
                    remaining = os.fstat(handle.fileno()).st_size
                    block = bytes(MiB)
                    while remaining:
                        remaining -= handle.write(block[:min(remaining, MiB)])
                    handle.flush()
                    os.fsync(handle.fileno())
            removed.append(path)
    shutil.rmtree(directory)
    fsync_directory(os.path.dirname(directory))
    return sorted(removed)


class StoreCleanup:
    """One cleanup of the store, from the new system whose root is ``root``."""

    def __init__(self, runner, root="/", mode="delete", label="INPLACE-STORE", data_label="INPLACE-DATA",
                 check_mode=False):
        self.runner = runner
        self.root = root
        self.mode = mode
        self.label = label
        self.data_label = data_label
        self.check_mode = check_mode
        self.record_path = inside(root, CLEANUP_RECORD)
        self.completion_path = inside(root, COMPLETION_RECORD)
        self.result = {"changed": False, "done": [], "store": None, "grown": [], "maintenance_files_removed": [],
                       "ignored_stores": []}

    # The record ----------------------------------------------------------------------------------------

    def save(self, record, **changes):
        record.update(changes)
        if not self.check_mode:
            make_directories(os.path.dirname(self.record_path))
            atomic_write_json(self.record_path, record)
        return record

    def step(self, text):
        self.result["changed"] = True
        self.result["done"].append(text)

    # Finding the store -----------------------------------------------------------------------------------

    def recorded_identity(self, scan):
        """The store's identity image_deploy recorded for the first-boot hook; else the one device with its label on
        the system disk (the disk holding the new root): one elsewhere, a stick, is set aside, never wiped."""
        identity = _firstboot.recorded_store(_firstboot.read_config(self.root) or {})
        if identity:
            return identity, scan.find_recorded(identity, WHAT)
        disk = _mount.disk_holding(self.runner, self.root)
        if disk is None:
            raise MigrationError("no identity of the store was recorded (%s) and %s is on no partition of a disk, so "
                                 "there is no system disk to look for the label %s on; run store_cleanup in the new "
                                 "system with root=/." % (_firstboot.CONFIG, self.root, self.label))
        device, self.result["ignored_stores"] = scan.on_disk("LABEL=" + self.label, disk, WHAT)
        return (scan.identity(device), device) if device else (None, None)

    def store_now(self, scan, record):
        """The store's device now, held to the identity recorded; None once its partition is deleted.

        Zeroing removes the filesystem's UUID and label first or last, as the kernel orders the
        writes; from the moment it starts, the partition is known by its PARTUUID and its disk.
        """
        identity = record["store"]
        key = next((key for key in ("partuuid", "lv_uuid") if identity.get(key)), None)
        if key is None:
            raise MigrationError("the store's recorded identity (%s) has no PARTUUID (or logical volume UUID) to find it "
                                 "by after it is zeroed; remove %s only after wiping it by hand." % (
                                     identity, self.record_path))
        spec = "%s=%s" % ("PARTUUID" if key == "partuuid" else "LVUUID", identity[key])
        device = scan.lookup(spec, WHAT)
        if device is None:
            if record["state"] == WIPING:
                raise MigrationError("the store (%s) is not on this host, and cleanup has not zeroed it yet; put its "
                                     "disk back and run again." % spec)
            return None
        held = {key: identity[key], "disk": identity.get("disk")}
        now = scan.values(device)
        if record["state"] == WIPING and now.get("UUID"):
            held = identity  # not zeroed yet (or its start was not): it must be all of what was recorded
        problems = _devices.differences(scan.identity(device), held)
        if problems:
            said = "; ".join("%s %s where %s was recorded" % (name, value or "none", recorded)
                             for name, recorded, value in problems)
            raise MigrationError("%s, found by %s, has %s, so it is not the store recorded in %s; put the recorded "
                                 "disk back." % (device, spec, said, self.record_path))
        return device

    # The steps ---------------------------------------------------------------------------------------------

    def begin(self, scan):
        identity, device = self.recorded_identity(scan)
        record = {"state": WIPING, "started": now(), "mode": self.mode, "store": identity, "grow": None}
        if device is None:
            return record
        self.result["store"] = device
        if self.mode == "delete" and identity.get("lv_uuid"):
            record["grow_lv"] = self.plan_volume_removal(identity["lv_uuid"])
        elif self.mode == "delete":
            disk = PartitionSpace(self.runner, _devices.parent_disk(device), self.label).read()
            plan = _planner.plan_absent(disk, number=_devices.partition_number(device))
            self.result["diff"] = {"before": _model.render(plan.before), "after": _model.render(plan.after),
                                   "before_header": disk.path, "after_header": disk.path}
            self.result["actions"] = plan.descriptions
            grown = [step.number for step, unused_text in plan.actions if isinstance(step, _model.ResizePartition)]
            before = [p for p in disk.data_partitions if p.number in grown]
            # By its filesystem's UUID: libparted gives an msdos disk with no boot code in its MBR a new
            # identifier, and so every partition on it a new PARTUUID, with each table it writes.
            if before:
                record["grow"] = scan.values(before[0].path).get("UUID", "").lower() or None
        self.step("record the cleanup of %s in %s" % (device, CLEANUP_RECORD))
        return self.save(record)

    def plan_volume_removal(self, lv_uuid):
        """A store that is a logical volume (a root on LVM): the root it gave its end to, and that root's size
        before, from the store's tags; the steps that remove it and grow the root back."""
        lvm, store = _lvm.volume_of(self.runner, lv_uuid)
        grow = _lvm.root_to_restore(store) if store else None
        if store is None:
            return None
        steps = ["remove the logical volume %s/%s" % (lvm.vg, store.name)]
        if grow:
            grow["vg"] = lvm.vg
            steps.append("grow the logical volume %s/%s back to %d extents, and its filesystem" % (
                lvm.vg, grow["lv"], grow["extents"]))
        self.result["actions"] = steps
        return grow

    def wipe(self, scan, record):
        device = self.store_now(scan, record)
        self.result["store"] = device
        mountpoint = _mount.mountpoint_of(device)
        if mountpoint == "[SWAP]":
            raise MigrationError("%s, the store, is in use as swap; turn it off (swapoff %s) and run again." % (
                device, device))
        if mountpoint:
            self.runner.run(["umount", mountpoint])
        self.runner.run(["blkdiscard", "--zeroout", "--force", device])
        # The zeros must be on the disk before the record says so.
        descriptor = os.open(device, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        self.step("zero %s (%s)" % (device, human(_devices.device_size(device))))
        return self.save(record, state=WIPED, wiped=now())

    def release(self, scan, record):
        device = self.store_now(scan, record) if record["store"] else None
        if device is not None and self.mode == "keep":
            _fs.make(self.runner, device, "ext4", self.data_label)
            self.step("make an empty ext4 filesystem labelled %s on %s" % (self.data_label, device))
        elif record["store"] and record["store"].get("lv_uuid") and self.mode == "delete":
            self.remove_volume(record)
        elif device is not None:
            done = PartitionSpace(self.runner, _devices.parent_disk(device), self.label).absent(
                False, number=_devices.partition_number(device))
            self.took(done)
        elif self.mode == "delete" and record.get("grow"):
            # Deleted already, by a run cut off before the partition in front took the space.
            before = scan.find("UUID=" + record["grow"], "the partition before the store")
            self.took(PartitionSpace(self.runner, _devices.parent_disk(before), self.label).grow(
                _devices.partition_number(before)))
        return self.save(record, state=RELEASED)

    def remove_volume(self, record):
        """Remove the store's logical volume (if it is still there), then grow the root back to its size before
        the store, the volume first, then its filesystem (``disk.lvm.remove_store``)."""
        lvm, store = _lvm.volume_of(self.runner, record["store"]["lv_uuid"])
        grow = record.get("grow_lv")
        if store is not None and not grow:
            lvm.runner.run(["wipefs", "-a", "-q", store.path])
            lvm.remove(store.name)
            self.step("remove the logical volume %s/%s" % (lvm.vg, store.name))
        elif grow:
            lvm = lvm or _lvm.Lvm(self.runner, grow["vg"], _lvm.options_here())
            root = _lvm.remove_store(lvm, grow["lv"], grow["extents"], name=store.name if store else _lvm.STORE_LV,
                                     root_mountpoint=self._mountpoint_of_volume(lvm, grow["lv"]))
            if store is not None:
                self.step("remove the logical volume %s/%s" % (lvm.vg, store.name))
            self.step("grow the logical volume %s/%s to %s, and its filesystem" % (
                lvm.vg, grow["lv"], human(root.size)))

    @staticmethod
    def _mountpoint_of_volume(lvm, name):
        volume = lvm.read().lv(name)
        return _mount.mountpoint_of(os.path.realpath(volume.path)) if volume else None

    def took(self, done):
        self.result["layout_after"] = done["layout_after"]
        for text in done["actions"]:
            self.step(text)

    def grow_filesystems(self, scan, record):
        """Grow the partition that took the store's space, and the new root, where their filesystem is smaller."""
        devices = []
        if record.get("grow"):
            devices.append(scan.find("UUID=" + record["grow"], "the partition before the store"))
        if os.path.ismount(self.root):
            holding = _devices.device_holding(self.root)
            if holding and (_devices.is_partition(holding) or _devices.lv_uuid(holding)):
                devices.append(holding)
        for device in sorted(set(os.path.realpath(d) for d in devices)):
            found = _fs.probe(self.runner, device)
            size = _devices.device_size(device)
            how = growth(found.size if found else None, size, found.mountpoint if found else None) \
                if found and found.type in _planner.GROWABLE else None
            if how is None:
                continue
            if not self.check_mode:
                _fs.kind(found.type).grow(self.runner, device, found.mountpoint)
            self.result["grown"].append({"device": device, "how": how, "size_before": found.size, "partition": size})
            self.step("grow the %s filesystem on %s (%s) over its partition (%s), %s" % (
                found.type, device, human(found.size), human(size), how))

    def finish(self, record):
        if not self.check_mode:
            removed = zero_and_remove(inside(self.root, MAINTENANCE_FILES))
            if removed:
                self.result["maintenance_files_removed"] = removed
                self.step("zero and remove the %d maintenance files in %s" % (len(removed), MAINTENANCE_FILES))
            # The hook has nothing left to confirm or restore: no store.
            _firstboot.disable(self.root)
        elif os.path.isdir(inside(self.root, MAINTENANCE_FILES)):
            self.step("zero and remove the maintenance files in %s" % MAINTENANCE_FILES)
        if read_json(self.completion_path) is None:
            if not self.check_mode:
                make_directories(os.path.dirname(self.completion_path))
                atomic_write_json(self.completion_path, {"completed": now(), "store": self.mode}, mode=0o644)
            self.step("record completion in %s" % COMPLETION_RECORD)
        return self.save(record, state=COMPLETE, completed=now())

    def run(self):
        record = read_json(self.record_path)
        if (record or {}).get("state") == COMPLETE or (record is None and read_json(self.completion_path) is not None):
            return dict(self.result, state=COMPLETE, record=record)
        if record is not None and record.get("mode") != self.mode:
            raise MigrationError("cleanup began with mode=%s (%s); finish it with that mode." % (
                record.get("mode"), self.record_path))
        scan = _devices.Scan(self.runner)
        if record is None:
            record = self.begin(scan)
        if self.check_mode:
            if record["state"] == WIPING and record["store"]:
                self.step("zero %s" % (self.result["store"] or "the store"))
                self.result["done"].extend(self.result.pop("actions", []))
            self.grow_filesystems(scan, record)
            self.step("record completion in %s" % COMPLETION_RECORD)
            return dict(self.result, state=record["state"], record=record)
        if record["state"] == WIPING:
            record = self.wipe(scan, record) if record["store"] else self.save(record, state=WIPED)
            scan = _devices.Scan(self.runner)
        if record["state"] == WIPED:
            record = self.release(scan, record)
            scan = _devices.Scan(self.runner)
        self.grow_filesystems(scan, record)
        record = self.finish(record)
        return dict(self.result, state=record["state"], record=record)
