"""Reading accounts from a system root's files, and choosing whom to capture."""

from __future__ import annotations

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.profiles.accounts import (
    login_defs_uid_range, select_users, supplementary_groups,
)
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError


@pytest.fixture
def root(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "# a comment\n"
        "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
        "carol:x:1002:1002::/home/carol:/bin/zsh\n"
        "nohome:x:1003:1003::/home/nohome:/bin/sh\n"
        "high:x:70000:70000::/home/high:/bin/sh\n"
        "svc:x:120:120::/var/lib/svc:/usr/sbin/nologin\n")
    (etc / "shadow").write_text("alice:$6$x$y:19500:0:99999:7:::\ncarol:!:19600::::::\n")
    (etc / "group").write_text("alice:x:1000:\ncarol:x:1002:\nlab:x:1500:alice,carol,svc\naudio:x:29:carol\n")
    (etc / "login.defs").write_text("# defaults\nUID_MIN\t\t 1000\nUID_MAX   60000\n")
    for name in ("alice", "carol", "high", "ldapuser"):
        (tmp_path / "home" / name).mkdir(parents=True)
    return str(tmp_path)


def test_auto_takes_login_defs_range_with_existing_homes(root):
    assert login_defs_uid_range(root) == (1000, 60000)
    users, groups = select_users(root, ["auto"], [])
    assert [u["name"] for u in users] == ["alice", "carol"]
    alice = users[0]
    assert (alice["group"], alice["groups"], alice["password_hash"], alice["aging"]["max"]) == (
        "alice", ["lab"], "$6$x$y", 99999)
    assert users[1]["aging"] == {"lastchg": 19600, "min": None, "max": None, "warn": None, "inactive": None,
                                 "expire": None}
    assert sorted(users[1]["groups"]) == ["audio", "lab"]
    captured = supplementary_groups(users, groups)
    assert [(g["name"], g["members"]) for g in captured] == [
        ("audio", ["carol"]), ("alice", []), ("carol", []), ("lab", ["alice", "carol"])]


def test_named_directory_user_is_taken_from_its_home(root):
    users = select_users(root, ["alice", "ldapuser"], [])[0]
    assert [(u["name"], u["source"], u["home"]) for u in users] == [
        ("alice", "local", "/home/alice"), ("ldapuser", "directory", "/home/ldapuser")]


def test_exclusions_and_unknown_users(root):
    users = select_users(root, ["auto"], ["carol"])[0]
    assert [u["name"] for u in users] == ["alice"]
    with pytest.raises(MigrationError, match="nobody is neither an account"):
        select_users(root, ["nobody"], [])
    with pytest.raises(MigrationError, match="exclude_users names ghost, which is not an account"):
        select_users(root, ["auto"], ["ghost"])
