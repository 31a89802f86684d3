"""What the old system is allowed to need: the tools the phases that run there (locate, preflight, the
maintenance staging) may call, each with the package of a plain Debian 12 install that holds it.

tests/unit records the tools preflight calls and holds them to this list; tests/lab checks that the
lab's old PC, built as such an install, has every one. A new tool on the old system goes here first.
"""

from __future__ import annotations

import os
import shutil
import subprocess

SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

OLD_SYSTEM_TOOLS = {
    # util-linux (required), mount (required)
    "lsblk": "util-linux", "findmnt": "util-linux", "blkid": "util-linux", "mount": "mount", "umount": "mount",
    # udev (important); without it preflight reads the disk all the same
    "udevadm": "udev",
    # e2fsprogs (required): probing ext filesystems, sizing the store by formatting a sparse file
    "dumpe2fs": "e2fsprogs", "resize2fs": "e2fsprogs", "mkfs.ext4": "e2fsprogs",
    # the maintenance staging (roles/maintenance_env, roles/common's reboot)
    "update-grub": "grub2-common", "grub-reboot": "grub2-common", "systemd-run": "systemd",
    "systemctl": "systemd",
}


def disk_without_pyparted(tmp_path, monkeypatch, size=200 * 1024 * 1024,
                          table=b"label: dos\nstart=1MiB, size=99MiB, type=83\n"):
    """A disk as preflight sees it on a stock PC: pyparted missing, and an image file partitioned by sfdisk
    standing for the disk (the one check that needs a real block device is stood in for). Returns its path."""
    from ansible_collections.inplace.migration.plugins.module_utils.disk import parted as _parted
    from ansible_collections.inplace.migration.plugins.module_utils.disk import table as _table
    monkeypatch.setattr(_parted, "parted", None)
    monkeypatch.setattr(_parted, "HAS_PARTED", False)
    monkeypatch.setattr(_table, "_check_whole_disk", lambda path: None)
    disk = str(tmp_path / "disk.img")
    with open(disk, "wb") as handle:
        handle.truncate(size)
    subprocess.run([shutil.which("sfdisk", path=SBIN), "--quiet", "--no-reread", "--no-tell-kernel", disk],
                   input=table, check=True, capture_output=True)
    return disk
