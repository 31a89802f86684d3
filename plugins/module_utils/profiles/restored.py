# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What has been restored into a root, recorded in that root.

The store's journal says what a restore did; only the root restored into can say what it holds.
A root written again (a second image write after a failed first boot, say) holds none of it,
and its restore must start over. So restore reads and records its progress in the target root,
``/var/lib/inplace-migration/restored.json`` (written whole or not at all, ``state.files``):
the users and settings groups restored there and the id maps their files follow. The record
names the capture it belongs to; a record of another capture (an image built from a PC that
was migrated once) counts for nothing.
"""

from __future__ import annotations

import os

from ansible_collections.inplace.migration.plugins.module_utils.common.rootfs import inside
from ansible_collections.inplace.migration.plugins.module_utils.state.files import atomic_write_json, read_json

MARKER = "/var/lib/inplace-migration/restored.json"
DIRECTORY_MODE = 0o755


def capture_id(manifest):
    """What tells one capture from another: the source's fingerprint and when the manifest was made."""
    return "%s@%s" % (manifest.get("fingerprint"), manifest.get("created"))


class Marker:
    """The record in ``root`` of what was restored into it from the capture ``manifest`` describes."""

    def __init__(self, root, manifest):
        self.path = inside(root, MARKER)
        self.capture = capture_id(manifest)
        found = read_json(self.path)
        if not found or found.get("capture") != self.capture:
            found = {"capture": self.capture, "users": {}, "settings": {}, "uid_map": {}, "gid_map": {}}
        self.data = found

    def user_restored(self, name):
        return bool(self.data["users"].get(name, {}).get("restored"))

    def settings_restored(self, group):
        return bool(self.data["settings"].get(group, {}).get("restored"))

    def id_maps(self):
        """({old uid: new uid}, {old gid: new gid}) the files restored so far follow."""
        return ({int(k): v for k, v in self.data.get("uid_map", {}).items()},
                {int(k): v for k, v in self.data.get("gid_map", {}).items()})

    def record(self, kind, name, entry, uid_map, gid_map):
        """Record ``name`` (a user or a settings group, by ``kind``) as restored, durably.

        The caller has made what was restored durable first (``os.sync``): this record is a promise.
        """
        self.data["users" if kind == "user" else "settings"][name] = dict(entry, restored=True)
        self.data["uid_map"] = {str(k): v for k, v in uid_map.items()}
        self.data["gid_map"] = {str(k): v for k, v in gid_map.items()}
        os.makedirs(os.path.dirname(self.path), mode=DIRECTORY_MODE, exist_ok=True)
        atomic_write_json(self.path, self.data)
