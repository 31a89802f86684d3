# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Block devices: what the kernel and blkid say about them, and finding one by what it is.

Every lookup of a device by a spec (a path, UUID=, LABEL=, PARTUUID=, PARTLABEL=) goes
through here, reading the signatures on the devices as they are now (never blkid's
cache).
"""

from __future__ import annotations

import os

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError


def blkid(runner, device):
    """Low-level probe of the signatures on ``device`` (not blkid's cache)."""
    rc, out, unused_err = runner.run(["blkid", "-p", "-o", "export", device], ok=(0, 2))
    values = {}
    for line in out.splitlines():
        key, unused_sep, value = line.partition("=")
        values[key] = value
    if rc == 2 or values.get("USAGE") not in (None, "filesystem", "other"):
        return {}
    return values


def resolve(runner, source):
    """The device node for a device path or a LABEL=, UUID=, PARTUUID= spec."""
    if source.startswith("/"):
        return os.path.realpath(source)
    rc, out, unused_err = runner.run(["blkid", "--list-one", "--output", "device", "--match-token", source], ok=None)
    if rc != 0 or not out.strip():
        raise MigrationError("no filesystem matches %s on this host." % source)
    return out.strip()
