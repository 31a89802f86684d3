"""Image formats, checksums and the writer's zero runs, on regular files (no root, no devices)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.inplace.migration.plugins.module_utils.image import formats as _formats
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.image.checksums import (
    expected_sha256, parse_checksum_file,
)
from ansible_collections.inplace.migration.plugins.module_utils.image.formats import (
    compression_of, detect, filesystem_of, zstd_content_size,
)
from ansible_collections.inplace.migration.plugins.module_utils.image.pipeline import Pipeline
from ansible_collections.inplace.migration.plugins.module_utils.image.sources import Source
from ansible_collections.inplace.migration.plugins.module_utils.image.writer import BLOCK, CHUNK, ImageWriter, zero_out

MiB = 1024 * 1024


def ext_head(blocks, log_block=2, bit64_high=0):
    head = bytearray(4096)
    struct.pack_into("<I", head, 1024 + 0x04, blocks)
    struct.pack_into("<I", head, 1024 + 0x18, log_block)
    head[1024 + 0x38:1024 + 0x3A] = b"\x53\xef"
    if bit64_high:
        struct.pack_into("<I", head, 1024 + 0x60, 0x80)
        struct.pack_into("<I", head, 1024 + 0x150, bit64_high)
    return bytes(head)


def test_superblocks_give_type_and_size():
    assert filesystem_of(ext_head(16384)) == ("ext", 16384 * 4096)
    assert filesystem_of(ext_head(0, bit64_high=1)) == ("ext", (1 << 32) * 4096)
    xfs = b"XFSB" + struct.pack(">IQ", 4096, 1000) + bytes(100)
    assert filesystem_of(xfs) == ("xfs", 4096 * 1000)
    btrfs = bytearray(65536 + 4096)
    btrfs[65536 + 0x40:65536 + 0x48] = b"_BHRfS_M"
    struct.pack_into("<Q", btrfs, 65536 + 0x70, 5 * MiB)
    assert filesystem_of(bytes(btrfs)) == ("btrfs", 5 * MiB)
    assert filesystem_of(bytes(8192)) is None


def test_formats_are_detected_by_magic_not_name():
    tar = bytearray(512)
    tar[257:262] = b"ustar"
    raw = ext_head(100)
    assert detect(raw, None) == "raw"
    assert detect(bytes(tar), None) == "tar"
    assert detect(b"\x28\xb5\x2f\xfd" + bytes(10), raw) == "raw.zst"
    assert detect(b"\x28\xb5\x2f\xfd" + bytes(10), bytes(tar)) == "tar.zst"
    assert detect(b"\x1f\x8b" + bytes(10), raw) == "raw.gz"
    assert detect(b"\xfd7zXZ\x00" + bytes(10), bytes(tar)) == "tar.xz"
    assert detect(b"QFI\xfb" + bytes(10), None) == "qcow2"
    assert detect(os.urandom(4096).replace(b"\x53\xef", b"xx"), None) in (None,)
    assert detect(b"\x28\xb5\x2f\xfd" + bytes(10), b"not a filesystem") is None
    assert compression_of(b"\x1f\x8b\x08") == "gz"


def test_zstd_frame_declares_its_content_size(tmp_path):
    data = os.urandom(300000)
    (tmp_path / "x").write_bytes(data)
    subprocess.run(["zstd", "-q", str(tmp_path / "x"), "-o", str(tmp_path / "x.zst")], check=True)
    assert zstd_content_size((tmp_path / "x.zst").read_bytes()[:32]) == 300000
    # Streamed through a pipe, zstd cannot know the size and records none.
    piped = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    assert zstd_content_size(piped[:32]) is None


def test_checksum_files_in_gnu_and_bsd_form():
    digest = "ab" * 32
    assert parse_checksum_file("%s  image.raw.zst\n%s *other\n" % (digest, "cd" * 32), "image.raw.zst") == digest
    assert parse_checksum_file("%s  ./dir/image.raw.zst\n" % digest.upper(), "image.raw.zst") == digest
    assert parse_checksum_file("SHA256 (image.tar) = %s\n" % digest, "image.tar") == digest
    # A file with one line names the image whatever its name.
    assert parse_checksum_file("%s  renamed.img\n" % digest, "image.img") == digest
    with pytest.raises(MigrationError, match="no line for image.img"):
        parse_checksum_file("%s  a\n%s  b\n" % (digest, digest), "image.img")
    with pytest.raises(MigrationError, match="no sha256 line"):
        parse_checksum_file("hello\n", "image.img")


def test_checksum_option_forms(tmp_path):
    digest = "0f" * 32
    assert expected_sha256("sha256:" + digest.upper(), "x") == digest
    with pytest.raises(MigrationError, match="only sha256"):
        expected_sha256("sha512:" + "0" * 128, "x")
    with pytest.raises(MigrationError, match="64 hexadecimal digits"):
        expected_sha256("sha256:1234", "x")
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("%s  image.raw\n" % digest)
    assert expected_sha256(str(sums), "/store/inplace/images/image.raw") == digest
    with pytest.raises(MigrationError, match="checksum file .* does not exist"):
        expected_sha256(str(tmp_path / "missing"), "image.raw")


def test_a_pipeline_decompresses_and_hashes_what_it_reads(tmp_path):
    data = os.urandom(3 * MiB) + bytes(2 * MiB)
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(data, 1))
    for hashed in (False, True):
        pipeline = Pipeline(Source(str(path)), "gz", lambda tool: tool, hash_source=hashed)
        buffer = bytearray(8 * MiB)
        count = pipeline.readinto(memoryview(buffer))
        digest = pipeline.finish()
        assert bytes(buffer[:count]) == data
        assert digest == (hashlib.sha256(path.read_bytes()).hexdigest() if hashed else None)


def test_a_broken_stream_fails_with_the_tool_s_words(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(os.urandom(MiB))[:-100])
    pipeline = Pipeline(Source(str(path)), "gz", lambda tool: tool)
    pipeline.readinto(memoryview(bytearray(2 * MiB)))
    with pytest.raises(MigrationError, match=r"could not be unpacked \(gzip exited with 1"):
        pipeline.finish()


class Stream(io.BytesIO):
    """readinto in uneven pieces, as a pipe delivers."""

    def readinto(self, view):
        return super().readinto(view[:min(len(view), 3 * MiB + 4096)])


def write(tmp_path, data, **kwargs):
    path = tmp_path / "dest"
    path.write_bytes(b"\xee" * (len(data) + MiB))  # garbage the zero runs must overwrite
    calls = []

    def zero(descriptor, offset, length):
        calls.append((offset, length))
        zero_out(descriptor, offset, length)

    descriptor = os.open(str(path), os.O_RDWR)
    try:
        writer = ImageWriter(descriptor, limit=len(data) + MiB, zero=zero, **kwargs)
        length = writer.write(Stream(data))
    finally:
        os.close(descriptor)
    return path.read_bytes()[:len(data)], writer, calls, length


def test_zero_runs_are_coalesced_and_read_back_as_zeros(tmp_path):
    data = os.urandom(BLOCK) + bytes(3 * CHUNK) + os.urandom(100) + bytes(BLOCK - 100) + bytes(BLOCK) + \
        os.urandom(2 * BLOCK) + bytes(5 * MiB + 7)
    got, writer, calls, length = write(tmp_path, data)
    assert got == data and length == len(data)
    # One run across three whole chunks (not three), a short hole inside data written as data,
    # and the zero tail (not a multiple of the block size) as one more run.
    assert calls == [(BLOCK, 3 * CHUNK), (len(data) - 5 * MiB - 7, 5 * MiB + 7)]
    assert writer.written + writer.zeroed == len(data)


def test_a_resumed_write_skips_what_was_written_but_reads_it(tmp_path):
    data = os.urandom(CHUNK) + bytes(CHUNK) + os.urandom(CHUNK + 5)
    path = tmp_path / "dest"
    path.write_bytes(data[:2 * CHUNK] + b"\xee" * (CHUNK + 5))
    checkpoints = []
    descriptor = os.open(str(path), os.O_RDWR)
    try:
        writer = ImageWriter(descriptor, limit=len(data), skip=2 * CHUNK, checkpoint=CHUNK,
                             on_checkpoint=checkpoints.append)
        assert writer.write(Stream(data)) == len(data)
    finally:
        os.close(descriptor)
    assert path.read_bytes() == data
    assert writer.written == CHUNK + 5 and writer.zeroed == 0
    assert checkpoints == [3 * CHUNK]


def test_checkpoints_follow_durable_progress(tmp_path):
    data = os.urandom(5 * CHUNK)
    checkpoints = []
    path = tmp_path / "dest"
    path.write_bytes(b"")
    descriptor = os.open(str(path), os.O_RDWR)
    try:
        ImageWriter(descriptor, limit=len(data), checkpoint=2 * CHUNK, on_checkpoint=checkpoints.append).write(
            Stream(data))
    finally:
        os.close(descriptor)
    assert checkpoints == [2 * CHUNK, 4 * CHUNK]


def test_an_image_larger_than_the_partition_stops_the_write(tmp_path):
    path = tmp_path / "dest"
    path.write_bytes(b"")
    descriptor = os.open(str(path), os.O_RDWR)
    try:
        with pytest.raises(MigrationError, match="larger than the partition"):
            ImageWriter(descriptor, limit=CHUNK).write(Stream(os.urandom(CHUNK + 1)))
    finally:
        os.close(descriptor)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 40)), min_size=1, max_size=12), st.integers(0, 511))
def test_any_mix_of_data_and_zeros_reads_back_exactly(tmp_path_factory, pieces, tail):
    data = b"".join(bytes(count * 16384) if zero else os.urandom(count * 16384) for zero, count in pieces)
    data += os.urandom(tail)
    got, writer, unused_calls, length = write(tmp_path_factory.mktemp("w"), data)
    assert got == data and length == len(data)
    assert writer.written + writer.zeroed == len(data)


def test_zero_out_falls_back_to_writes_on_a_regular_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"\xff" * 10000)
    descriptor = os.open(str(path), os.O_RDWR)
    try:
        zero_out(descriptor, 100, 9000)
    finally:
        os.close(descriptor)
    assert path.read_bytes() == b"\xff" * 100 + bytes(9000) + b"\xff" * 900


def test_missing_local_source_is_one_sentence(tmp_path):
    with pytest.raises(MigrationError, match="the image .* does not exist or is not a file"):
        Source(str(tmp_path / "nope.raw")).check()


def test_unreachable_url_is_one_sentence():
    with pytest.raises(MigrationError, match="cannot fetch http://127.0.0.1:9/x"):
        Source("http://127.0.0.1:9/x").check()


def test_split_format():
    assert _formats.split_format("raw.zst") == ("raw", "zst")
    assert _formats.split_format("qcow2") == ("qcow2", None)
