"""Reading partition tables without pyparted: sfdisk writes tables into image files, disk/table.py reads
them, and where pyparted is installed it reads the same files and must give the same model."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.disk import table as _table

from tests.support.pyparted_model import parted, parted_model, table_model

MiB = 1024 * 1024
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
pytestmark = pytest.mark.skipif(not shutil.which("sfdisk", path=SBIN), reason="needs sfdisk")

LAYOUTS = {
    "msdos, one primary": "label: dos\nstart=1MiB, size=50MiB, type=83\n",
    "msdos, a gap, an extended with three logical": (
        "label: dos\nstart=1MiB, size=20MiB, type=83\nstart=30MiB, size=60MiB, type=5\n"
        "start=31MiB, size=10MiB, type=83\nstart=43MiB, size=10MiB, type=82\nstart=60MiB, size=20MiB, type=83\n"),
    "msdos, a free first slot": "label: dos\nstart=1MiB, size=20MiB, type=0\nstart=21MiB, size=20MiB, type=83\n",
    "gpt, named, out of order": (
        "label: gpt\nstart=40MiB, size=20MiB, name=root\nstart=1MiB, size=1MiB, name=bios, "
        "type=21686148-6449-6E6F-744E-656564454649\nstart=2MiB, size=30MiB\n"),
}


def image(tmp_path, script, size_mib=100):
    path = str(tmp_path / "disk.img")
    with open(path, "wb") as handle:
        handle.truncate(size_mib * MiB)
    subprocess.run([shutil.which("sfdisk", path=SBIN), "--quiet", "--no-reread", "--no-tell-kernel", path],
                   input=script.encode(), check=True, capture_output=True)
    return path


def model(path):
    return _table.disk_model("/dev/vda", _table.read_table(path))


def shape(disk):
    return [(p.number, p.kind, p.start // MiB, p.end // MiB, p.name) for p in disk.partitions]


def test_msdos_with_logical_partitions(tmp_path):
    disk = model(image(tmp_path, LAYOUTS["msdos, a gap, an extended with three logical"]))
    assert disk.label == "msdos" and disk.size == 100 * MiB and disk.sector_size == 512
    assert (disk.first_usable, disk.usable_end, disk.max_partitions) == (512, 100 * MiB, 4)
    assert shape(disk) == [(1, "primary", 1, 21, None), (2, "extended", 30, 90, None),
                           (5, "logical", 31, 41, None), (6, "logical", 43, 53, None), (7, "logical", 60, 80, None)]
    assert [p.path for p in disk.partitions][:3] == ["/dev/vda1", "/dev/vda2", "/dev/vda5"]


def test_gpt_numbers_names_and_usable_area(tmp_path):
    disk = model(image(tmp_path, LAYOUTS["gpt, named, out of order"]))
    assert disk.label == "gpt" and disk.max_partitions == 128
    assert (disk.first_usable, disk.usable_end) == (34 * 512, 100 * MiB - 33 * 512)
    assert shape(disk) == [(2, "primary", 1, 2, "bios"), (3, "primary", 2, 32, None), (1, "primary", 40, 60, "root")]


def test_a_damaged_primary_gpt_is_read_from_its_backup(tmp_path):
    path = image(tmp_path, LAYOUTS["gpt, named, out of order"])
    with open(path, "r+b") as handle:
        handle.seek(512 * 2)  # the primary entry array: its checksum no longer matches
        handle.write(b"\xff" * 64)
    assert shape(model(path)) == [(2, "primary", 1, 2, "bios"), (3, "primary", 2, 32, None),
                                  (1, "primary", 40, 60, "root")]


@pytest.mark.parametrize("damage", ["zeros", "no signature", "both gpt headers"])
def test_no_table_is_one_sentence(tmp_path, damage):
    path = image(tmp_path, LAYOUTS["gpt, named, out of order"] if damage == "both gpt headers"
                 else LAYOUTS["msdos, one primary"])
    with open(path, "r+b") as handle:
        if damage == "zeros":
            handle.write(bytes(MiB))
        elif damage == "no signature":
            handle.seek(510)
            handle.write(b"\0\0")
        else:
            for offset in (512, 100 * MiB - 512):
                handle.seek(offset)
                handle.write(b"NOT PART")
    with pytest.raises(MigrationError) as refused:
        _table.read_table(path)
    assert str(refused.value) == (
        "%s has no partition table (or one this tool cannot read), and only msdos and gpt disks can be changed; "
        "name the disk that holds the system." % path)


def test_a_looping_logical_chain_ends(tmp_path):
    path = image(tmp_path, LAYOUTS["msdos, a gap, an extended with three logical"])
    with open(path, "r+b") as handle:
        # The last EBR (at 59 MiB, before the third logical) links back to the first one (at 30 MiB).
        handle.seek(59 * MiB + 446 + 16)
        handle.write(struct.pack("<BBBBBBBBII", 0, 0, 0, 0, 5, 0, 0, 0, 0, 2048))
    assert [p.number for p in model(path).partitions] == [1, 2, 5, 6, 7]


@pytest.mark.skipif(parted is None, reason="needs pyparted to compare with")
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_same_model_as_pyparted(tmp_path, layout):
    path = image(tmp_path, LAYOUTS[layout])
    disk = model(path)
    assert parted_model(path) == table_model(disk)
