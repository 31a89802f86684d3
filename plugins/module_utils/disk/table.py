# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a disk into the model from its own bytes: msdos (primary, extended, logical) and gpt.

Pure Python, so preflight plans the store on an old system that has no pyparted (a stock
Debian 12 install has none); disk/parted.py only writes. The model is the one libparted
gave: the same numbers, kinds, byte ranges, names and usable area (tests/integration holds
the two readers to each other).
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
import zlib
from dataclasses import replace

from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk import fs as _fs
from ansible_collections.inplace.migration.plugins.module_utils.disk import mount as _mount
from ansible_collections.inplace.migration.plugins.module_utils.disk.model import Disk, Partition
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError

BLKSSZGET = 0x1268
BLKGETSIZE64 = 0x80081272
MBR_ENTRIES = 446
MBR_EXTENDED = (0x05, 0x0F, 0x85)
GPT_PROTECTIVE = 0xEE
GPT_SIGNATURE = b"EFI PART"
# What libparted reserves for the entry array at each end of a gpt disk when it plans (128 entries of 128 bytes),
# whatever the header says: the planner must see the usable area partition_space's writer sees.
GPT_ENTRIES_BYTES = 128 * 128
# A chain of logical partitions longer than this is a loop in a damaged table, not a disk.
MAX_LOGICAL = 256


def _geometry(handle):
    """(logical sector size, size in bytes) of an open block device or disk image file."""
    info = os.fstat(handle.fileno())
    if not stat.S_ISBLK(info.st_mode):
        return 512, info.st_size
    sector = struct.unpack("i", fcntl.ioctl(handle.fileno(), BLKSSZGET, b"\0" * 4))[0]
    size = struct.unpack("Q", fcntl.ioctl(handle.fileno(), BLKGETSIZE64, b"\0" * 8))[0]
    return sector, size


def _read(handle, offset, length):
    handle.seek(offset)
    data = handle.read(length)
    if len(data) != length:
        raise EOFError(offset)
    return data


def _mbr_entries(sector_bytes):
    """The four (slot, type, first LBA, sectors) of an MBR or EBR; empty slots left out."""
    for slot in range(4):
        entry = sector_bytes[MBR_ENTRIES + 16 * slot:MBR_ENTRIES + 16 * (slot + 1)]
        kind = entry[4]
        first, count = struct.unpack("<II", entry[8:16])
        if kind and count:
            yield slot, kind, first, count


def _no_table(path):
    return MigrationError("%s has no partition table (or one this tool cannot read), and only msdos and gpt disks "
                          "can be changed; name the disk that holds the system." % path)


def _logical(handle, path, sector, extended_first):
    """The logical partitions in the extended partition starting at LBA ``extended_first``, numbered from 5."""
    found, ebr, seen = [], extended_first, set()
    while ebr not in seen and len(found) < MAX_LOGICAL:
        seen.add(ebr)
        record = _read(handle, ebr * sector, 512)
        if record[510:512] != b"\x55\xaa":
            raise _no_table(path)
        entries = list(_mbr_entries(record))
        data = [e for e in entries if e[1] not in MBR_EXTENDED]
        if data:
            unused_slot, unused_kind, first, count = data[0]
            found.append((5 + len(found), (ebr + first) * sector, (ebr + first + count) * sector, "logical"))
        links = [e for e in entries if e[1] in MBR_EXTENDED]
        if not links:
            break
        ebr = extended_first + links[0][2]
    return found


def _msdos(handle, path, sector, mbr):
    partitions = []
    for slot, kind, first, count in _mbr_entries(mbr):
        extended = kind in MBR_EXTENDED
        partitions.append((slot + 1, first * sector, (first + count) * sector, "extended" if extended else "primary"))
        if extended:
            partitions.extend(_logical(handle, path, sector, first))
    return partitions, 4


def _gpt_header(handle, lba, sector):
    """The gpt header at ``lba`` and its entry array, or None when either fails its checksum."""
    header = _read(handle, lba * sector, 92)
    if header[:8] != GPT_SIGNATURE:
        return None
    size = struct.unpack("<I", header[12:16])[0]
    if size < 92 or size > sector:
        return None
    header = _read(handle, lba * sector, size)
    wanted = struct.unpack("<I", header[16:20])[0]
    if zlib.crc32(header[:16] + b"\0\0\0\0" + header[20:]) != wanted:
        return None
    entries_lba, count, entry_size, entries_crc = struct.unpack("<QIII", header[72:92])
    if entry_size < 128 or count > 65536:
        return None
    array = _read(handle, entries_lba * sector, count * entry_size)
    if zlib.crc32(array) != entries_crc:
        return None
    return header, array, count, entry_size


def _gpt(handle, path, sector, size):
    found = _gpt_header(handle, 1, sector)
    if found is None:
        # The primary header or its entries are damaged: the backup at the disk's last sector, as libparted does.
        found = _gpt_header(handle, size // sector - 1, sector)
    if found is None:
        raise _no_table(path)
    unused_header, array, count, entry_size = found
    partitions = []
    for index in range(count):
        entry = array[index * entry_size:(index + 1) * entry_size]
        if entry[:16] == b"\0" * 16:
            continue
        first, last = struct.unpack("<QQ", entry[32:48])
        name = entry[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
        partitions.append((index + 1, first * sector, (last + 1) * sector, "primary", name or None))
    return partitions, count


def read_table(path):
    """``(label, sector size, size, partitions, max_partitions)`` of the disk or image at ``path``.

    Each partition is ``(number, start, end, kind[, name])`` in bytes, end exclusive.
    """
    with open(path, "rb") as handle:
        sector, size = _geometry(handle)
        try:
            mbr = _read(handle, 0, 512)
            if mbr[510:512] != b"\x55\xaa":
                raise _no_table(path)
            if any(kind == GPT_PROTECTIVE for unused_slot, kind, unused_first, unused_count in _mbr_entries(mbr)):
                partitions, most = _gpt(handle, path, sector, size)
                return "gpt", sector, size, partitions, most
            partitions, most = _msdos(handle, path, sector, mbr)
            return "msdos", sector, size, partitions, most
        except EOFError:
            raise _no_table(path)


def _check_whole_disk(path):
    if not os.path.exists(path):
        raise MigrationError("disk %s does not exist on this host; name the whole disk, such as /dev/sda." % path)
    if not _devices.is_block_device(path):
        raise MigrationError("%s is not a block device; name a whole disk such as /dev/sda." % path)
    if _devices.is_partition(path):
        raise MigrationError("%s is a partition; name the whole disk it is on." % path)


def disk_model(path, table):
    """The model of the disk at ``path`` from ``read_table``'s answer, without filesystems."""
    label, sector, total, found, most = table
    if label == "gpt":
        entries = -(-GPT_ENTRIES_BYTES // sector)
        first_usable, usable_end = (2 + entries) * sector, total - (1 + entries) * sector
    else:
        first_usable, usable_end = sector, total
    disk = Disk(path=path, size=total, sector_size=sector, label=label, first_usable=first_usable,
                usable_end=usable_end, max_partitions=most)
    # In the order libparted lists them: by where they start (an extended partition before its logical ones).
    return disk.with_partitions(
        Partition(number=p[0], start=p[1], end=p[2], kind=p[3], name=p[4] if len(p) > 4 else None,
                  path=disk.partition_path(p[0])) for p in sorted(found, key=lambda p: p[1]))


def read_disk(runner, path, filesystems=True):
    """The disk at ``path`` as a model, with each partition's filesystem when ``filesystems``."""
    _check_whole_disk(path)
    if runner.has("udevadm"):
        # Right after boot udev may still be probing the partitions; blkid would then find nothing.
        runner.run(["udevadm", "settle", "--timeout=30"], ok=None)
    # The real node: a partition planned on it is named from the kernel's name for the disk, not from
    # a /dev/disk/by-id link's.
    disk = disk_model(os.path.realpath(path), read_table(path))
    if not filesystems:
        return disk
    mount_table = _mount.mounts()
    return disk.with_partitions(p if p.kind == "extended" else replace(p, fs=_fs.probe(runner, p.path, mount_table))
                                for p in disk.partitions)
