# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The capture manifest (``inplace/profiles/manifest.json`` on the store) and when it may be trusted.

profile_capture writes it last, atomically, after every archive was written and read back. It
records every account the selection covers: a user whose home was archived with the archive's
name, sha256 and size; a user whose home is not archived (``home_archived`` false: kept on a
partition the reimage keeps, or none at all) with the same account data and the reason, so
that restore recreates the account all the same. profile_restore and image_deploy's gate read
it only when it says ``complete`` and ``verified``.
"""

from __future__ import annotations

import os

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.state.store import MANIFEST, PROFILES
from ansible_collections.inplace.migration.plugins.module_utils.state.files import read_json

# 2: users whose home is not archived are recorded too (home_archived false). In format 1 every user has an archive.
FORMAT = 2
READABLE = (1, 2)


def archived(entry):
    """Whether this user entry has an archive of its home on the store."""
    return entry.get("home_archived", True)


def archive_entries(manifest):
    """The entries that name an archive: users whose home was archived, then the settings."""
    entries = [u for u in manifest.get("users", []) if archived(u)]
    return entries + ([manifest["settings"]] if manifest.get("settings") else [])


def problem(store, manifest, check_archives=False):
    """Why ``manifest`` (as read from ``store``, or None) is not a complete, verified capture, or None."""
    if manifest is None:
        return "holds no profile manifest at %s" % MANIFEST
    if not manifest.get("complete") or not manifest.get("verified"):
        return "holds a capture that is not complete and verified"
    if manifest.get("format") not in READABLE:
        return "holds a profile manifest of format %s, which this collection does not read" % manifest.get("format")
    for entry in archive_entries(manifest) if check_archives else ():
        path = store.path(PROFILES, entry["archive"])
        if not os.path.isfile(path) or os.path.getsize(path) != entry["bytes"]:
            return "lacks the archive %s the manifest records, or holds it at another size" % entry["archive"]
    return None


def load(store):
    """The store's manifest, when it records a complete and verified capture; else a MigrationError."""
    manifest = read_json(store.path(MANIFEST))
    found = problem(store, manifest)
    if found:
        raise MigrationError("the store %s %s; run profile_capture %s." % (
            store.root, found, "first" if manifest is None else "again"))
    return manifest


def require_capture(store):
    """image_deploy's gate: raise unless ``store`` holds a complete, verified capture with all its archives."""
    found = problem(store, read_json(store.path(MANIFEST)), check_archives=True)
    if found:
        raise MigrationError("the store %s holds no complete and verified capture (it %s), so nothing was written; run "
                             "profile_capture first, or set require_capture=false for a PC whose profiles are not "
                             "kept." % (store.root, found))
