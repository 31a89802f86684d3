"""The framing walk of zstd and xz images, on files the real zstd and xz commands make, cut at many offsets."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.image import framing

pytestmark = pytest.mark.skipif(not (shutil.which("zstd") and shutil.which("xz")), reason="needs zstd and xz")

MiB = 1024 * 1024


def _data(path, size=3 * MiB):
    """Half zeros, half incompressible: RLE, compressed and raw zstd blocks all occur."""
    with open(path, "wb") as handle:
        handle.write(b"\0" * (size // 2))
        handle.write(os.urandom(size // 4))
        handle.write(b"text that compresses well\n" * (size // 4 // 26))
    return path


def _compress(argv, source, out):
    with open(out, "wb") as handle:
        subprocess.run(argv + ["-c", source], stdout=handle, check=True)
    return out


def _cat(out, *parts):
    with open(out, "wb") as handle:
        for part in parts:
            handle.write(part if isinstance(part, bytes) else open(part, "rb").read())
    return out


def _skippable(payload, nibble=0):
    return struct.pack("<II", 0x184D2A50 | nibble, len(payload)) + payload


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """name -> (path, compression, frames or streams, ends of every frame or stream but the last)."""
    tmp = tmp_path_factory.mktemp("framing")
    data = _data(str(tmp / "data"))
    other = _data(str(tmp / "other"), 1 * MiB)
    zst = _compress(["zstd", "-q", "-3"], data, str(tmp / "one.zst"))
    no_check = _compress(["zstd", "-q", "--no-check", "-1"], other, str(tmp / "nocheck.zst"))
    streamed = str(tmp / "streamed.zst")  # no content size in the header: zstd read from a pipe
    with open(data, "rb") as source, open(streamed, "wb") as handle:
        subprocess.run(["zstd", "-q", "-c"], stdin=source, stdout=handle, check=True)
    xz = _compress(["xz", "-0"], data, str(tmp / "one.xz"))
    blocks = _compress(["xz", "-1", "--block-size=300000", "--check=sha256"], data, str(tmp / "blocks.xz"))
    sizes = {name: os.path.getsize(path) for name, path in (("zst", zst), ("nocheck", no_check), ("xz", xz))}
    return {
        "zstd, one frame": (zst, "zst", 1, []),
        "zstd, no content checksum": (no_check, "zst", 1, []),
        "zstd, no content size": (streamed, "zst", 1, []),
        "zstd, two frames": (_cat(str(tmp / "two.zst"), zst, no_check), "zst", 2, [sizes["zst"]]),
        "zstd, skippable frames around": (
            _cat(str(tmp / "skip.zst"), _skippable(b"metadata " * 50), zst, _skippable(b"", 15)), "zst", 3,
            [459, 459 + sizes["zst"]]),
        "xz, one stream": (xz, "xz", 1, []),
        "xz, several blocks, sha256": (blocks, "xz", 1, []),
        "xz, two streams with padding": (
            _cat(str(tmp / "two.xz"), xz, b"\0" * 8, blocks, b"\0" * 4), "xz", 2,
            # Stream padding comes in fours: a cut at each of them leaves whole streams.
            [sizes["xz"], sizes["xz"] + 4, sizes["xz"] + 8, sizes["xz"] + 8 + os.path.getsize(blocks)]),
    }


CASES = ["zstd, one frame", "zstd, no content checksum", "zstd, no content size", "zstd, two frames",
         "zstd, skippable frames around", "xz, one stream", "xz, several blocks, sha256",
         "xz, two streams with padding"]


@pytest.mark.parametrize("name", CASES)
def test_a_whole_image_passes_and_every_frame_is_walked(images, name):
    path, compression, count, unused = images[name]
    assert framing.check(path, compression, path) == count
    # The decompressor agrees that it is whole.
    tool = {"zst": "zstd", "xz": "xz"}[compression]
    subprocess.run([tool, "-d", "-q", "-c", path], stdout=subprocess.DEVNULL, check=True)


def _offsets(size, boundaries):
    """Cuts at the start, in headers, at every 1/40 of the file, and a byte either side of the end."""
    cuts = {1, 3, 4, 5, 6, 8, 12, 13, 20, size - 1, size - 2, size - 4, size - 12, size - 13}
    cuts.update(size * k // 40 for k in range(1, 40))
    return sorted(cut for cut in cuts if 0 < cut < size and cut not in boundaries)


@pytest.mark.parametrize("name", CASES)
def test_an_image_cut_anywhere_but_between_frames_is_refused_naming_the_fix(images, name, tmp_path):
    path, compression, unused, boundaries = images[name]
    size = os.path.getsize(path)
    tool = {"zst": "zstd", "xz": "xz"}[compression]
    cut_path = str(tmp_path / "cut")
    for cut in _offsets(size, boundaries):
        with open(path, "rb") as source, open(cut_path, "wb") as handle:
            handle.write(source.read(cut))
        with pytest.raises(MigrationError) as caught:
            framing.check(cut_path, compression, "cut.img")
        message = str(caught.value)
        assert message.startswith("the image cut.img ends or breaks inside ") and message.count(". ") == 0
        assert message.endswith("(it is truncated or damaged), so nothing was written; download it again and "
                                "give the checksum published with it."), message
        assert "of its %d " % cut in message
        # Every cut the walk refuses, the decompressor refuses too, only later.
        assert subprocess.run([tool, "-d", "-q", "-c", cut_path], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, check=False).returncode != 0, cut


def test_a_cut_exactly_between_two_frames_passes_as_the_decompressor_lets_it(images, tmp_path):
    """The documented blind spot: two whole frames minus the second is one whole frame."""
    path, unused, unused_count, boundaries = images["zstd, two frames"]
    cut_path = str(tmp_path / "cut.zst")
    with open(path, "rb") as source, open(cut_path, "wb") as handle:
        handle.write(source.read(boundaries[0]))
    assert framing.check(cut_path, "zst", cut_path) == 1


def test_garbage_after_the_last_frame_is_refused_where_it_starts(images, tmp_path):
    path = images["zstd, one frame"][0]
    bad = _cat(str(tmp_path / "tail.zst"), path, b"\0" * 16)
    with pytest.raises(MigrationError, match="a zstd frame .its magic number is wrong. at byte %d of its %d " % (
            os.path.getsize(path), os.path.getsize(path) + 16)):
        framing.check(bad, "zst", bad)


def test_a_damaged_xz_index_is_refused(images, tmp_path):
    path = images["xz, one stream"][0]
    data = bytearray(open(path, "rb").read())
    backward = (struct.unpack("<I", data[-8:-4])[0] + 1) * 4
    data[-12 - backward + 1] ^= 0x01  # the number of records
    bad = _cat(str(tmp_path / "index.xz"), bytes(data))
    with pytest.raises(MigrationError, match="index .it is damaged."):
        framing.check(bad, "xz", bad)


def test_gzip_and_uncompressed_images_are_not_walked(tmp_path):
    path = str(tmp_path / "anything")
    with open(path, "wb") as handle:
        handle.write(b"\x1f\x8b cut short")
    assert framing.check(path, "gz", path) is None
    assert framing.check(path, None, path) is None


def test_an_index_larger_than_the_file_is_refused_before_it_is_read(tmp_path):
    """A footer declaring a 16 GiB index in a small file is refused without reading it."""
    path = str(tmp_path / "liar.xz")
    flags = b"\0\x01"
    body = struct.pack("<I", 0xFFFFFFFF) + flags
    footer = struct.pack("<I", __import__("zlib").crc32(body)) + body + b"YZ"
    with open(path, "wb") as handle:
        handle.write(b"\xfd7zXZ\x00" + flags + b"\0" * 4 + b"\0" * 64 + footer)
    with pytest.raises(MigrationError, match="its index does not fit before the footer"):
        framing.check(path, "xz", path)
