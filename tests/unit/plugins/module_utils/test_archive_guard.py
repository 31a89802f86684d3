"""The extraction guard and the merge of a staged tree, without root."""

from __future__ import annotations

import os
import tarfile

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.profiles.archive import ArchiveRejected, _Guard, _member
from ansible_collections.inplace.migration.plugins.module_utils.profiles.tree import merge


def member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_plain_members_pass():
    guard = _Guard()
    for info in (member("."), member("./a", tarfile.DIRTYPE), member("./a/b"), member("./l", tarfile.SYMTYPE, "/etc"),
                 member("./h", tarfile.LNKTYPE, "./a/b"), member("./fifo", tarfile.FIFOTYPE)):
        guard.check(info)


@pytest.mark.parametrize("members, message", [
    ([member("/etc/passwd")], "absolute path"),
    ([member("./a/../../x")], "'..' component"),
    ([member("./s", tarfile.SYMTYPE, "/etc"), member("./s/passwd")], "passes through the symlink 's'"),
    ([member("./s", tarfile.SYMTYPE, "sub"), member("./s/deeper/x")], "passes through the symlink 's'"),
    ([member("./h", tarfile.LNKTYPE, "/etc/shadow")], "hard link target '/etc/shadow' is an absolute path"),
    ([member("./s", tarfile.SYMTYPE, "/etc"), member("./h", tarfile.LNKTYPE, "s/shadow")], "passes through"),
    ([member("./d", tarfile.BLKTYPE)], "device node"),
])
def test_hostile_members_are_refused(members, message):
    guard = _Guard()
    with pytest.raises(ArchiveRejected, match=message):
        for info in members:
            guard.check(info)


def test_a_directory_replacing_an_archived_symlink_clears_it():
    guard = _Guard()
    guard.check(member("./x", tarfile.SYMTYPE, "/etc"))
    guard.check(member("./x", tarfile.DIRTYPE))
    guard.check(member("./x/file"))


def staged_and_home(tmp_path):
    staged = tmp_path / "staged"
    home = tmp_path / "home"
    for base in (staged, home):
        (base / "sub").mkdir(parents=True)
    (staged / ".bashrc").write_text("old")
    (staged / "sub" / "mine").write_text("old")
    (staged / "only-old").write_text("old")
    (home / ".bashrc").write_text("new")
    (home / "only-new").write_text("new")
    return os.fsencode(staged), os.fsencode(home)


@pytest.mark.parametrize("rule, bashrc, beside", [
    ("overwrite", "old", None), ("keep_new", "new", None), ("rename", "new", "old")])
def test_merge_rules(tmp_path, rule, bashrc, beside):
    staged, home = staged_and_home(tmp_path)
    assert merge(staged, home, rule) == [".bashrc"]
    assert open(os.path.join(home, b".bashrc")).read() == bashrc
    assert open(os.path.join(home, b"sub/mine")).read() == "old"
    assert open(os.path.join(home, b"only-old")).read() == "old"
    assert open(os.path.join(home, b"only-new")).read() == "new"
    old_copy = os.path.join(home, b".bashrc.inplace-old")
    assert (open(old_copy).read() if os.path.exists(old_copy) else None) == beside


def test_merge_into_a_missing_home_is_one_rename(tmp_path):
    staged, home = staged_and_home(tmp_path)
    os.rename(home, os.path.join(os.fsencode(tmp_path), b"elsewhere"))
    inode = os.lstat(staged).st_ino
    assert merge(staged, home, "overwrite") == []
    assert os.lstat(home).st_ino == inode and not os.path.exists(staged)


@pytest.mark.parametrize("line, name, linkname", [
    ('-rw-r--r--  0/0        10485760 2026-11-30 13:24 "./sp"', "./sp", ""),
    ('-rw-r--r--* 0/0               3 2026-11-30 13:24 "./h"', "./h", ""),
    ('lrwxrwxrwx  0/0               0 2026-11-30 13:24 "./s" -> "/etc"', "./s", "/etc"),
    ('hrw-r--r--  0/0               0 2026-11-30 13:24 "./a" link to "./h"', "./a", "./h"),
    ('-rw-r--r--  0/0               0 2026-11-30 13:24 "./new\\nline"', "./new\nline", ""),
])
def test_listing_lines_name_their_member(line, name, linkname):
    found = _member(line)
    assert (found.name, found.linkname) == (name, linkname)


@pytest.mark.parametrize("line", [
    "",
    "tar: something unexpected",
    '-rw-r--r--  0/0  3 2026-11-30 13:24 ./unquoted',
    's?????????  0/0  3 2026-11-30 13:24 "./socket"',
])
def test_a_listing_line_the_guard_cannot_read_is_refused(line):
    with pytest.raises(ArchiveRejected):
        _member(line)
