"""disk/table.py on real block devices (loop devices of 512- and 4096-byte sectors): sector size and size
come from the kernel, and the model is the one pyparted reads from the same device."""

from __future__ import annotations

import contextlib
import os
import tempfile

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.disk import table as _table
from tests.support.loopdisk import MiB, _detach, run
from tests.support.pyparted_model import as_json, parted, parted_model_afresh, table_model

DOS = ("label: dos\nstart=1MiB, size=20MiB, type=83\nstart=30MiB, size=60MiB, type=5\n"
       "start=31MiB, size=10MiB, type=83\nstart=60MiB, size=20MiB, type=83\n")
GPT = "label: gpt\nstart=1MiB, size=1MiB, name=bios, type=21686148-6449-6E6F-744E-656564454649\nstart=2MiB, size=60MiB, name=root\n"


@contextlib.contextmanager
def sectored_loop_disk(directory, sector, script):
    """A 100 MiB loop device with ``sector``-byte logical sectors, partitioned through the device itself."""
    image = os.path.join(directory, "disk.img")
    with open(image, "wb") as handle:
        handle.truncate(100 * MiB)
    device = run("losetup", "--find", "--show", "--sector-size", sector, image).stdout.strip()
    try:
        run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", device, input=script)
        yield device
    finally:
        _detach(device)


@pytest.mark.parametrize("sector", [512, 4096])
@pytest.mark.parametrize("label, script", [("msdos", DOS), ("gpt", GPT)])
def test_a_loop_device_reads_as_pyparted_reads_it(sector, label, script):
    with tempfile.TemporaryDirectory() as directory, sectored_loop_disk(directory, sector, script) as device:
        disk = _table.read_disk(ProcessRunner(), device, filesystems=False)
        assert (disk.label, disk.sector_size, disk.size) == (label, sector, 100 * MiB)
        assert [p.kind for p in disk.partitions] == (["primary", "extended", "logical", "logical"] if label == "msdos"
                                                     else ["primary", "primary"])
        if parted is not None:
            assert parted_model_afresh(device) == as_json(table_model(disk))
