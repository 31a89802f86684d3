# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mounts: what is mounted where, private temporary mounts, and mounting the store and the old root."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile

from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError


def _unescape_mount(path):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def mounts():
    """(major:minor, mount point, source) of every mount this process can see."""
    entries = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            left, unused_sep, right = line.partition(" - ")
            fields = left.split()
            source = right.split()[1] if len(right.split()) > 1 else ""
            entries.append((fields[2], _unescape_mount(fields[4]), source))
    return entries


def active_swaps():
    try:
        with open("/proc/swaps") as handle:
            return {os.path.realpath(line.split()[0]) for line in handle.readlines()[1:] if line.strip()}
    except OSError:
        return set()


def mountpoint_of(device, mount_table=None):
    """Where ``device`` is mounted (the first mount point), or None."""
    try:
        number = _devices.device_number(device)
    except OSError:
        return None
    real = os.path.realpath(device)
    for devnum, mountpoint, source in (mount_table if mount_table is not None else mounts()):
        if devnum == number or (source.startswith("/") and os.path.realpath(source) == real):
            return mountpoint
    if real in active_swaps():
        return "[SWAP]"
    return None


@contextlib.contextmanager
def temporary_mount(runner, device, fstype, readonly=False):
    """Mount ``device`` on a private directory for the duration of the block."""
    directory = tempfile.mkdtemp(prefix="inplace-mnt-", dir="/run" if os.path.isdir("/run") else None)
    options = ["-o", "ro"] if readonly else []
    try:
        runner.run(["mount", "-t", fstype] + options + [device, directory])
        try:
            yield directory
        finally:
            runner.run(["umount", directory])
    finally:
        os.rmdir(directory)


def _mounted_at(path):
    real = os.path.realpath(path)
    for unused_devnum, mountpoint, source in mounts():
        if mountpoint == real:
            return source
    return None


def mounted_device(runner, path):
    """The device of the filesystem mounted at ``path`` as findmnt names it (a btrfs subvolume's without it)."""
    rc, out, unused_err = runner.run(["findmnt", "--noheadings", "--output", "SOURCE", "--mountpoint", path], ok=None)
    source = out.strip().split("[")[0] if rc == 0 else ""
    if not source.startswith("/dev/"):
        raise MigrationError("%s is not a mount point of a block device, so it names no disk." % path)
    return source


def disk_holding(runner, path):
    """The whole disk holding the partition (or the logical volume on one disk) that the filesystem ``path`` is
    on (findmnt's source for it), or None when that filesystem is on no such device (a RAM root, tmpfs, a whole
    disk, other device mapper)."""
    rc, out, unused_err = runner.run(["findmnt", "--noheadings", "--first-only", "--output", "SOURCE", "--target",
                                      path], ok=None)
    source = out.strip().split("[")[0] if rc == 0 else ""
    if not source.startswith("/dev/") or not _devices.is_block_device(source):
        return None
    if _devices.is_partition(source):
        return _devices.parent_disk(source)
    disk = _devices.parent_disk(source) if _devices.lv_uuid(source) else None
    return disk if disk and disk != os.path.realpath(source) else None


def find_on_disk_of(runner, source, disk_of):
    """(the one device ``source`` names on the disk holding ``disk_of``, the devices it names elsewhere).

    ``disk_of`` is a device (a path or a spec) or a mount point such as ``/`` (the device mounted there).
    """
    if os.path.isdir(disk_of):
        disk_of = mounted_device(runner, disk_of)
    scan = _devices.Scan(runner)
    disk = scan.disk_of(disk_of)
    device, ignored = scan.on_disk(source, disk)
    if device is None:
        raise MigrationError("no device on %s (the disk holding %s) has %s%s; put it back or give the device." % (
            disk, disk_of, source, ", only %s elsewhere, which is not taken" % ", ".join(ignored) if ignored else ""))
    return device, ignored


def mount(runner, source, path, readonly=False, check_mode=False, disk_of=None):
    """Mount the one device ``source`` names (a path or a UUID=, LABEL=, PARTUUID=, PARTLABEL= spec) at ``path``;
    with ``disk_of``, only a device on the disk holding ``disk_of`` is taken (see find_on_disk_of)."""
    ignored = []
    if disk_of:
        device, ignored = find_on_disk_of(runner, source, disk_of)
    else:
        device = _devices.find(runner, source)
    result = _mount(runner, device, path, readonly, check_mode)
    if disk_of:
        result["ignored"] = ignored
    return result


def _mount(runner, device, path, readonly, check_mode):
    current = mountpoint_of(device)
    if current == os.path.realpath(path):
        return {"changed": False, "device": device, "path": current}
    if current and not readonly:
        raise MigrationError("%s is already mounted at %s; unmount it first or use that path." % (device, current))
    if _mounted_at(path):
        raise MigrationError("something else (%s) is mounted at %s; unmount it, or give another path to mount the "
                             "store on." % (_mounted_at(path), path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise MigrationError("path=%s exists and is not a directory; give a directory to mount the store on." % path)
    fstype = _devices.blkid(runner, device).get("TYPE")
    if fstype in (None, "swap"):
        raise MigrationError("%s holds %s; name the store's device, the one partition_space made." % (
            device, "swap, not a filesystem to mount" if fstype else "no filesystem blkid recognises"))
    if check_mode:
        return {"changed": True, "device": device, "path": path}
    os.makedirs(path, mode=0o700, exist_ok=True)
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
