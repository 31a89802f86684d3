# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OS image formats: the names users give, and what the first bytes of an image say it is.

An image is read once, as a stream: from a local file or an http(s) URL (``image.sources``),
through the system's own decompressor in a pipeline (``image.pipeline``), into either the
writer (``image.writer``, raw formats) or ``tar`` (root-filesystem archives).
"""

from __future__ import annotations

import struct

from ansible_collections.inplace.migration.plugins.module_utils.common.units import KiB

RAW_FORMATS = ("raw", "raw.zst", "raw.gz", "raw.xz", "qcow2")
ARCHIVE_FORMATS = ("tar", "tar.zst", "tar.gz", "tar.xz")
FORMATS = RAW_FORMATS + ARCHIVE_FORMATS

MAGIC = (
    ("zst", b"\x28\xb5\x2f\xfd"),
    ("gz", b"\x1f\x8b"),
    ("xz", b"\xfd7zXZ\x00"),
    ("qcow2", b"QFI\xfb"),
)
# What the detection and the size check read of the (decompressed) start of an image:
# enough for a btrfs superblock, the last of the three at 64 KiB.
HEAD_BYTES = 128 * KiB
TAR_EXTRACT = ["--extract", "--file=-", "--preserve-permissions", "--numeric-owner", "--xattrs",
               "--xattrs-include=*", "--acls", "--same-owner"]


def split_format(fmt):
    """``raw.zst`` -> (``raw``, ``zst``); ``qcow2`` -> (``qcow2``, None)."""
    kind, unused_dot, compression = fmt.partition(".")
    return kind, compression or None


def compression_of(head):
    for name, magic in MAGIC:
        if head.startswith(magic):
            return name
    return None


def is_tar(head):
    return head[257:262] == b"ustar"


def filesystem_of(head):
    """(type, size in bytes) of the filesystem whose superblock starts ``head``, or None."""
    if len(head) >= 1024 + 0x158 and head[1024 + 0x38:1024 + 0x3A] == b"\x53\xef":
        sb = head[1024:]
        blocks = struct.unpack_from("<I", sb, 0x04)[0]
        log_block = struct.unpack_from("<I", sb, 0x18)[0]
        incompat = struct.unpack_from("<I", sb, 0x60)[0]
        if incompat & 0x80:  # 64bit
            blocks |= struct.unpack_from("<I", sb, 0x150)[0] << 32
        return "ext", blocks * (1024 << log_block)
    if head[:4] == b"XFSB" and len(head) >= 16:
        block_size, blocks = struct.unpack_from(">IQ", head, 4)
        return "xfs", block_size * blocks
    if len(head) >= 65536 + 0x78 and head[65536 + 0x40:65536 + 0x48] == b"_BHRfS_M":
        return "btrfs", struct.unpack_from("<Q", head, 65536 + 0x70)[0]
    return None


def zstd_content_size(head):
    """Decompressed size the first zstd frame declares (None when the compressor did not record it)."""
    if len(head) < 6 or not head.startswith(b"\x28\xb5\x2f\xfd"):
        return None
    descriptor = head[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    position = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if size == 0 or len(head) < position + size:
        return None
    value = int.from_bytes(head[position:position + size], "little")
    return value + 256 if size == 2 else value


def detect(head, inner):
    """The format of an image from its first bytes (``inner``: the first bytes once decompressed), or None."""
    compression = compression_of(head)
    if compression == "qcow2":
        return "qcow2"
    if compression is not None:
        content = inner or b""
    else:
        content = head
    if is_tar(content):
        kind = "tar"
    elif filesystem_of(content):
        kind = "raw"
    else:
        return None
    return kind + ("." + compression if compression else "")
