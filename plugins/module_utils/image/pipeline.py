# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The decompression pipeline: the source through ``zstd -dc``, ``gzip -dc``, ``xz -dc`` or
``qemu-img``, hashed as it is read, with bounded memory whatever the image's size.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import tempfile
import threading

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.image.formats import HEAD_BYTES
from ansible_collections.inplace.migration.plugins.module_utils.common.units import MiB

DECOMPRESSORS = {"zst": ["zstd", "-dc"], "gz": ["gzip", "-dc"], "xz": ["xz", "-dc"]}
F_SETPIPE_SZ = 1031


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
            raise MigrationError("the image %s could not be unpacked (%s), so it is truncated or damaged; fetch it again "
                                 "and check it against the checksum published with it." % (
                                     self.source.spec, "; ".join(failures)))
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
