# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether an image carries Debian's signed boot chain (and LVM's tools), read on the controller before any PC
changes.

A root-filesystem archive is streamed once through its decompressor into ``tar``, which extracts only
shim, the signed GRUB and the kernels into a scratch directory; ``boot.efi.signed_boot_chain`` then
judges those files. A raw image is not looked into here (its filesystem would have to be mounted or
read block by block), so its chain stays unchecked, which preflight refuses when Secure Boot is on.
"""

from __future__ import annotations

import os
import subprocess

from ansible_collections.inplace.migration.plugins.module_utils.boot import efi as _efi
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError

DECOMPRESSORS = {"zst": ["zstd", "-dcq"], "gz": ["gzip", "-dc"], "xz": ["xz", "-dc"], None: None}
ARCHIVE_SUFFIXES = {".tar": None, ".tar.zst": "zst", ".tar.gz": "gz", ".tgz": "gz", ".tar.xz": "xz"}
# LVM's tool: a new system whose root is a logical volume needs it in its initramfs to find that root.
LVM_PATHS = ["usr/sbin/lvm", "sbin/lvm"]
MEMBERS = [path.lstrip("/") for path in _efi.SHIM_PATHS + _efi.GRUB_SIGNED_PATHS] + ["boot/vmlinuz-*"] + LVM_PATHS
NOT_FOUND = ("Not found in archive", "Exiting with failure status due to previous errors")


def archive_compression(path):
    """``(True, compression)`` for a root-filesystem archive named as one, ``(False, None)`` otherwise."""
    name = os.path.basename(path).lower()
    for suffix, compression in sorted(ARCHIVE_SUFFIXES.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return True, compression
    return False, None


def extract_boot_files(path, compression, into):
    """Extract shim, the signed GRUB, ``boot/vmlinuz-*`` and LVM's tool (with or without a leading ``./``) into
    ``into``."""
    patterns = MEMBERS + ["./" + member for member in MEMBERS]
    tar = ["tar", "--extract", "--file=-", "--directory", into, "--wildcards", "--no-same-owner",
           "--no-same-permissions", "--"] + patterns
    with open(path, "rb") as source:
        if DECOMPRESSORS[compression] is None:
            proc = subprocess.run(tar, stdin=source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
            unpack_rc = 0
        else:
            unpack = subprocess.Popen(DECOMPRESSORS[compression], stdin=source, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
            proc = subprocess.run(tar, stdin=unpack.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  check=False)
            unpack.stdout.close()
            unpack_rc = unpack.wait()
            unpack_error = unpack.stderr.read().decode("utf-8", "replace").strip()
            unpack.stderr.close()
            if unpack_rc != 0:
                raise MigrationError("the image %s could not be decompressed to look for its boot chain (%s)." % (
                    path, unpack_error or "exit status %d" % unpack_rc))
    errors = [line for line in proc.stderr.decode("utf-8", "replace").splitlines()
              if line.strip() and not any(text in line for text in NOT_FOUND)]
    if proc.returncode not in (0, 2) or errors:
        raise MigrationError("the image %s could not be read as a tar archive to look for its boot chain (%s)." % (
            path, "; ".join(errors) or "exit status %d" % proc.returncode))


def image_boot_chain(path, scratch):
    """``efi.signed_boot_chain`` of the image at ``path`` with ``checked: True``, or ``{"checked": False,
    "reason": ...}`` for an image this does not look into. ``scratch`` is an empty directory to extract into."""
    archive, compression = archive_compression(path)
    if not archive:
        return {"checked": False, "reason": "%s is not a root-filesystem archive (.tar, .tar.zst, .tar.gz, .tar.xz), "
                                            "whose boot files are read here" % os.path.basename(path)}
    extract_boot_files(path, compression, scratch)
    has_lvm = any(os.path.lexists(os.path.join(scratch, member)) for member in LVM_PATHS)
    return dict(_efi.signed_boot_chain(scratch), checked=True, lvm=has_lvm)
