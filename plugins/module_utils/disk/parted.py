# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pyparted backend: write partition-table steps (disk/table.py reads a disk into the model)."""

from __future__ import annotations

import os
import time
import traceback

from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk.model import (
    CreatePartition, DeletePartition, ResizePartition,
)
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError

try:
    import parted
except ImportError:
    HAS_PARTED = False
    PARTED_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_PARTED = True
    PARTED_IMPORT_ERROR = None

NODE_TIMEOUT = 10.0


def _open(path):
    device = parted.getDevice(path)
    try:
        return device, parted.newDisk(device)
    except parted.DiskException:
        raise MigrationError("%s has no partition table (or one libparted cannot read), and only msdos and gpt "
                             "disks can be changed; name the disk that holds the system." % path)


def _geometry(device, start, end, sector):
    return parted.Geometry(device=device, start=start // sector, end=end // sector - 1)


def _by_number(pdisk, number):
    for part in pdisk.partitions:
        if part.number == number:
            return part
    raise MigrationError("partition %d is no longer on the disk; stopping." % number)


def apply_table_step(model, step):
    """Write one partition-table step to the disk ``model`` describes, then wait for its nodes."""
    device, pdisk = _open(model.path)
    sector = model.sector_size
    if isinstance(step, DeletePartition):
        pdisk.deletePartition(_by_number(pdisk, step.number))
    elif isinstance(step, ResizePartition):
        part = _by_number(pdisk, step.number)
        geometry = _geometry(device, step.start, step.end, sector)
        pdisk.setPartitionGeometry(partition=part, constraint=parted.Constraint(exactGeom=geometry),
                                   start=geometry.start, end=geometry.end)
    elif isinstance(step, CreatePartition):
        geometry = _geometry(device, step.start, step.end, sector)
        kind = parted.PARTITION_LOGICAL if step.kind == "logical" else parted.PARTITION_NORMAL
        part = parted.Partition(disk=pdisk, type=kind, geometry=geometry)
        pdisk.addPartition(partition=part, constraint=parted.Constraint(exactGeom=geometry))
        if part.number != step.number:
            raise MigrationError("libparted would number the new partition %d, not %d as planned; nothing was "
                                 "written." % (part.number, step.number))
        if step.name:
            part.getPedPartition().set_name(step.name)
    else:
        raise TypeError("not a partition table step: %r" % (step,))
    signature = _mbr_signature(model.path) if model.label == "msdos" else None
    pdisk.commit()
    if signature is not None:
        _keep_mbr_signature(model.path, signature)


# Where an msdos table keeps its disk signature: the partition table UUID, and the first half of
# every partition's PARTUUID (``<signature>-<number>``).
MBR_SIGNATURE = (440, 4)


def _mbr_signature(path):
    with open(path, "rb") as handle:
        handle.seek(MBR_SIGNATURE[0])
        return handle.read(MBR_SIGNATURE[1])


def _keep_mbr_signature(path, signature):
    """Put the disk signature back when libparted wrote a new one.

    libparted replaces an MBR without boot code (a disk partitioned by sfdisk, one that never held
    a boot loader) by its own, with a random signature: the root partition's PARTUUID, by which the
    later phases find it and its disk, would change with the store's partition.
    """
    if _mbr_signature(path) == signature:
        return
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(descriptor, signature, MBR_SIGNATURE[0])
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def wait_for_nodes(runner, model):
    """Wait until every partition of ``model`` has its device node (udev may be slow, or absent)."""
    if runner.has("udevadm"):
        runner.run(["udevadm", "settle"], ok=None)
    deadline = time.time() + NODE_TIMEOUT
    asked_partx = False
    while True:
        nodes = _devices.partition_nodes(model.path)
        missing = [p for p in model.partitions if p.kind != "extended" and not os.path.exists(nodes.get(p.number, ""))]
        if not missing:
            return
        if time.time() > deadline:
            if asked_partx:
                raise MigrationError("the kernel shows no device node for %s after the partition table changed." % (
                    ", ".join(p.path or model.partition_path(p.number) for p in missing)))
            # Without udev nobody else asks the kernel to add the nodes.
            runner.run(["partx", "-a", model.path], ok=None)
            asked_partx = True
            deadline = time.time() + NODE_TIMEOUT
        time.sleep(0.1)
