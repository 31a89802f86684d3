"""A disk as pyparted reads it, in disk/table.py's terms: the reader table.py replaced, kept to compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys

try:
    import parted
except ImportError:
    parted = None


def parted_model(path):
    """(label, sector size, size, max partitions, [(number, start, end, kind, name)]) as libparted sees ``path``."""
    device = parted.getDevice(path)
    disk = parted.newDisk(device)
    sector = device.sectorSize

    def kind(part):
        if part.type & parted.PARTITION_EXTENDED:
            return "extended"
        return "logical" if part.type & parted.PARTITION_LOGICAL else "primary"
    named = disk.supportsFeature(parted.DISK_TYPE_PARTITION_NAME)
    return (disk.type, sector, device.length * sector, disk.maxPrimaryPartitionCount if disk.type == "gpt" else 4,
            [(p.number, p.geometry.start * sector, (p.geometry.end + 1) * sector, kind(p),
              (p.name or None) if named else None) for p in disk.partitions])


def table_model(disk):
    """The same facts from a disk model made by disk/table.py."""
    return (disk.label, disk.sector_size, disk.size, disk.max_partitions,
            [(p.number, p.start, p.end, p.kind, p.name) for p in disk.partitions])


def parted_model_afresh(path):
    """parted_model in a process of its own: libparted keeps every device it has seen, sector size and all,
    so a loop device attached again with other sectors would be read as the first one was."""
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", "import json, sys; from tests.support.pyparted_model import "
                          "parted_model; print(json.dumps(parted_model(sys.argv[1])))", path],
                         cwd=top, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def as_json(model):
    return json.loads(json.dumps(model))
