# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OS images: formats and their detection, checksums, and the streaming writer with its zero runs.

An image is read once, as a stream: from a local file or an http(s) URL, through the
system's own decompressor (``zstd -dc``, ``gzip -dc``, ``xz -dc``) in a pipeline, into
either the writer below (raw formats) or ``tar`` (root-filesystem archives). qcow2 is
left to ``qemu-img``. Memory stays bounded by one chunk, whatever the image's size.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import queue
import re
import struct
import subprocess
import tempfile
import threading
from urllib.parse import urlparse

from ansible.module_utils.urls import open_url

from ansible_collections.inplace.migration.plugins.module_utils._errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils._units import KiB, MiB, human

RAW_FORMATS = ("raw", "raw.zst", "raw.gz", "raw.xz", "qcow2")
ARCHIVE_FORMATS = ("tar", "tar.zst", "tar.gz", "tar.xz")
FORMATS = RAW_FORMATS + ARCHIVE_FORMATS

MAGIC = (
    ("zst", b"\x28\xb5\x2f\xfd"),
    ("gz", b"\x1f\x8b"),
    ("xz", b"\xfd7zXZ\x00"),
    ("qcow2", b"QFI\xfb"),
)
DECOMPRESSORS = {"zst": ["zstd", "-dc"], "gz": ["gzip", "-dc"], "xz": ["xz", "-dc"]}
PACKAGES = {"zstd": "zstd", "gzip": "gzip", "xz": "xz-utils", "qemu-img": "qemu-utils", "tar": "tar"}

# What the detection and the size check read of the (decompressed) start of an image:
# enough for a btrfs superblock, the last of the three at 64 KiB.
HEAD_BYTES = 128 * KiB
CHUNK = 8 * MiB
BLOCK = 64 * KiB
MIN_ZERO_RUN = 256 * KiB
SECTOR = 512
BLKZEROOUT = 0x127F
F_SETPIPE_SZ = 1031
ZERO_CHUNK = bytes(CHUNK)
ZERO_BLOCK = bytes(BLOCK)

SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
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


# Checksums ---------------------------------------------------------------------------------------

def parse_checksum_file(text, name):
    """The sha256 for ``name`` in a checksum file (``sha256sum`` output, or the BSD ``SHA256 (x) = y`` form)."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        gnu = re.match(r"^\\?([0-9a-fA-F]{64})\s+\*?(.+)$", line)
        bsd = re.match(r"^SHA256\s*\((.+)\)\s*=\s*([0-9a-fA-F]{64})$", line)
        if gnu:
            entries.append((gnu.group(2).strip(), gnu.group(1).lower()))
        elif bsd:
            entries.append((bsd.group(1).strip(), bsd.group(2).lower()))
    matching = [digest for entry, digest in entries if os.path.basename(entry) == name]
    if len(set(matching)) == 1:
        return matching[0]
    if len(entries) == 1 and not matching:
        return entries[0][1]
    if not entries:
        raise MigrationError("the checksum file holds no sha256 line.")
    raise MigrationError("the checksum file has %s for %s; it must have exactly one." % (
        "no line" if not matching else "several different lines", name))


def expected_sha256(checksum, src):
    """The expected sha256 (hex) from the ``checksum`` option: ``sha256:<hex>``, or a checksum file's path or URL."""
    value = checksum.strip()
    algorithm, colon, digest = value.partition(":")
    if colon and algorithm.lower() == "sha256":
        if not SHA256_RE.match(digest):
            raise MigrationError("checksum=%s is not sha256: followed by 64 hexadecimal digits." % value)
        return digest.lower()
    if colon and re.match(r"^(md5|sha1|sha224|sha384|sha512|blake2b)$", algorithm.lower()):
        raise MigrationError("checksum=%s uses %s; only sha256 is accepted." % (value, algorithm))
    source = Source(value)
    source.check("the checksum file")
    with source.open() as handle:
        text = handle.read(1 * MiB + 1)
    if len(text) > 1 * MiB:
        raise MigrationError("the checksum file %s is larger than 1 MiB; it is not a sha256sum file." % value)
    name = os.path.basename(urlparse(src).path if Source(src).is_url else src)
    try:
        return parse_checksum_file(text.decode("utf-8", "replace"), name)
    except MigrationError as error:
        raise MigrationError("%s (%s)" % (str(error).rstrip("."), value))


def file_sha256(path):
    sha = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            sha.update(view[:count])
    return sha.hexdigest()


# Sources -----------------------------------------------------------------------------------------

class Source:
    """Where an image comes from: a local file or an http(s) URL."""

    def __init__(self, spec):
        self.spec = spec
        self.is_url = urlparse(spec).scheme in ("http", "https")

    @property
    def path(self):
        return None if self.is_url else self.spec

    def check(self, what="the image"):
        """Refuse a missing source with one sentence."""
        if self.is_url:
            try:
                self.open().close()
            except MigrationError:
                raise
        elif not os.path.isfile(self.spec):
            raise MigrationError("%s %s does not exist or is not a file." % (what, self.spec))

    def open(self):
        if not self.is_url:
            return open(self.spec, "rb", buffering=0)
        try:
            return open_url(self.spec, timeout=60)
        except Exception as error:  # urllib's, ssl's and open_url's own errors alike
            raise MigrationError("cannot fetch %s: %s." % (self.spec, getattr(error, "reason", None) or error))

    def head(self, count=HEAD_BYTES):
        with self.open() as handle:
            return read_up_to(handle, count)

    def identity(self):
        """What tells whether a local file changed between its verification and its use."""
        if self.is_url:
            return None
        stat = os.stat(self.spec)
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def size(self):
        return None if self.is_url else os.path.getsize(self.spec)


def read_up_to(handle, count):
    parts = []
    while count > 0:
        part = handle.read(count)
        if not part:
            break
        parts.append(part)
        count -= len(part)
    return b"".join(parts)


# Pipelines ---------------------------------------------------------------------------------------

def _widen_pipe(descriptor):
    try:
        fcntl.fcntl(descriptor, F_SETPIPE_SZ, 1 * MiB)
    except OSError:
        pass


class Pipeline:
    """Bytes of ``source``, decompressed by ``compression``'s tool, hashed on the way in when ``hash_source``.

    Read the result with ``readinto`` (raw formats), or pass ``consumer`` (an argv, e.g. tar)
    to have it read the bytes on its standard input. ``finish()`` waits for every part and
    raises if any failed; ``abort()`` kills them. A local source that is not hashed here
    (it was verified before) is handed to the decompressor by path, with nothing in between.
    """

    def __init__(self, source, compression, tool_path, hash_source=False, consumer=None):
        self.source = source
        self.sha = hashlib.sha256() if hash_source else None
        self.source_bytes = 0
        self.processes = []
        self._feeder = None
        self._feed_error = None
        self._input = None
        self.reader = None
        environment = dict(os.environ, LC_ALL="C", LANGUAGE="C")
        feed = hash_source or source.is_url
        try:
            if compression is None and consumer is None:
                self._input = source.open()
                self.reader = self._input
                return
            upstream = None
            if compression is not None:
                argv = [tool_path(DECOMPRESSORS[compression][0])] + DECOMPRESSORS[compression][1:]
                if not feed:
                    argv += ["--", source.path]
                decompressor = self._start(argv, subprocess.PIPE if feed else subprocess.DEVNULL,
                                           subprocess.PIPE, environment)
                upstream = decompressor
            if consumer is not None:
                stdin = upstream.stdout if upstream else (subprocess.PIPE if feed else open(source.path, "rb"))
                try:
                    tail = self._start(consumer, stdin, subprocess.DEVNULL, environment)
                finally:
                    if upstream:
                        upstream.stdout.close()
                    elif not feed:
                        stdin.close()
                first = upstream or tail
            else:
                tail = first = upstream
                _widen_pipe(tail.stdout.fileno())
                self.reader = tail.stdout
            if feed:
                _widen_pipe(first.stdin.fileno())
                self._input = source.open()
                self._feeder = threading.Thread(target=self._feed, args=(first.stdin,), daemon=True)
                self._feeder.start()
        except BaseException:
            self.abort()
            raise

    def _start(self, argv, stdin, stdout, environment):
        errors = tempfile.TemporaryFile()
        try:
            process = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=errors, env=environment, bufsize=0)
        except OSError as error:
            errors.close()
            raise MigrationError("cannot run %s: %s." % (argv[0], error.strerror))
        process.errors = errors
        process.argv = argv
        self.processes.append(process)
        return process

    def _feed(self, pipe):
        buffer = bytearray(1 * MiB)
        view = memoryview(buffer)
        try:
            while True:
                count = self._input.readinto(buffer)
                if not count:
                    break
                self._account(view[:count])
                pipe.write(view[:count])
        except BrokenPipeError:
            pass
        except Exception as error:  # reported by finish()
            self._feed_error = error
        finally:
            try:
                pipe.close()
            except OSError:
                pass

    def _account(self, view):
        if self.sha is not None:
            self.sha.update(view)
        self.source_bytes += len(view)

    def readinto(self, view):
        """Fill ``view`` as far as the stream goes; the count read (less than asked only at the end)."""
        total = 0
        size = len(view)
        while total < size:
            count = self.reader.readinto(view[total:])
            if not count:
                break
            if self._input is self.reader:
                self._account(view[total:total + count])
            total += count
        return total

    def finish(self):
        """Wait for the pipeline; raise if a part failed. Returns the source's sha256 when it was hashed."""
        if self._input is self.reader and self.reader is not None:
            # Reading the source directly: drain what the caller did not need (to hash it all).
            buffer = bytearray(1 * MiB)
            while self.readinto(memoryview(buffer)):
                pass
        elif self.reader is not None:
            while self.reader.read(1 * MiB):
                pass
        if self._feeder:
            self._feeder.join()
        failures = []
        for process in self.processes:
            rc = process.wait()
            if rc != 0:
                process.errors.seek(0)
                detail = process.errors.read().decode("utf-8", "replace").strip().splitlines()
                failures.append("%s exited with %d%s" % (
                    os.path.basename(process.argv[0]), rc, (": " + " / ".join(detail[-3:])) if detail else ""))
        self._close()
        if self._feed_error is not None:
            raise MigrationError("reading %s failed: %s." % (self.source.spec, self._feed_error))
        if failures:
            raise MigrationError("the image %s could not be unpacked: %s." % (self.source.spec, "; ".join(failures)))
        return self.sha.hexdigest() if self.sha is not None else None

    def abort(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            process.wait()
        if self._input is not None:
            try:
                self._input.close()
            except OSError:
                pass
        if self._feeder:
            self._feeder.join(5)
        self._close()

    def _close(self):
        for process in self.processes:
            for stream in (process.stdin, process.stdout):
                if stream:
                    try:
                        stream.close()
                    except OSError:
                        pass
            process.errors.close()
        if self._input is not None:
            try:
                self._input.close()
            except OSError:
                pass
        self.processes = []


def decompressed_head(source, compression, tool_path, count=HEAD_BYTES):
    """The first ``count`` bytes of the image once decompressed (b"" when it is not valid)."""
    pipeline = Pipeline(source, compression, tool_path, hash_source=False)
    try:
        buffer = bytearray(count)
        got = pipeline.readinto(memoryview(buffer))
        return bytes(buffer[:got])
    finally:
        pipeline.abort()


# The writer --------------------------------------------------------------------------------------

def zero_out(descriptor, offset, length):
    """Make ``length`` bytes at ``offset`` read back as zeros: BLKZEROOUT where the device can, else writes."""
    end = offset + length
    aligned_start = -(-offset // SECTOR) * SECTOR
    aligned_end = end // SECTOR * SECTOR
    if aligned_end > aligned_start:
        try:
            fcntl.ioctl(descriptor, BLKZEROOUT, struct.pack("QQ", aligned_start, aligned_end - aligned_start))
        except OSError as error:
            if error.errno not in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            aligned_start = aligned_end = offset
    for start, stop in ((offset, aligned_start), (aligned_end, end)):
        while start < stop:
            count = min(stop - start, CHUNK)
            start += os.pwrite(descriptor, memoryview(ZERO_CHUNK)[:count], start)


def write_all(descriptor, view, offset):
    while len(view):
        written = os.pwrite(descriptor, view, offset)
        view = view[written:]
        offset += written


def aligned_buffer(size, alignment=4096):
    """(bytearray, start): ``size`` bytes from ``start`` on lie at a memory address O_DIRECT accepts."""
    raw = bytearray(size + alignment)
    address = ctypes.addressof(ctypes.c_char.from_buffer(raw))
    return raw, (-address) % alignment


def open_for_writing(device):
    """The device opened exclusively (the kernel refuses it while mounted or in use), with O_DIRECT if it can."""
    flags = os.O_WRONLY | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(device, flags | os.O_DIRECT), True
    except OSError as error:
        if error.errno == errno.EBUSY:
            raise MigrationError("%s is in use (mounted, or held by another program); it was not written." % device)
        if error.errno != errno.EINVAL:
            raise
    return os.open(device, flags), False


class ImageWriter:
    """Writes a stream to ``descriptor`` in large aligned chunks; runs of zeros become ``zero_out`` calls.

    The stream is read into one buffer while the one before it is written (by a second
    thread: both the pipe read and the write release the GIL), so decompressing and
    writing overlap as in ``zstd -d | dd``. Every ``checkpoint`` bytes, at a chunk
    boundary, what was written is made durable and ``on_checkpoint(offset)`` is told how
    far: a rerun passes that back as ``skip``, and the stream up to it is read (and
    hashed) but not written again.
    """

    BUFFERS = 3

    def __init__(self, descriptor, limit, skip=0, checkpoint=256 * MiB, on_checkpoint=None, zero=zero_out,
                 direct=False):
        self.descriptor = descriptor
        self.limit = limit
        self.skip = skip
        self.checkpoint = checkpoint
        self.on_checkpoint = on_checkpoint
        self.zero = zero
        self.direct = direct
        self.written = 0
        self.zeroed = 0
        self.position = 0
        self._zero_start = None
        self._last_checkpoint = skip
        self._error = None

    @staticmethod
    def _is_zero(buffer, start, stop):
        zeros = ZERO_BLOCK if stop - start == BLOCK else ZERO_CHUNK if stop - start == CHUNK else bytes(stop - start)
        return buffer.startswith(zeros, start, stop)

    def _close_zero_run(self, end, ops):
        if self._zero_start is not None and end > self._zero_start:
            ops.append(("zero", self._zero_start, end - self._zero_start))
            self.zeroed += end - self._zero_start
        self._zero_start = None

    def _data(self, start, end, offset, ops):
        self._close_zero_run(offset + start, ops)
        ops.append(("data", start, end, offset + start))
        self.written += end - start

    def _plan(self, buffer, base, count):
        """The writes and zero runs for the ``count`` bytes at ``buffer[base:]``, which sit at ``self.position``."""
        ops = []
        offset = self.position
        first = max(0, self.skip - offset)
        if first >= count:
            return ops
        if offset + count > self.limit:
            raise MigrationError("the image is larger than the partition (%s at least, the partition %s)." % (
                human(offset + count), human(self.limit)))
        if first == 0 and self._is_zero(buffer, base, base + count):
            if self._zero_start is None:
                self._zero_start = offset
            return ops
        # Runs of whole zero blocks within the chunk; short ones between data are written as data.
        index = first
        data_start = None
        while index < count:
            stop = min(index + BLOCK, count)
            if self._is_zero(buffer, base + index, base + stop):
                run_end = stop
                while run_end < count:
                    next_stop = min(run_end + BLOCK, count)
                    if not self._is_zero(buffer, base + run_end, base + next_stop):
                        break
                    run_end = next_stop
                if data_start is not None and run_end < count and run_end - index < MIN_ZERO_RUN:
                    index = run_end  # a short hole inside data: part of the data run
                    continue
                if data_start is not None:
                    self._data(data_start, index, offset, ops)
                    data_start = None
                if self._zero_start is None:
                    self._zero_start = offset + index
                index = run_end
            else:
                if data_start is None:
                    data_start = index
                index = stop
        if data_start is not None:
            self._data(data_start, count, offset, ops)
        return ops

    def _pwrite(self, view, offset):
        if self.direct and (offset % 4096 or len(view) % 4096):
            # O_DIRECT takes whole logical blocks only: the odd tail goes through the page cache.
            flags = fcntl.fcntl(self.descriptor, fcntl.F_GETFL)
            fcntl.fcntl(self.descriptor, fcntl.F_SETFL, flags & ~os.O_DIRECT)
            try:
                write_all(self.descriptor, view, offset)
            finally:
                fcntl.fcntl(self.descriptor, fcntl.F_SETFL, flags)
        else:
            write_all(self.descriptor, view, offset)

    def _run(self, work, free):
        """The writing thread: carries out each chunk's operations in order, then hands its buffer back."""
        while True:
            item = work.get()
            if item is None:
                return
            buffer, ops = item
            try:
                if self._error is None:
                    for op in ops:
                        if op[0] == "data":
                            unused, start, end, offset = op
                            self._pwrite(buffer[1][start:end], offset)
                        elif op[0] == "zero":
                            self.zero(self.descriptor, op[1], op[2])
                        elif op[0] == "sync":
                            os.fsync(self.descriptor)
                            if self.on_checkpoint is not None and op[1] is not None:
                                self.on_checkpoint(op[1])
            except BaseException as error:  # handed to the reading thread
                self._error = error
            finally:
                if buffer is not None:
                    free.put(buffer)

    @staticmethod
    def _fill(stream, view):
        """Read until ``view`` is full or the stream ends: chunks stay whole, so their offsets stay aligned."""
        total = 0
        while total < len(view):
            count = stream.readinto(view[total:])
            if not count:
                break
            total += count
        return total

    def write(self, stream):
        """Copy ``stream`` (anything with ``readinto``); returns the stream's length in bytes."""
        free = queue.Queue()
        buffers = []
        for unused in range(self.BUFFERS):
            raw, base = aligned_buffer(CHUNK)
            view = memoryview(raw)[base:base + CHUNK]
            buffers.append((raw, view, base))
            free.put((raw, view, base))
        work = queue.Queue()
        thread = threading.Thread(target=self._run, args=(work, free), daemon=True)
        thread.start()
        try:
            while self._error is None:
                raw, view, base = free.get()
                count = self._fill(stream, view)
                if not count:
                    free.put((raw, view, base))
                    break
                ops = self._plan(raw, base, count)
                self.position += count
                work.put(((raw, view, base), ops))
                if self.position > self.skip and self.position - self._last_checkpoint >= self.checkpoint:
                    sync = []
                    self._close_zero_run(self.position, sync)
                    work.put((None, sync + [("sync", self.position)]))
                    self._last_checkpoint = self.position
            final = []
            self._close_zero_run(max(self.position, self.skip), final)
            work.put((None, final + [("sync", None)]))
        finally:
            work.put(None)
            thread.join()
            for unused, view, unused_base in buffers:
                view.release()
        if self._error is not None:
            raise self._error
        return self.position
