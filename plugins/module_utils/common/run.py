# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running system tools from modules, with output that parses the same everywhere."""

from __future__ import annotations

import os
import shutil
import subprocess

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError

C_LOCALE = {"LANGUAGE": "C", "LC_ALL": "C"}
SYSTEM_DIRS = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
PACKAGE_OF = {
    "e2fsck": "e2fsprogs", "resize2fs": "e2fsprogs", "dumpe2fs": "e2fsprogs", "mkfs.ext4": "e2fsprogs",
    "mkfs.ext3": "e2fsprogs", "mkfs.ext2": "e2fsprogs", "btrfs": "btrfs-progs", "xfs_growfs": "xfsprogs",
    "blkid": "util-linux", "wipefs": "util-linux", "partx": "util-linux", "lsblk": "util-linux", "findmnt": "util-linux",
    "blkdiscard": "util-linux", "sfdisk": "fdisk", "udevadm": "udev", "mount": "mount", "umount": "mount",
    "zstd": "zstd", "grub-install": "grub-pc", "update-grub": "grub2-common", "grub-mkconfig": "grub-common",
    "xz": "xz-utils", "qemu-img": "qemu-utils", "visudo": "sudo", "mkfs.btrfs": "btrfs-progs", "mkfs.xfs": "xfsprogs",
    "lvs": "lvm2", "vgs": "lvm2", "pvs": "lvm2", "lvcreate": "lvm2", "lvreduce": "lvm2", "lvextend": "lvm2",
    "lvremove": "lvm2",
}


class Runner:
    """Runs commands through an AnsibleModule: argument lists only, C locale, clear failures."""

    def __init__(self, module):
        self.module = module
        self._paths = {}

    def _find(self, tool):
        return self.module.get_bin_path(tool, opt_dirs=SYSTEM_DIRS)

    def _execute(self, argv, data):
        return self.module.run_command(argv, environ_update=C_LOCALE, data=data, binary_data=data is not None)

    def path(self, tool):
        if tool not in self._paths:
            found = self._find(tool)
            if not found:
                raise MigrationError("%s is not installed on this host; install the %s package." % (
                    tool, PACKAGE_OF.get(tool, tool)))
            self._paths[tool] = found
        return self._paths[tool]

    def has(self, tool):
        try:
            self.path(tool)
        except MigrationError:
            return False
        return True

    def run(self, args, ok=(0,), data=None):
        """Run ``args`` and return (rc, stdout, stderr); raise unless rc is in ``ok``."""
        argv = [args[0] if os.path.isabs(args[0]) else self.path(args[0])] + [str(a) for a in args[1:]]
        rc, out, err = self._execute(argv, data)
        if ok is not None and rc not in ok:
            detail = (err or out or "").strip().splitlines()
            raise MigrationError("%s failed with exit code %d: %s" % (
                " ".join(argv), rc, " / ".join(detail[-3:]) or "no output"))
        return rc, out, err

    def output(self, args, ok=(0,)):
        return self.run(args, ok=ok)[1]


class ProcessRunner(Runner):
    """The same, without Ansible: for programs the collection installs on a host (the first-boot hook)."""

    def __init__(self):
        super().__init__(module=None)

    def _find(self, tool):
        return shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", "")] + SYSTEM_DIRS))

    def _execute(self, argv, data):
        env = dict(os.environ, **C_LOCALE)
        proc = subprocess.run(argv, input=data.encode("utf-8") if isinstance(data, str) else data,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False)
        return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
