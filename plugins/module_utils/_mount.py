# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mounting the store and the old root for the phases that need them."""

from __future__ import annotations

import os

from ansible_collections.inplace.migration.plugins.module_utils import _fs
from ansible_collections.inplace.migration.plugins.module_utils._errors import MigrationError


def resolve(runner, source):
    """The device node for a device path or a LABEL=, UUID=, PARTUUID= spec."""
    if source.startswith("/"):
        return os.path.realpath(source)
    rc, out, unused_err = runner.run(["blkid", "--list-one", "--output", "device", "--match-token", source], ok=None)
    if rc != 0 or not out.strip():
        raise MigrationError("no filesystem matches %s on this host." % source)
    return out.strip()


def _mounted_at(path):
    real = os.path.realpath(path)
    for unused_devnum, mountpoint, source in _fs.mounts():
        if mountpoint == real:
            return source
    return None


def mount(runner, source, path, readonly=False, check_mode=False):
    device = resolve(runner, source)
    current = _fs.mountpoint_of(device)
    if current == os.path.realpath(path):
        return {"changed": False, "device": device, "path": current}
    if current and not readonly:
        raise MigrationError("%s is already mounted at %s; unmount it first or use that path." % (device, current))
    if _mounted_at(path):
        raise MigrationError("something else (%s) is mounted at %s." % (_mounted_at(path), path))
    if check_mode:
        return {"changed": True, "device": device, "path": path}
    os.makedirs(path, mode=0o700, exist_ok=True)
    fstype = _fs.blkid(runner, device).get("TYPE")
    # Read-only, but with the journal replayed if a crash left one to replay: skipping the replay
    # (noload) would read the last-written files as they were before it, or as garbage.
    options = ["ro"] if readonly else []
    runner.run(["mount"] + (["-t", fstype] if fstype else []) + (["-o", ",".join(options)] if options else []) +
               [device, path])
    return {"changed": True, "device": device, "path": path}


def unmount(runner, path, check_mode=False):
    source = _mounted_at(path)
    if source is None:
        return {"changed": False, "path": None}
    if not check_mode:
        runner.run(["umount", path])
    return {"changed": True, "device": source, "path": None}
