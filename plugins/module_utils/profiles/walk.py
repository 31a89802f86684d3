# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What goes into a profile archive: include/exclude rules, the walk of a home, settings groups.

The walk streams the chosen paths, NUL-separated, into a list file that GNU tar
reads (``--null --files-from``), so memory stays flat however many files a home has.
Paths are bytes throughout: a file name may be any bytes but NUL and '/'.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import random
import stat

DEFAULT_EXCLUDE = [".cache", ".local/share/Trash", ".thumbnails"]
SAMPLE_FILES = 200
SAMPLE_BYTES_PER_FILE = 256 * 1024

# Settings groups: the paths (relative to the system root) each one carries.
SETTINGS_GROUPS = {
    "hostname": ["etc/hostname", "etc/hosts"],
    "network": ["etc/NetworkManager/system-connections", "etc/network/interfaces", "etc/network/interfaces.d"],
    "ssh_host_keys": ["etc/ssh/ssh_host_*"],
    "machine_id": ["etc/machine-id"],
    "timezone": ["etc/timezone", "etc/localtime"],
    "locale": ["etc/default/locale", "etc/locale.gen"],
    "crontabs": ["var/spool/cron/crontabs/{user}"],
    "printers": ["etc/cups/printers.conf", "etc/cups/classes.conf", "etc/cups/ppd"],
}


class Rules:
    """Which entries of a home are captured.

    Patterns are shell globs matched against the path relative to the home (``*``
    also matches ``/``). A directory that matches an exclude pattern is skipped with
    everything below it; with ``include`` set, only matching entries (and everything
    below a matching directory, and the directories leading to them) are captured.
    """

    def __init__(self, include=None, exclude=None, max_file_size=None):
        self.include = [os.fsencode(p.strip("/")) for p in include or []]
        self.exclude = [os.fsencode(p.strip("/")) for p in (DEFAULT_EXCLUDE if exclude is None else exclude)]
        self.max_file_size = max_file_size

    def excluded_by(self, relative):
        for pattern in self.exclude:
            if fnmatch.fnmatchcase(relative, pattern):
                return os.fsdecode(pattern)
        return None

    def included(self, relative):
        if not self.include:
            return True
        return any(fnmatch.fnmatchcase(relative, pattern) for pattern in self.include)

    def may_hold_included(self, relative):
        """Whether a directory not itself included may lead to something that is."""
        if not self.include:
            return True
        prefix = relative + b"/"
        return any(pattern.startswith(prefix) or b"*" in pattern or b"?" in pattern or b"[" in pattern
                   for pattern in self.include)


class Scan:
    """The result of walking one home."""

    def __init__(self):
        self.files = 0
        self.bytes = 0  # apparent size of regular files
        self.allocated = 0  # bytes actually on disk (sparse files count what they hold)
        self.excluded = {}  # pattern or reason -> {"files": n, "bytes": n}
        self.skipped = []  # sockets, devices: (relative path, kind)
        self.other_filesystems = []
        self.samples = []  # (path, size) of regular files for the compression estimate
        self.fingerprint = hashlib.sha256()
        self._seen = 0

    def exclude(self, reason, files, size):
        entry = self.excluded.setdefault(reason, {"files": 0, "bytes": 0})
        entry["files"] += files
        entry["bytes"] += size

    def sample(self, path, size, rng):
        """Reservoir sample of regular files, weighted towards the ones that hold data."""
        self._seen += 1
        if len(self.samples) < SAMPLE_FILES:
            self.samples.append((path, size))
        else:
            slot = rng.randrange(self._seen)
            if slot < SAMPLE_FILES:
                self.samples[slot] = (path, size)

    def summary(self):
        return {
            "files": self.files,
            "bytes": self.bytes,
            "allocated_bytes": self.allocated,
            "excluded": self.excluded,
            "skipped": [{"path": shown(p), "kind": k} for p, k in self.skipped],
            "other_filesystems": [shown(p) for p in self.other_filesystems],
        }


def shown(path):
    """A path as text a result can carry: bytes that are not UTF-8 as \\xNN escapes (Ansible refuses a result
    holding the surrogates os.fsdecode would make of them)."""
    return path.decode("utf-8", "backslashreplace")


def _children(directory):
    """Entries of ``directory``, sorted so that ``pop()`` yields them in name order."""
    with os.scandir(directory) as entries:
        return sorted(entries, key=lambda e: e.name, reverse=True)


def _subtree_size(path):
    files = size = 0
    for base, dirs, names in os.walk(path):
        for name in names:
            try:
                info = os.lstat(os.path.join(base, name))
            except OSError:
                continue
            files += 1
            if stat.S_ISREG(info.st_mode):
                size += info.st_size
        files += len(dirs)
    return files, size


def walk(home, rules, listing=None, seed=0):
    """Walk ``home`` by the rules; write tar's NUL-separated list to ``listing`` (a binary file) if given."""
    home = os.fsencode(home)
    scan = Scan()
    rng = random.Random(seed)
    top = os.lstat(home)

    def emit(relative, info):
        scan.fingerprint.update(b"%s\0%o %d %d %d %d\n" % (
            relative, info.st_mode, info.st_uid, info.st_gid, info.st_size, info.st_mtime_ns))
        if listing is not None:
            listing.write(b"./" + relative + b"\0" if relative else b".\0")

    emit(b"", top)
    # Pre-order, depth first: a directory's whole subtree follows it in the list, so tar
    # sets each directory's mtime once, after its last entry.
    # Each frame: (sorted children left to visit, path relative to home, taken whole by an include).
    stack = [(_children(home), b"", not rules.include)]
    while stack:
        children, relative_dir, taken = stack[-1]
        if not children:
            stack.pop()
            continue
        entry = children.pop()
        relative = os.path.join(relative_dir, entry.name) if relative_dir else entry.name
        info = entry.stat(follow_symlinks=False)
        mode = info.st_mode
        reason = rules.excluded_by(relative)
        if reason:
            files, size = _subtree_size(entry.path) if stat.S_ISDIR(mode) else (0, info.st_size)
            scan.exclude(reason, files + 1, size)
        elif stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            scan.skipped.append((relative, "socket" if stat.S_ISSOCK(mode) else "device"))
        elif stat.S_ISDIR(mode):
            if info.st_dev != top.st_dev:
                scan.other_filesystems.append(relative)
                continue
            whole = taken or rules.included(relative)
            # A directory on the way to included files is listed too, so tar restores
            # its owner and mode rather than making them up.
            if whole or rules.may_hold_included(relative):
                scan.files += 1
                emit(relative, info)
                stack.append((_children(entry.path), relative, whole))
        elif taken or rules.included(relative):
            if stat.S_ISREG(mode) and rules.max_file_size is not None and info.st_size > rules.max_file_size:
                scan.exclude("max_file_size", 1, info.st_size)
                continue
            scan.files += 1
            if stat.S_ISREG(mode):
                scan.bytes += info.st_size
                allocated = min(info.st_size, info.st_blocks * 512)
                scan.allocated += allocated
                # A sparse file's first bytes are mostly hole, and tar stores only its data:
                # sampling it would make the whole home look more compressible than it is.
                if info.st_size and allocated == info.st_size:
                    scan.sample(entry.path, info.st_size, rng)
            emit(relative, info)
    return scan


def settings_paths(root, groups, users):
    """Relative paths (bytes) under ``root`` that the settings ``groups`` capture and exist."""
    root = os.fsencode(root)
    found = []
    for group in groups:
        for pattern in SETTINGS_GROUPS[group]:
            expanded = [pattern.format(user=u) for u in users] if "{user}" in pattern else [pattern]
            for item in expanded:
                directory, name = os.path.split(os.fsencode(item))
                base = os.path.join(root, directory)
                if not os.path.isdir(base):
                    continue
                for candidate in sorted(os.listdir(base)):
                    if fnmatch.fnmatchcase(candidate, name):
                        found.extend(_expand(root, os.path.join(directory, candidate)))
    return found


def _expand(root, relative):
    path = os.path.join(root, relative)
    if os.path.isdir(path) and not os.path.islink(path):
        listed = [relative]
        for base, dirs, names in os.walk(path):
            for name in sorted(dirs) + sorted(names):
                listed.append(os.path.relpath(os.path.join(base, name), root))
        return listed
    return [relative]
