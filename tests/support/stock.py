"""What the old system is allowed to need: the tools the phases that run there (locate, preflight, the
maintenance staging) may call, each with the package of a plain Debian 12 install that holds it.

tests/unit records the tools preflight calls and holds them to this list; tests/lab checks that the
lab's old PC, built as such an install, has every one. A new tool on the old system goes here first.
"""

from __future__ import annotations

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
