# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filesystems: reading their size and use, checking, shrinking, growing, formatting.

One class per kind behind the same methods, so partition_space never asks which
tool a filesystem needs.
"""

from __future__ import annotations

import contextlib
import re

from ansible_collections.inplace.migration.plugins.module_utils.disk.devices import blkid
from ansible_collections.inplace.migration.plugins.module_utils.disk.model import Filesystem
from ansible_collections.inplace.migration.plugins.module_utils.disk.mount import mountpoint_of, temporary_mount
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import align_up

# e2fsck exit codes 0 (clean) and 1 (errors corrected) leave a usable filesystem.
E2FSCK_FIXED = (0, 1)


def key_values(text, separator=":"):
    values = {}
    for line in text.splitlines():
        if separator in line:
            key, unused_sep, value = line.partition(separator)
            values[key.strip()] = value.strip()
    return values


class FilesystemKind:
    """A filesystem this collection can read and perhaps resize."""

    name = None

    def probe(self, runner, device, blkid, mountpoint):
        return Filesystem(type=blkid.get("TYPE"), uuid=blkid.get("UUID"), label=blkid.get("LABEL"),
                          mountpoint=mountpoint)

    def check(self, runner, device, repair=False):
        """Check the (unmounted) filesystem; with ``repair``, fix what can be fixed safely."""

    def shrink(self, runner, device, size, mountpoint):
        raise MigrationError("%s filesystems cannot be shrunk." % self.name)

    def grow(self, runner, device, mountpoint):
        raise MigrationError("%s filesystems cannot be grown by this module." % self.name)


def _has_superblock_backup(group, features, backup_groups):
    if group == 0:
        return True
    if "sparse_super2" in features:
        return group in backup_groups
    if "sparse_super" not in features or group == 1:
        return True
    for base in (3, 5, 7):
        power = base
        while power < group:
            power *= base
        if power == group:
            return True
    return False


def ext_minimum_size(header):
    """Smallest size (bytes) an ext filesystem described by ``dumpe2fs -h`` output can be shrunk to.

    The same sum resize2fs makes (data blocks, plus the metadata of the block groups
    kept, plus a flex group of inode-table slack, plus extent-tree margin), without
    its miscount of the last group's capacity: e2fsprogs 1.47 reports nearly twice
    the data as the minimum whenever the data fits in fewer groups than one flex
    group holds (under 2 GiB with 4 KiB blocks), which would forbid any useful
    shrink of a small system partition.
    """
    fields = key_values(header) if isinstance(header, str) else header
    block = int(fields["Block size"])
    count = int(fields["Block count"])
    first = int(fields.get("First block", "0"))
    per_group = int(fields["Blocks per group"])
    inodes_per_group = int(fields["Inodes per group"])
    inode_blocks = int(fields["Inode blocks per group"])
    features = fields.get("Filesystem features", "").split()
    groups = -(-(count - first) // per_group)
    if "meta_bg" in features:
        old_desc = int(fields.get("First meta block group", "0"))
    else:
        per_block = block // int(fields.get("Group descriptor size", "32"))
        old_desc = -(-groups // per_block) + int(fields.get("Reserved GDT blocks", "0"))
    backup_groups = [int(g) for g in fields.get("Backup block groups", "").split() if g.isdigit()]

    def overhead(group):
        extra = 1 + old_desc if _has_superblock_backup(group, features, backup_groups) else 0
        return inode_blocks + 2 + extra

    overheads = [overhead(g) for g in range(groups)]
    inodes_used = int(fields["Inode count"]) - int(fields["Free inodes"])
    data = count - int(fields["Free blocks"]) - sum(overheads)
    kept = max(1, -(-inodes_used // inodes_per_group))
    while kept < groups and sum(per_group - o for o in overheads[:kept]) < data:
        kept += 1
    flex = int(fields.get("Flex block group size", "1")) if "flex_bg" in features else 1
    slack = sum(overheads[kept:min(groups, align_up(kept, flex))])
    needed = first + data + sum(overheads[:kept]) + slack + 50
    if "extent" in features:
        per_extent_block = block // 12 - 1
        needed += min((count - needed) // 500, max(-(-data // per_extent_block), inodes_used)) if count > needed else 0
    return min(needed, count) * block


class Ext(FilesystemKind):
    name = "ext"

    def probe(self, runner, device, blkid, mountpoint):
        header = key_values(runner.output(["dumpe2fs", "-h", device]))
        block = int(header["Block size"])
        count = int(header["Block count"])
        free = int(header["Free blocks"])
        return Filesystem(
            type=blkid.get("TYPE"), uuid=blkid.get("UUID"), label=blkid.get("LABEL"),
            size=count * block, used=(count - free) * block, min_size=ext_minimum_size(header),
            mountpoint=mountpoint)

    def _resize2fs_minimum(self, runner, device):
        found = re.search(r"minimum size of the filesystem:\s*(\d+)", runner.output(["resize2fs", "-P", device]))
        block = int(key_values(runner.output(["dumpe2fs", "-h", device]))["Block size"])
        return int(found.group(1)) * block if found else None

    def check(self, runner, device, repair=False):
        if repair:
            rc, out, err = runner.run(["e2fsck", "-f", "-p", device], ok=None)
            if rc not in E2FSCK_FIXED:
                raise MigrationError(
                    "e2fsck found errors on %s that it cannot repair on its own (exit code %d); run "
                    "'e2fsck -f %s' by hand before migrating: %s" % (device, rc, device, (err or out).strip()[-300:]))
        else:
            rc, out, err = runner.run(["e2fsck", "-f", "-n", device], ok=None)
            if rc != 0:
                raise MigrationError("e2fsck reports %s is not clean (exit code %d): %s" % (
                    device, rc, (out + err).strip()[-300:]))

    def shrink(self, runner, device, size, mountpoint):
        if mountpoint:
            raise MigrationError("%s is mounted at %s; ext filesystems shrink only offline." % (device, mountpoint))
        self.check(runner, device, repair=True)
        command = ["resize2fs", device, "%dK" % (size // 1024)]
        resize2fs_minimum = self._resize2fs_minimum(runner, device)
        if resize2fs_minimum is None or size < resize2fs_minimum:
            # Below resize2fs's own (overcounted, see ext_minimum_size) estimate it wants -f;
            # the planner kept the size above the real minimum plus headroom, and the
            # filesystem was checked just now, which is the other thing -f skips.
            command.insert(1, "-f")
        runner.run(command)

    def grow(self, runner, device, mountpoint):
        if not mountpoint:
            self.check(runner, device, repair=True)
        runner.run(["resize2fs", device])


class Btrfs(FilesystemKind):
    name = "btrfs"

    def probe(self, runner, device, blkid, mountpoint):
        with self._mounted(runner, device, mountpoint, readonly=True) as directory:
            show = runner.output(["btrfs", "filesystem", "show", "--raw", directory])
            if int(re.search(r"Total devices (\d+)", show).group(1)) != 1:
                raise MigrationError("the btrfs filesystem on %s spans several devices; only single-device "
                                     "btrfs can be resized here." % device)
            size = int(re.search(r"devid\s+\d+\s+size\s+(\d+)", show).group(1))
            used = int(key_values(runner.output(["btrfs", "filesystem", "usage", "-b", directory]))["Used"].split()[0])
            minimum = int(runner.output(["btrfs", "inspect-internal", "min-dev-size", directory]).split()[0])
        return Filesystem(type="btrfs", uuid=blkid.get("UUID"), label=blkid.get("LABEL"), size=size, used=used,
                          min_size=minimum, mountpoint=mountpoint)

    @contextlib.contextmanager
    def _mounted(self, runner, device, mountpoint, readonly=False):
        if mountpoint:
            yield mountpoint
        else:
            with temporary_mount(runner, device, "btrfs", readonly=readonly) as directory:
                yield directory

    def _devid(self, runner, directory):
        show = runner.output(["btrfs", "filesystem", "show", "--raw", directory])
        return re.search(r"devid\s+(\d+)", show).group(1)

    def check(self, runner, device, repair=False):
        rc, out, err = runner.run(["btrfs", "check", "--readonly", device], ok=None)
        if rc != 0:
            raise MigrationError("btrfs check reports errors on %s (exit code %d): %s" % (
                device, rc, (out + err).strip()[-300:]))

    def shrink(self, runner, device, size, mountpoint):
        with self._mounted(runner, device, mountpoint) as directory:
            runner.run(["btrfs", "filesystem", "resize", "%s:%d" % (self._devid(runner, directory), size), directory])

    def grow(self, runner, device, mountpoint):
        with self._mounted(runner, device, mountpoint) as directory:
            runner.run(["btrfs", "filesystem", "resize", "%s:max" % self._devid(runner, directory), directory])


class Xfs(FilesystemKind):
    name = "xfs"

    def grow(self, runner, device, mountpoint):
        if mountpoint:
            runner.run(["xfs_growfs", mountpoint])
            return
        with temporary_mount(runner, device, "xfs") as directory:
            runner.run(["xfs_growfs", directory])


KINDS = {"ext2": Ext(), "ext3": Ext(), "ext4": Ext(), "btrfs": Btrfs(), "xfs": Xfs()}


def kind(fstype):
    return KINDS.get(fstype, FilesystemKind())


def probe(runner, device, mount_table=None):
    """The filesystem on ``device``, or None when it carries none blkid recognises."""
    found = blkid(runner, device)
    if not found.get("TYPE"):
        return None
    mountpoint = mountpoint_of(device, mount_table)
    return kind(found["TYPE"]).probe(runner, device, found, mountpoint)


def make(runner, device, fstype, label):
    """Format ``device`` with no blocks reserved for root: a store's space is all for data."""
    if fstype not in ("ext2", "ext3", "ext4"):
        raise MigrationError("a store can be formatted as ext2, ext3 or ext4, not %s." % fstype)
    runner.run(["wipefs", "-a", "-q", device])
    runner.run(["mkfs.%s" % fstype, "-F", "-q", "-m", "0", "-L", label, device])
