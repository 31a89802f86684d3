# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files written whole or not at all: temporary file, fsync, rename, fsync of the directory.

Whatever the collection records (the store's journal, manifests, the completion record,
files it puts into a root) survives a power cut as the old or the new version, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError

PRIVATE_FILE_MODE = 0o600


def fsync_directory(path):
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def make_directories(path, mode=0o755):
    """Make ``path`` and its missing parents, each one's entry synced in its parent, so a file put there survives."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        os.mkdir(directory, mode)
        fsync_directory(os.path.dirname(directory))


def atomic_write(path, data, mode=PRIVATE_FILE_MODE):
    """Replace ``path`` with ``data`` (bytes) so that a crash leaves the old or the new file, never a mix."""
    directory = os.path.dirname(path) or "."
    descriptor, temporary = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.rename(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_directory(directory)


def atomic_write_json(path, value, mode=PRIVATE_FILE_MODE):
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8"), mode)


def read_json(path):
    """The JSON value in ``path``, or None when the file does not exist."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise MigrationError("%s is damaged (%s); it was not written by this collection or was cut short." % (
            path, error))
