"""Reading accounts from a system root's files, choosing whom to capture, and adding accounts to a root."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.profiles import accounts
from ansible_collections.inplace.migration.plugins.module_utils.profiles.accounts import (
    ensure, login_defs_uid_range, read_passwd, read_shadow, select_users, supplementary_groups,
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


def test_auto_takes_every_account_in_login_defs_range_home_or_not(root):
    assert login_defs_uid_range(root) == (1000, 60000)
    users, groups = select_users(root, ["auto"], [])
    # nohome is selected too: its account must exist in the new system; capture records it without an archive.
    assert [u["name"] for u in users] == ["alice", "carol", "nohome"]
    alice = users[0]
    assert (alice["group"], alice["groups"], alice["password_hash"], alice["aging"]["max"]) == (
        "alice", ["lab"], "$6$x$y", 99999)
    assert users[1]["aging"] == {"lastchg": 19600, "min": None, "max": None, "warn": None, "inactive": None,
                                 "expire": None}
    assert sorted(users[1]["groups"]) == ["audio", "lab"]
    captured = supplementary_groups(users[:2], groups)
    assert [(g["name"], g["members"]) for g in captured] == [
        ("audio", ["carol"]), ("alice", []), ("carol", []), ("lab", ["alice", "carol"])]


def test_named_directory_user_is_taken_from_its_home(root):
    users = select_users(root, ["alice", "ldapuser"], [])[0]
    assert [(u["name"], u["source"], u["home"]) for u in users] == [
        ("alice", "local", "/home/alice"), ("ldapuser", "directory", "/home/ldapuser")]


def test_exclusions_and_unknown_users(root):
    users = select_users(root, ["auto"], ["carol"])[0]
    assert [u["name"] for u in users] == ["alice", "nohome"]
    with pytest.raises(MigrationError, match="nobody is neither an account"):
        select_users(root, ["nobody"], [])
    with pytest.raises(MigrationError, match="exclude_users names ghost, which is not an account"):
        select_users(root, ["auto"], ["ghost"])


def write(root, relative, text, mode=0o644, group=0):
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)
    os.chown(path, 0, group)


def lines(root, name):
    with open(os.path.join(root, "etc", name)) as handle:
        return handle.read().splitlines()


@pytest.fixture
def target(tmp_path):
    """A new system: root, an image user holding 1001, a comment and a NIS line to keep, shadow files group 42."""
    root = str(tmp_path / "target")
    write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n# kept as it is\n"
                              "ghost:x:1001:1001::/home/ghost:/bin/bash\n+::::::\n")
    write(root, "etc/shadow", "root:*:19000:0:99999:7:::\nghost:!:19000::::::\n", 0o640, 42)
    write(root, "etc/group", "root:x:0:\nshadow:x:42:\nghost:x:1001:\nlab:x:1500:ghost\n")
    write(root, "etc/gshadow", "root:*::\nshadow:*::\nghost:!::\nlab:!::ghost\n", 0o640, 42)
    write(root, "etc/login.defs", "UID_MIN 1000\nGID_MIN 1000\n")
    write(root, "bin/bash", "", 0o755)
    return root


def carol(uid=1001, groups=("lab",)):
    return {"name": "carol", "uid": uid, "gid": uid, "group": "carol", "groups": list(groups), "gecos": "Carol",
            "home": "/home/carol", "shell": "/bin/bash", "password_hash": "$6$c",
            "aging": {"lastchg": 19600, "min": 0, "max": 99999, "warn": 7, "inactive": None, "expire": None}}


def test_ensure_adds_rows_and_memberships_and_keeps_everything_else(target):
    before = {name: lines(target, name) for name in ("passwd", "shadow", "group", "gshadow")}
    plan = ensure(target, [carol()], [{"name": "carol", "gid": 1001}, {"name": "lab", "gid": 1500}])
    assert plan.report()["remapped_users"] == {"carol": {"old": 1001, "new": 1000}}
    assert lines(target, "passwd") == before["passwd"] + ["carol:x:1000:1000:Carol:/home/carol:/bin/bash"]
    assert lines(target, "shadow") == before["shadow"] + ["carol:$6$c:19600:0:99999:7:::"]
    assert lines(target, "group") == before["group"][:3] + ["lab:x:1500:ghost,carol", "carol:x:1000:"]
    assert lines(target, "gshadow") == before["gshadow"][:3] + ["lab:!::ghost,carol", "carol:!::"]
    for name, mode, group in (("passwd", 0o644, 0), ("group", 0o644, 0), ("shadow", 0o640, 42),
                              ("gshadow", 0o640, 42)):
        info = os.stat(os.path.join(target, "etc", name))
        assert (name, info.st_mode & 0o7777, info.st_uid, info.st_gid) == (name, mode, 0, group)
    assert not ensure(target, [carol()], [{"name": "lab", "gid": 1500}]).changes


def test_a_cut_before_the_passwd_row_leaves_no_account_without_its_hash(target, monkeypatch):
    real_write = accounts.atomic_write

    def cut_at_passwd(path, data, mode):
        if path.endswith("/passwd"):
            raise KeyboardInterrupt("power cut")
        real_write(path, data, mode)

    monkeypatch.setattr(accounts, "atomic_write", cut_at_passwd)
    with pytest.raises(KeyboardInterrupt):
        ensure(target, [carol()])
    assert "carol" not in read_passwd(target) and read_shadow(target)["carol"]["password_hash"] == "$6$c"
    monkeypatch.setattr(accounts, "atomic_write", real_write)
    ensure(target, [carol()])
    assert read_passwd(target)["carol"]["uid"] == 1000
    assert [line.split(":")[0] for line in lines(target, "shadow")].count("carol") == 1


def test_missing_shadow_is_made_private_and_missing_gshadow_stays_missing(target):
    os.unlink(os.path.join(target, "etc/shadow"))
    os.unlink(os.path.join(target, "etc/gshadow"))
    ensure(target, [carol(uid=1400, groups=())])
    info = os.stat(os.path.join(target, "etc/shadow"))
    assert (info.st_mode & 0o777, info.st_gid) == (0o640, 42)
    assert lines(target, "shadow") == ["carol:$6$c:19600:0:99999:7:::"]
    assert not os.path.exists(os.path.join(target, "etc/gshadow"))


def test_check_mode_plans_without_writing_and_a_held_lock_is_a_clear_error(target):
    before = {name: lines(target, name) for name in ("passwd", "shadow", "group", "gshadow")}
    assert ensure(target, [carol()], check_mode=True).user("carol").uid == 1000
    assert {name: lines(target, name) for name in before} == before
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\n"
                               "f = open(sys.argv[1], 'w'); fcntl.lockf(f, fcntl.LOCK_EX); print(1, flush=True)\n"
                               "time.sleep(30)", os.path.join(target, "etc/.pwd.lock")], stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        with pytest.raises(MigrationError, match="another program holds .*/etc/.pwd.lock"):
            with accounts.locked(target, seconds=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_field_the_files_cannot_hold_is_refused(target):
    with pytest.raises(MigrationError, match="holds a colon or a newline"):
        ensure(target, [dict(carol(uid=1400), gecos="a:b")])
    assert "carol" not in read_passwd(target)


def dave():
    return {"name": "dave", "uid": 1400, "gid": 1400, "group": "dave", "groups": ["lab"], "gecos": "",
            "home": "/home/dave", "shell": "/bin/bash", "password_hash": "$y$j9T$dave", "aging": None}


@pytest.mark.parametrize("cut", range(2 * len(accounts.WRITE_ORDER)))
def test_no_cut_at_any_write_leaves_an_account_without_its_hash_or_its_group(target, monkeypatch, cut):
    """A power cut before or after each of the four files is replaced, then a rerun: at no point does passwd
    name an account whose shadow row (with the captured hash) or primary group is missing."""
    real_write = accounts.atomic_write
    calls = []

    def cut_here(path, data, mode):
        calls.append(path)
        if len(calls) * 2 - 2 == cut:
            raise KeyboardInterrupt("power cut before %s" % path)
        real_write(path, data, mode)
        if len(calls) * 2 - 1 == cut:
            raise KeyboardInterrupt("power cut after %s" % path)

    monkeypatch.setattr(accounts, "atomic_write", cut_here)
    with pytest.raises(KeyboardInterrupt):
        ensure(target, [carol(uid=1300), dave()], [{"name": "lab", "gid": 1500}])
    wanted = {"carol": "$6$c", "dave": "$y$j9T$dave"}

    def consistent():
        passwd, secrets = read_passwd(target), read_shadow(target)
        gids = {g["gid"] for g in accounts.read_groups(target).values()}
        for name in set(passwd) & set(wanted):
            assert secrets.get(name, {}).get("password_hash") == wanted[name], (name, calls)
            assert passwd[name]["gid"] in gids, (name, calls)
        return passwd

    consistent()
    monkeypatch.setattr(accounts, "atomic_write", real_write)
    ensure(target, [carol(uid=1300), dave()], [{"name": "lab", "gid": 1500}])
    passwd = consistent()
    assert (passwd["carol"]["uid"], passwd["dave"]["uid"]) == (1300, 1400)
    for name in ("passwd", "shadow", "group", "gshadow"):
        names = [line.split(":")[0] for line in lines(target, name)]
        assert names.count("carol") == names.count("dave") == 1, (name, names)
