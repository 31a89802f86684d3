# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration store: its layout and the journal every phase records progress in (its lock: state.lock).

The store outlives power cuts and reboots between phases, so whatever is written
here is written whole or not at all (temporary file, fsync, rename, fsync of the
directory), and the journal is the single source of truth for "how far did we get".
"""

from __future__ import annotations

import os
import tempfile
import time

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.state.files import (
    atomic_write_json, fsync_directory, read_json,
)

FORMAT_VERSION = 1
TOP = "inplace"
JOURNAL = "inplace/journal.json"
JOURNAL_LOCK = "inplace/journal.lock"
PROFILES = "inplace/profiles"
MANIFEST = "inplace/profiles/manifest.json"
IMAGES = "inplace/images"
BOOT = "inplace/boot"
PRIVATE_DIR_MODE = 0o700


class Store:
    """A mounted store: ``root`` is its mount point."""

    def __init__(self, root):
        self.root = root

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def check(self, writable=True):
        """Refuse a store that is missing, not a directory, or (with ``writable``) read-only."""
        if not os.path.isdir(self.root):
            raise MigrationError("the store %s does not exist or is not a directory; mount the store there first." %
                                 self.root)
        if writable and not os.access(self.root, os.W_OK):
            raise MigrationError("the store %s is not writable; mount it read-write." % self.root)
        if writable:
            try:
                probe = tempfile.TemporaryFile(dir=self.root)
                probe.close()
            except OSError as error:
                raise MigrationError("the store %s is not writable (%s); mount it read-write." % (self.root, error.strerror))

    def ensure_dir(self, relative):
        """Create ``relative`` (and the store's top directory) root-only, as the store holds password hashes."""
        path = self.path(relative)
        current = self.root
        for part in relative.split("/"):
            current = os.path.join(current, part)
            if not os.path.isdir(current):
                os.mkdir(current, PRIVATE_DIR_MODE)
                fsync_directory(os.path.dirname(current))
            os.chmod(current, PRIVATE_DIR_MODE)
        return path

    def free_bytes(self):
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    @property
    def journal(self):
        return Journal(self)


class Journal:
    """Phase and step records, as one JSON document rewritten atomically on every change."""

    def __init__(self, store):
        self.store = store
        self.path = store.path(JOURNAL)

    def load(self):
        data = read_json(self.path)
        if data is None:
            return {"version": FORMAT_VERSION, "records": {}}
        if data.get("version") != FORMAT_VERSION:
            raise MigrationError("the journal %s has format version %s; this collection reads version %d." % (
                self.path, data.get("version"), FORMAT_VERSION))
        return data

    def get(self, key, default=None):
        return self.load()["records"].get(key, default)

    def put(self, key, value):
        """Record ``value`` under ``key``, durable before this returns."""
        self.store.ensure_dir(TOP)
        data = self.load()
        data["records"][key] = value
        data["updated"] = time.time()
        atomic_write_json(self.path, data)

    def update(self, key, **fields):
        record = dict(self.get(key) or {})
        record.update(fields)
        self.put(key, record)
        return record

    def remove(self, key):
        data = self.load()
        if key in data["records"]:
            del data["records"][key]
            atomic_write_json(self.path, data)
