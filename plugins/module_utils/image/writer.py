# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The streaming writer: page-aligned buffers, a writer thread with O_DIRECT, runs of zeros
turned into BLKZEROOUT instead of writes, and checkpoints a rerun resumes from.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import queue
import struct
import threading

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import KiB, MiB, human

CHUNK = 8 * MiB
BLOCK = 64 * KiB
MIN_ZERO_RUN = 256 * KiB
SECTOR = 512
BLKZEROOUT = 0x127F
ZERO_CHUNK = bytes(CHUNK)
ZERO_BLOCK = bytes(BLOCK)


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
