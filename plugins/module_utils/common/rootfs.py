# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading inside another system's root (the old root mounted read-only, the new root being fixed up),
never outside it: absolute symlinks in that root resolve within it."""

from __future__ import annotations

import os
import stat

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError


def inside(root, path, hops=40):
    """``path`` (absolute, as the other system sees it) resolved within ``root``, symlinks included."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved = []
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *(resolved + [part]))
        if os.path.islink(candidate):
            hops -= 1
            if hops < 0:
                raise MigrationError("too many symbolic links under %s in %s." % (path, root))
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def read_text(root, path):
    """The text of the regular file ``path`` in ``root``, or None."""
    real = inside(root, path)
    try:
        if not stat.S_ISREG(os.lstat(real).st_mode):
            return None
        with open(real, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return None
