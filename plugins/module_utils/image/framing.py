# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a local compressed image ends where its own framing says it ends.

A file cut short, with a checksum taken after the cut, passes the checksum gate; the
decompressor notices only at the cut, after everything before it is written over the old
system. zstd and xz frame their data so that the end can be found without decompressing:
zstd by frame and block headers (a few bytes each, read with a seek), xz by the stream
footer and the index it points back to. Only headers and indexes are read, in small pieces.

gzip records the length of its data only in the trailer after it, so a gzip image cannot
be checked without inflating it; it is left to the decompressor. A multi-frame zstd image
cut exactly between two frames, and a frame of zstd's legacy (pre-1.0) formats, are not
told apart from a whole image here either (the walk stops there and lets it pass).
"""

from __future__ import annotations

import os
import struct
import zlib

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError

ZSTD_MAGIC = 0xFD2FB528
ZSTD_LEGACY = range(0xFD2FB51E, 0xFD2FB528)
XZ_HEADER_MAGIC = b"\xfd7zXZ\x00"
XZ_FOOTER_MAGIC = b"YZ"
# Reading an xz index in pieces keeps memory bounded whatever its declared size.
CHUNK = 64 * 1024


class Cut(Exception):
    """The image ends, or is damaged, at ``offset``; ``what`` says inside what."""

    def __init__(self, offset, what):
        super().__init__(offset, what)
        self.offset = offset
        self.what = what


def _read(descriptor, offset, count, size, what):
    if offset + count > size:
        raise Cut(offset, what)
    data = os.pread(descriptor, count, offset)
    if len(data) != count:
        raise Cut(offset, what)
    return data


def zstd_end(descriptor, size):
    """Walk every frame; raise Cut where one does not end inside the file. Returns the frames seen."""
    offset = frames = 0
    while offset < size:
        magic = struct.unpack("<I", _read(descriptor, offset, 4, size, "a zstd frame header"))[0]
        if magic & 0xFFFFFFF0 == 0x184D2A50:
            length = struct.unpack("<I", _read(descriptor, offset + 4, 4, size, "a zstd skippable frame"))[0]
            offset += 8 + length
            if offset > size:
                raise Cut(size, "a zstd skippable frame")
        elif magic == ZSTD_MAGIC:
            offset = _zstd_frame(descriptor, offset + 4, size)
        elif magic in ZSTD_LEGACY:
            return frames
        else:
            raise Cut(offset, "what should be a zstd frame (its magic number is wrong)")
        frames += 1
    return frames


def _zstd_frame(descriptor, offset, size):
    what = "a zstd frame"
    flags = _read(descriptor, offset, 1, size, what)[0]
    fcs_flag, single_segment, checksum, dict_flag = flags >> 6, (flags >> 5) & 1, (flags >> 2) & 1, flags & 3
    if flags & 0x08:
        raise Cut(offset, "a zstd frame header (a reserved bit is set)")
    header = 1 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag] + \
        (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    _read(descriptor, offset, header, size, what)
    offset += header
    while True:
        block = int.from_bytes(_read(descriptor, offset, 3, size, what), "little")
        last, kind, length = block & 1, (block >> 1) & 3, block >> 3
        if kind == 3:
            raise Cut(offset, "a zstd block header (its block type is reserved)")
        offset += 3 + (1 if kind == 1 else length)
        if offset > size:
            raise Cut(size, what)
        if last:
            break
    offset += 4 if checksum else 0
    if offset > size:
        raise Cut(size, what)
    return offset


def _varint(data, position):
    value = shift = 0
    while True:
        if position >= len(data) or shift > 56:
            raise ValueError("varint")
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return value, position
        shift += 7


class _Index:
    """An xz index read forward in pieces, with the CRC32 of what was read."""

    def __init__(self, descriptor, offset, end):
        self.descriptor, self.offset, self.end = descriptor, offset, end
        self.buffer, self.position, self.crc = b"", 0, 0

    def _fill(self):
        if self.position < len(self.buffer) - 16:
            return
        rest = self.buffer[self.position:]
        count = min(CHUNK, self.end - self.offset)
        more = os.pread(self.descriptor, count, self.offset) if count > 0 else b""
        self.offset += len(more)
        self.buffer, self.position = rest + more, 0

    def varint(self):
        self._fill()
        value, position = _varint(self.buffer, self.position)
        self.crc = zlib.crc32(self.buffer[self.position:position], self.crc)
        self.position = position
        return value

    def take(self, count):
        self._fill()
        data = self.buffer[self.position:self.position + count]
        if len(data) != count:
            raise ValueError("short")
        self.crc = zlib.crc32(data, self.crc)
        self.position += count
        return data


def xz_end(descriptor, size):
    """Walk the streams back from the end by their footers and indexes; raise Cut where one does not fit."""
    end = size
    streams = 0
    while end > 0:
        # Stream padding: null bytes in fours, after any stream.
        while end >= 4 and _read(descriptor, end - 4, 4, size, "xz stream padding") == b"\0\0\0\0":
            end -= 4
        if end < 24:
            raise Cut(end, "an xz stream (the file is shorter than a stream header and footer)")
        footer = _read(descriptor, end - 12, 12, size, "an xz stream footer")
        if footer[10:12] != XZ_FOOTER_MAGIC or zlib.crc32(footer[4:10]) != struct.unpack("<I", footer[:4])[0]:
            raise Cut(size, "an xz stream (its footer is missing)")
        index_size = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
        index_start = end - 12 - index_size
        if index_start < 12:
            raise Cut(size, "an xz stream (its index does not fit before the footer)")
        try:
            blocks = _xz_index(descriptor, index_start, end - 12)
        except ValueError:
            raise Cut(index_start, "an xz stream's index (it is damaged)")
        start = index_start - blocks - 12
        if start < 0:
            raise Cut(size, "an xz stream (its blocks do not fit before the index)")
        header = _read(descriptor, start, 12, size, "an xz stream header")
        if header[:6] != XZ_HEADER_MAGIC or header[6:8] != footer[8:10]:
            raise Cut(start, "an xz stream (its header is not where its index says)")
        end = start
        streams += 1
    return streams


def _xz_index(descriptor, start, end):
    """The bytes the blocks an xz index lists take (each padded to four)."""
    index = _Index(descriptor, start, end)
    if index.take(1) != b"\0":
        raise ValueError("indicator")
    total = 0
    for unused in range(index.varint()):
        unpadded = index.varint()
        index.varint()
        total += (unpadded + 3) // 4 * 4
    read = index.offset - start - (len(index.buffer) - index.position)
    if index.take((4 - read % 4) % 4).strip(b"\0"):
        raise ValueError("padding")
    crc = index.crc
    if struct.unpack("<I", index.take(4))[0] != crc:
        raise ValueError("crc")
    if index.offset - (len(index.buffer) - index.position) != end:
        raise ValueError("size")
    return total


WALKS = {"zst": zstd_end, "xz": xz_end}


def check(path, compression, spec):
    """Refuse a local ``zst`` or ``xz`` image that ends inside its framing; other formats pass."""
    if compression not in WALKS:
        return None
    walk = WALKS[compression]
    descriptor = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(descriptor).st_size
        try:
            return walk(descriptor, size)
        except Cut as cut:
            raise MigrationError("the image %s ends or breaks inside %s at byte %d of its %d (it is truncated or "
                                 "damaged), so nothing was written; download it again and give the checksum published "
                                 "with it." % (spec, cut.what, cut.offset, size))
    finally:
        os.close(descriptor)
