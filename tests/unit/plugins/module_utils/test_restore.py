"""Restore's re-owning of files after accounts were remapped (owners and named ACL entries), and its merge into a
home already there."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from ansible_collections.inplace.migration.plugins.module_utils.profiles.tree import (
    ACL_ENTRY, ACL_HEADER, merge, remap_acl, reown,
)

UNDEFINED = 0xFFFFFFFF


def acl(*entries):
    return ACL_HEADER.pack(2) + b"".join(ACL_ENTRY.pack(*entry) for entry in entries)


def getfacl(path):
    out = subprocess.run(["getfacl", "-n", "-p", "-c", path], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


def test_remap_keeps_entries_sorted_and_merges_entries_that_meet():
    value = acl((1, 6, UNDEFINED), (2, 4, 1001), (2, 2, 1002), (4, 4, UNDEFINED), (8, 4, 1001), (0x10, 6, UNDEFINED),
                (0x20, 4, UNDEFINED))
    assert remap_acl(value, {1001: 1002, 1002: 900}, {1001: 1005}) == acl(
        (1, 6, UNDEFINED), (2, 2, 900), (2, 4, 1002), (4, 4, UNDEFINED), (8, 4, 1005), (0x10, 6, UNDEFINED),
        (0x20, 4, UNDEFINED))
    assert remap_acl(value, {1001: 1002, 1002: 1002}, {}) == acl(
        (1, 6, UNDEFINED), (2, 6, 1002), (4, 4, UNDEFINED), (8, 4, 1001), (0x10, 6, UNDEFINED), (0x20, 4, UNDEFINED))
    assert remap_acl(b"\x02\x00", {1001: 1}, {}) == b"\x02\x00", "what is not an ACL is left alone"


def test_reown_follows_the_remap_in_owners_and_acls(tmp_path):
    tree = tmp_path / "home"
    (tree / "dir").mkdir(parents=True)
    shared, setuid, link = tree / "dir" / "shared", tree / "tool", tree / "link"
    shared.write_text("x")
    setuid.write_text("#!/bin/sh\n")
    os.symlink("dir/shared", link)
    subprocess.run(["setfacl", "-m", "u:1001:rw,u:4242:r,g:1001:r", str(shared)], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:1001:rwx", str(tree / "dir")], check=True)
    for path in (tree, tree / "dir", shared, setuid):
        os.chown(path, 1001, 1001)
    os.lchown(link, 1001, 1001)
    os.chmod(setuid, 0o4755)
    reown(str(tree), {1001: 1002}, {1001: 1005})
    for path in (tree, tree / "dir", shared, setuid, link):
        info = os.lstat(path)
        assert (info.st_uid, info.st_gid) == (1002, 1005), path
    assert stat.S_IMODE(os.stat(setuid).st_mode) == 0o4755
    assert "user:1002:rw-" in getfacl(shared) and "user:4242:r--" in getfacl(shared)
    assert "group:1005:r--" in getfacl(shared) and not [e for e in getfacl(shared) if ":1001:" in e]
    assert "default:user:1002:rwx" in getfacl(tree / "dir")


def _tree(root, stamp):
    """A home: a directory holding a file with a name that is not UTF-8, and the times ``stamp`` on both."""
    os.makedirs(os.path.join(root, b"Documents"))
    with open(os.path.join(root, b"Documents", b"latin1-\xe9"), "wb") as handle:
        handle.write(b"kept\n")
    for path in (os.path.join(root, b"Documents", b"latin1-\xe9"), os.path.join(root, b"Documents"), root):
        os.utime(path, ns=(stamp, stamp))


def test_merging_into_a_home_already_there_keeps_the_staged_times_and_reports_names_a_result_can_carry(tmp_path):
    """A rerun after a restore was cut between moving a home in and recording it meets every file again."""
    staged, target = os.fsencode(tmp_path / "staged"), os.fsencode(tmp_path / "home")
    _tree(staged, 1_600_000_000_000_000_000)
    _tree(target, 1_700_000_000_000_000_000)
    met = merge(staged, target, "overwrite")
    assert met == ["Documents/latin1-\\xe9"]
    json.dumps(met).encode("utf-8")  # Ansible refuses a result holding surrogates
    for path in (target, os.path.join(target, b"Documents")):
        assert os.lstat(path).st_mtime_ns == 1_600_000_000_000_000_000, path
