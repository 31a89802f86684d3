# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files of a restored home: moving a staged tree into place by the conflict rule, and re-owning
files (owners and named ACL entries) after accounts were given other ids."""

from __future__ import annotations

import os
import shutil
import stat
import struct

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.profiles import walk as _walk

CONFLICT_SUFFIX = b".inplace-old"
# A POSIX ACL in its xattr: a version, then (tag, permissions, id) entries (linux/posix_acl_xattr.h).
ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
ACL_HEADER = struct.Struct("<I")
ACL_ENTRY = struct.Struct("<HHI")
ACL_USER = 0x02
ACL_GROUP = 0x08


def _copy_metadata(source, target, info):
    """Give ``target`` (a directory being kept) the owner, mode, ACLs, xattrs of ``source``, and the times of
    ``info``: ``source``'s as they were before the merge moved its entries out, which changed them."""
    os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)
    wanted = set(os.listxattr(source, follow_symlinks=False))
    for name in os.listxattr(target, follow_symlinks=False):
        if name not in wanted:
            os.removexattr(target, name, follow_symlinks=False)
    for name in wanted:
        os.setxattr(target, name, os.getxattr(source, name, follow_symlinks=False), follow_symlinks=False)
    os.chmod(target, stat.S_IMODE(info.st_mode))
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def is_real_dir(path):
    return os.path.isdir(path) and not os.path.islink(path)


def _free_name(path):
    candidate = path + CONFLICT_SUFFIX
    number = 1
    while os.path.lexists(candidate):
        number += 1
        candidate = path + CONFLICT_SUFFIX + b".%d" % number
    return candidate


def merge(staged, target, conflict):
    """Move the staged tree into ``target``; files already there are kept, replaced or renamed by ``conflict``.

    Returns the relative paths that met a file already there.
    """
    met = []
    if not os.path.lexists(target):
        os.rename(staged, target)
        return met
    if not is_real_dir(target):
        raise MigrationError("%s exists and is not a directory." % os.fsdecode(target))
    info = os.lstat(staged)
    _merge_dir(staged, target, conflict, b"", met)
    if conflict == "overwrite":
        _copy_metadata(staged, target, info)
    return met


def _merge_dir(source, target, conflict, relative, met):
    for name in sorted(os.listdir(source)):
        staged = os.path.join(source, name)
        there = os.path.join(target, name)
        child = os.path.join(relative, name) if relative else name
        if not os.path.lexists(there):
            os.rename(staged, there)
            continue
        if is_real_dir(staged) and is_real_dir(there):
            info = os.lstat(staged)
            _merge_dir(staged, there, conflict, child, met)
            if conflict == "overwrite":
                _copy_metadata(staged, there, info)
            continue
        met.append(_walk.shown(child))
        if conflict == "keep_new":
            continue
        if conflict == "rename":
            os.rename(staged, _free_name(there))
            continue
        if is_real_dir(there):
            shutil.rmtree(there)
        elif is_real_dir(staged):
            os.unlink(there)
        os.rename(staged, there)


def reown(tree, uid_map, gid_map):
    """Give files of remapped users and groups their new ids, in owners and in named ACL entries."""
    if not uid_map and not gid_map:
        return
    for base, dirs, files in os.walk(tree):
        for path in [base] if base == tree else []:
            _reown_one(path, uid_map, gid_map)
        for name in dirs + files:
            _reown_one(os.path.join(base, name), uid_map, gid_map)


def _reown_one(path, uid_map, gid_map):
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        os.chown(path, uid_map.get(info.st_uid, info.st_uid), gid_map.get(info.st_gid, info.st_gid),
                 follow_symlinks=False)
        return
    for name in ACL_XATTRS:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue  # no ACL of that kind, or a filesystem without ACLs
        remapped = remap_acl(value, uid_map, gid_map)
        if remapped != value:
            os.setxattr(path, name, remapped, follow_symlinks=False)
    uid = uid_map.get(info.st_uid, info.st_uid)
    gid = gid_map.get(info.st_gid, info.st_gid)
    if (uid, gid) == (info.st_uid, info.st_gid):
        return
    os.chown(path, uid, gid, follow_symlinks=False)
    if stat.S_IMODE(info.st_mode) & (stat.S_ISUID | stat.S_ISGID):
        # chown clears setuid and setgid, for root too.
        os.chmod(path, stat.S_IMODE(info.st_mode))


def remap_acl(value, uid_map, gid_map):
    """A POSIX ACL as the kernel stores it (``system.posix_acl_*``) with its named entries' ids remapped.

    Entries stay sorted by tag and id, as the kernel requires; two entries that come to name
    the same id are merged (their permissions joined).
    """
    if len(value) < ACL_HEADER.size or (len(value) - ACL_HEADER.size) % ACL_ENTRY.size:
        return value
    entries = {}
    for offset in range(ACL_HEADER.size, len(value), ACL_ENTRY.size):
        tag, permissions, number = ACL_ENTRY.unpack_from(value, offset)
        number = {ACL_USER: uid_map, ACL_GROUP: gid_map}.get(tag, {}).get(number, number)
        entries[(tag, number)] = entries.get((tag, number), 0) | permissions
    return value[:ACL_HEADER.size] + b"".join(ACL_ENTRY.pack(tag, permissions, number)
                                              for (tag, number), permissions in sorted(entries.items()))
