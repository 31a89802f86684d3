# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Profile archives: GNU tar (pax, ACLs, xattrs, sparse, numeric owners) streamed through zstd.

The archive format is GNU tar's; this code only moves the bytes (hashing them on the
way, in bounded memory) and guards extraction: every member is checked before tar
sees its header, so a hostile archive cannot write outside its target directory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import C_LOCALE
from ansible_collections.inplace.migration.plugins.module_utils.state.files import fsync_directory

CHUNK = 1 << 20
TAR_FORMAT = ["--format=pax", "--xattrs", "--xattrs-include=*", "--acls", "--sparse", "--numeric-owner"]
# No --acls when extracting: tar would set ACLs from their text form, whose user and group names it
# resolves on the host running it. The system.posix_acl_* xattrs carry the captured numeric ids, which
# the restore then remaps like file owners.
TAR_EXTRACT = ["--xattrs", "--xattrs-include=*", "--sparse", "--numeric-owner", "--same-owner",
               "--same-permissions"]


class StoreFull(MigrationError):
    pass


class ArchiveRejected(MigrationError):
    pass


def _environment():
    return dict(os.environ, **C_LOCALE)


def _tail(handle):
    handle.seek(0)
    lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    return " / ".join(lines[-3:]) or "no output"


def _write_all(descriptor, data):
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


@contextlib.contextmanager
def _piped(first, second):
    """``first | second``, both started: their processes and the files their standard errors go to."""
    with tempfile.TemporaryFile() as first_errors, tempfile.TemporaryFile() as second_errors:
        upstream = subprocess.Popen(first, stdout=subprocess.PIPE, stderr=first_errors, env=_environment())
        downstream = subprocess.Popen(second, stdin=upstream.stdout, stdout=subprocess.PIPE, stderr=second_errors,
                                      env=_environment())
        upstream.stdout.close()
        yield upstream, downstream, first_errors, second_errors


def create_archive(runner, directory, listing, destination, level=3):
    """Archive the entries named in ``listing`` (relative to ``directory``) into ``destination``.

    Returns ``{"sha256", "bytes", "warnings"}``. The archive is written as
    ``destination + ".part"``, fsync'd and renamed, so a cut leaves no archive that
    looks whole.
    """
    tar = [runner.path("tar"), "--create", "--file=-", "--directory", directory, "--no-recursion", "--null",
           "--verbatim-files-from", "--files-from", listing] + TAR_FORMAT
    zstd = [runner.path("zstd"), "-q", "-c", "-T0", "-%d" % level]
    partial = destination + ".part"
    digest = hashlib.sha256()
    size = 0
    with _piped(tar, zstd) as (tar_proc, zstd_proc, tar_errors, zstd_errors):
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            source = zstd_proc.stdout.fileno()
            while True:
                chunk = os.read(source, CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                _write_all(descriptor, chunk)
                size += len(chunk)
            os.fsync(descriptor)
        except OSError as error:
            for proc in (tar_proc, zstd_proc):
                proc.kill()
            os.close(descriptor)
            descriptor = None
            os.unlink(partial)
            if error.errno == errno.ENOSPC:
                raise StoreFull("the store is full after %d bytes of %s." % (size, os.path.basename(destination)))
            raise
        finally:
            if descriptor is not None:
                os.close(descriptor)
            zstd_proc.stdout.close()
            tar_rc, zstd_rc = tar_proc.wait(), zstd_proc.wait()
        warnings = []
        if tar_rc == 1:
            # GNU tar's exit code 1: some file changed while it was read (only online).
            warnings.append("tar: %s" % _tail(tar_errors))
        elif tar_rc != 0:
            os.unlink(partial)
            raise MigrationError("tar failed archiving %s (exit code %d): %s" % (directory, tar_rc, _tail(tar_errors)))
        if zstd_rc != 0:
            os.unlink(partial)
            raise MigrationError("zstd failed (exit code %d): %s" % (zstd_rc, _tail(zstd_errors)))
    os.rename(partial, destination)
    fsync_directory(os.path.dirname(destination))
    return {"sha256": digest.hexdigest(), "bytes": size, "warnings": warnings}


def file_sha256(path, from_device=False):
    """(sha256 hex, size) of the file at ``path``, read in bounded chunks.

    ``from_device`` first drops the file's (clean, fsync'd) pages from the page cache,
    so the bytes hashed are the ones on the device, not the ones just written.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as handle:
        if from_device:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        buffer = bytearray(4 * CHUNK)
        view = memoryview(buffer)
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
            size += count
    return digest.hexdigest(), size


def verify(path, sha256, size, from_device=False):
    """Raise unless the archive at ``path`` has exactly the recorded size and sha256."""
    if not os.path.exists(path):
        raise MigrationError("%s is missing from the store; put back the archive profile_capture wrote, or restore "
                             "this user's files from a backup." % path)
    actual, actual_size = file_sha256(path, from_device)
    if actual != sha256 or actual_size != size:
        raise MigrationError("%s does not match the manifest (sha256 %s, %d bytes; recorded %s, %d bytes): the "
                             "store is damaged; restore this user's files from a backup." % (path, actual, actual_size, sha256, size))


# What a refused archive means, and the way out: capture never writes such a member.
NOT_CAPTURED = "so it is not an archive profile_capture wrote; restore this user's files from a backup"


class _Guard:
    """Refuses members that could write outside the directory they are extracted into.

    Absolute names and '..' components are refused, as is any name (or hard-link
    target) whose leading components pass through a symlink the archive made earlier,
    and device nodes, which have no place in a home.
    """

    def __init__(self):
        self.symlinks = set()

    @staticmethod
    def _parts(name, what):
        if name.startswith("/"):
            raise ArchiveRejected("%s %r is an absolute path" % (what, name))
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ArchiveRejected("%s %r has a '..' component" % (what, name))
        return parts

    def _through_symlink(self, parts, what, name):
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in self.symlinks:
                raise ArchiveRejected("%s %r passes through the symlink %r earlier in the archive" % (
                    what, name, prefix))

    def check(self, member):
        if member.ischr() or member.isblk():
            raise ArchiveRejected("member %r is a device node" % member.name)
        parts = self._parts(member.name, "member")
        self._through_symlink(parts, "member", member.name)
        if member.islnk():
            target = self._parts(member.linkname, "hard link target")
            self._through_symlink(target + ["x"], "hard link target", member.linkname)
        path = "/".join(parts)
        if member.issym():
            self.symlinks.add(path)
        else:
            self.symlinks.discard(path)


# One member of `tar --list --verbose --quoting-style=c`: the type letter of the mode
# string, then (after owner, size, date) the quoted name and, for links, the quoted target.
_LISTING = re.compile(r'^(?P<type>.)\S* [^"]*"(?P<name>(?:[^"\\]|\\.)*)"'
                      r'(?: (?P<link>->|link to) "(?P<target>(?:[^"\\]|\\.)*)")?$')
_C_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v",
              "\\": b"\\", '"': b'"', "?": b"?", "'": b"'"}
_MEMBER_TYPES = {"-": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE,
                 "p": tarfile.FIFOTYPE, "c": tarfile.CHRTYPE, "b": tarfile.BLKTYPE}


def _unquote(text):
    """Bytes of a name as GNU tar's C quoting style prints it."""
    out = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if char != "\\":
            out += char.encode("utf-8", "surrogateescape")
            index += 1
        elif text[index + 1] in "01234567":
            out.append(int(text[index + 1:index + 4], 8))
            index += 4
        else:
            out += _C_ESCAPES[text[index + 1]]
            index += 2
    return bytes(out)


def _member(line):
    """The member a line of tar's long listing describes.

    Every line tar prints on its standard output while extracting describes one member,
    so a line this cannot read is refused: the guard fails closed, never open.
    """
    found = _LISTING.match(line)
    if not found:
        raise ArchiveRejected("tar listed a member this restore cannot check: %s" % line[:200])
    if found.group("type") not in _MEMBER_TYPES:
        raise ArchiveRejected("tar lists a member this restore does not accept: %s" % line[:200])
    member = tarfile.TarInfo(os.fsdecode(_unquote(found.group("name"))))
    member.type = _MEMBER_TYPES[found.group("type")]
    if found.group("target") is not None:
        member.linkname = os.fsdecode(_unquote(found.group("target")))
    return member


def extract_archive(runner, archive, target):
    """Extract ``archive`` into ``target``, a private, empty staging directory, checking every member.

    GNU tar extracts and, with -vv, lists each member as stored (a leading '/'
    included); every listed member goes through the guard. GNU tar itself already
    strips leading '/', refuses '..' and makes symlinks to outside its directory only
    at the end, and all of it lands in the staging directory: on a refused member
    tar is stopped and the caller discards the staging directory, so nothing of the
    archive reaches a home. Returns the number of members.
    """
    tar = [runner.path("tar"), "--extract", "--file=-", "--directory", target, "-vv", "--quoting-style=c"] + \
        TAR_EXTRACT
    zstd = [runner.path("zstd"), "-q", "-d", "-c", archive]
    name = os.path.basename(archive)
    guard = _Guard()
    members = 0
    with _piped(zstd, tar) as (zstd_proc, tar_proc, zstd_errors, tar_errors):
        try:
            for raw in tar_proc.stdout:
                guard.check(_member(raw.decode("utf-8", "surrogateescape").rstrip("\n")))
                members += 1
        except ArchiveRejected as error:
            raise ArchiveRejected("%s: %s, %s." % (name, error, NOT_CAPTURED))
        finally:
            for proc in (tar_proc, zstd_proc):
                if proc.poll() is None and sys.exc_info()[0] is not None:
                    proc.kill()
            tar_rc, zstd_rc = tar_proc.wait(), zstd_proc.wait()
            tar_proc.stdout.close()
        if zstd_rc != 0:
            raise MigrationError("zstd could not decompress %s (exit code %d): %s" % (
                archive, zstd_rc, _tail(zstd_errors)))
        tar_errors.seek(0)
        complaints = tar_errors.read().decode("utf-8", "replace")
        refused = re.search(r'"(.*)": Member name contains \'\.\.\'', complaints)
        if refused:
            raise ArchiveRejected("%s: member %r has a '..' component, %s." % (name, refused.group(1), NOT_CAPTURED))
        # tar strips a leading '/' or '../' and says so; such a name was an escape attempt even if tar made it harmless.
        stripped = re.search(r"Removing leading `(.*)' from (member names|hard link targets)", complaints)
        if stripped:
            what = "member name" if stripped.group(2) == "member names" else "hard link target"
            raise ArchiveRejected("%s: a %s starts with %r, which has a '..' component or is an absolute path, %s." % (
                name, what, stripped.group(1), NOT_CAPTURED))
        if tar_rc != 0:
            raise MigrationError("tar failed extracting %s into %s (exit code %d): %s" % (
                archive, target, tar_rc, _tail(tar_errors)))
    return members
