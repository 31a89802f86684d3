# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Accounts of a system root: reading passwd, shadow, group, gshadow and login.defs, and adding to them.

Read from the root's files (``/`` or another system mounted somewhere), never through NSS,
so capture sees the old system's accounts even from the maintenance environment.

Accounts are added the same way to every root, the running system's included: every id is
planned first (``account_plan``), then the four files are edited directly, each rewritten
whole (``atomic_write``) in an order that never shows an account without its password hash
or a group it names. No chroot and no shadow-utils, whose options and defaults differ between
releases; the lock they take (``/etc/.pwd.lock``) is held meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.rootfs import inside
from ansible_collections.inplace.migration.plugins.module_utils.profiles import account_plan as _plan
from ansible_collections.inplace.migration.plugins.module_utils.state.files import atomic_write

SHADOW_AGING = ("lastchg", "min", "max", "warn", "inactive", "expire")
DEFAULT_UID_RANGE = (1000, 60000)
LOGIN_DEFS_IDS = ("UID_MIN", "UID_MAX", "GID_MIN", "GID_MAX", "SYS_UID_MIN", "SYS_UID_MAX", "SYS_GID_MIN",
                  "SYS_GID_MAX")
# A group before the accounts that name it, an account's hash before the account itself.
WRITE_ORDER = ("gshadow", "group", "shadow", "passwd")
# Mode and owning group of a file the target lacks; shadow files belong to the group "shadow" where there is one.
NEW_FILE = {"passwd": (0o644, None), "group": (0o644, None), "shadow": (0o640, "shadow"), "gshadow": (0o640, "shadow")}
LOCK = "/etc/.pwd.lock"
LOCK_SECONDS = 15
LOCK_POLL = 0.2


def _text_lines(root, relative):
    """Every line of ``relative`` in ``root`` (newlines stripped, bytes kept), or None when it does not exist."""
    path = inside(root, "/" + relative)
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None
    except PermissionError:
        raise MigrationError("%s is not readable; run as root." % path)
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _rows(lines, fields):
    """The colon-separated rows of ``lines`` with at least ``fields`` fields; comments and blanks skipped."""
    for line in lines or ():
        if line.strip() and not line.startswith("#"):
            row = line.split(":")
            if len(row) >= fields:
                yield row


def login_defs(root):
    """The numeric settings of the system's login.defs that say where ids come from (those set)."""
    values = {}
    for line in _text_lines(root, "etc/login.defs") or ():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in LOGIN_DEFS_IDS and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    return values


def login_defs_uid_range(root):
    """(UID_MIN, UID_MAX) from the system's login.defs, Debian's defaults where unset."""
    values = login_defs(root)
    return values.get("UID_MIN", DEFAULT_UID_RANGE[0]), values.get("UID_MAX", DEFAULT_UID_RANGE[1])


def default_shell(root):
    """The shell useradd would give (``SHELL`` in /etc/default/useradd), else /bin/sh."""
    for line in _text_lines(root, "etc/default/useradd") or ():
        key, sep, value = line.strip().partition("=")
        if sep and key == "SHELL" and value:
            return value
    return _plan.DEFAULT_SHELL


def _passwd(lines):
    return {row[0]: {"name": row[0], "uid": int(row[2]), "gid": int(row[3]), "gecos": row[4], "home": row[5],
                     "shell": row[6]} for row in _rows(lines, 7) if row[2].isdigit() and row[3].isdigit()}


def _groups(lines):
    return {row[0]: {"name": row[0], "gid": int(row[2]), "members": [m for m in row[3].split(",") if m]}
            for row in _rows(lines, 4) if row[2].isdigit()}


def read_passwd(root):
    return _passwd(_text_lines(root, "etc/passwd"))


def read_shadow(root):
    entries = {}
    for row in _rows(_text_lines(root, "etc/shadow"), 8):
        aging = {key: int(value) if value.lstrip("-").isdigit() else None for key, value in zip(SHADOW_AGING, row[2:8])}
        entries[row[0]] = {"password_hash": row[1], "aging": aging}
    return entries


def read_groups(root):
    return _groups(_text_lines(root, "etc/group"))


def describe_user(name, passwd, shadow, groups):
    """Everything restore needs to recreate ``name``: ids, groups, shell, gecos, home, hash, aging."""
    entry = dict(passwd[name])
    by_gid = {g["gid"]: g["name"] for g in groups.values()}
    entry["group"] = by_gid.get(entry["gid"])
    entry["groups"] = sorted(g["name"] for g in groups.values() if name in g["members"] and g["gid"] != entry["gid"])
    secret = shadow.get(name, {})
    entry["password_hash"] = secret.get("password_hash")
    entry["aging"] = secret.get("aging")
    entry["source"] = "local"
    return entry


def select_users(root, users, exclude_users):
    """The accounts to capture, in a stable order.

    ``users`` is ``["auto"]`` (every local account in login.defs' UID range, with a home or
    not: where its home is, capture decides) or a list of names; a name that is not a local
    account is taken as a directory (LDAP/sssd) user whose home is /home/<name>, captured
    with numeric owners.
    """
    passwd = read_passwd(root)
    shadow = read_shadow(root)
    groups = read_groups(root)
    selected = []
    if users == ["auto"]:
        low, high = login_defs_uid_range(root)
        for name, entry in sorted(passwd.items(), key=lambda item: item[1]["uid"]):
            if low <= entry["uid"] <= high:
                selected.append(describe_user(name, passwd, shadow, groups))
    else:
        for name in users:
            if name in passwd:
                selected.append(describe_user(name, passwd, shadow, groups))
                continue
            home = os.path.join("/home", name)
            if not os.path.isdir(inside(root, home)):
                raise MigrationError("user %s is neither an account in %s/etc/passwd nor has a home %s there." % (
                    name, root.rstrip("/"), home))
            stat = os.stat(inside(root, home))
            selected.append({"name": name, "uid": stat.st_uid, "gid": stat.st_gid, "group": None, "groups": [],
                             "gecos": "", "home": home, "shell": None, "password_hash": None, "aging": None,
                             "source": "directory"})
    excluded = set(exclude_users or [])
    unknown = excluded - {u["name"] for u in selected} - set(passwd)
    if unknown:
        raise MigrationError("exclude_users names %s, which %s not an account on %s; correct or remove the name." % (
            ", ".join(sorted(unknown)), "is" if len(unknown) == 1 else "are", root))
    return [u for u in selected if u["name"] not in excluded], groups


def supplementary_groups(selected, groups):
    """The groups captured users belong to, with only captured users as members."""
    names = {u["name"] for u in selected}
    wanted = {u["group"] for u in selected if u.get("group")} | {g for u in selected for g in u["groups"]}
    return [{"name": g["name"], "gid": g["gid"], "members": sorted(m for m in g["members"] if m in names)}
            for g in sorted(groups.values(), key=lambda g: g["gid"]) if g["name"] in wanted]


# Adding accounts ----------------------------------------------------------------------------------------

class AccountFiles:
    """The four account files of a root as lines, changed in memory, written back in WRITE_ORDER.

    Lines this code does not change (comments, NIS entries, fields it does not know) are kept as they are.
    """

    def __init__(self, root):
        self.root = root
        self.lines = {name: _text_lines(root, "etc/" + name) for name in WRITE_ORDER}
        self.changed = set()

    def put(self, name, row):
        """Add ``row``; a row of the same name is replaced (a hash or group a cut run left without its account)."""
        for value in row:
            if ":" in value or "\n" in value:
                raise MigrationError("the field %r of %s's entry in /etc/%s holds a colon or a newline, which the "
                                     "file cannot hold; fix that entry in the source system." % (value, row[0], name))
        kept = [line for line in self.lines[name] or () if line.split(":", 1)[0] != row[0]]
        self.lines[name] = kept + [":".join(row)]
        self.changed.add(name)

    def add_member(self, name, group, user):
        lines = self.lines[name] or []
        for index, line in enumerate(lines):
            row = line.split(":")
            if row[0] == group and len(row) >= 4:
                members = [m for m in row[3].split(",") if m]
                if user not in members:
                    row[3] = ",".join(members + [user])
                    lines[index] = ":".join(row)
                    self.changed.add(name)
                return

    def save(self):
        for name in WRITE_ORDER:
            if name in self.changed:
                self._write(name)
        self.changed.clear()

    def _write(self, name):
        path = inside(self.root, "/etc/" + name)
        try:
            info = os.stat(path)
            mode, owner, group = info.st_mode & 0o7777, info.st_uid, info.st_gid
        except FileNotFoundError:
            mode, group_name = NEW_FILE[name]
            owner, group = 0, _groups(self.lines["group"]).get(group_name, {}).get("gid", 0)
        atomic_write(path, "".join(line + "\n" for line in self.lines[name]).encode("utf-8", "surrogateescape"), mode)
        os.chown(path, owner, group)


def read_target(root, files=None):
    """What ``account_plan.plan`` needs to know of the system whose root is ``root``."""
    files = files or AccountFiles(root)
    defs = login_defs(root)
    return _plan.Target(users=_passwd(files.lines["passwd"]), groups=_groups(files.lines["group"]),
                        uids=_plan.IdRange.from_login_defs(defs, "UID"), gids=_plan.IdRange.from_login_defs(defs, "GID"),
                        default_shell=default_shell(root), shell_exists=lambda path: os.path.exists(inside(root, path)))


@contextlib.contextmanager
def locked(root, seconds=LOCK_SECONDS):
    """Hold the lock glibc's lckpwdf and shadow-utils take, so no useradd changes the files meanwhile."""
    path = inside(root, LOCK)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise MigrationError("cannot open %s to lock the accounts of %s: %s." % (path, root, error.strerror))
    try:
        for _attempt in range(max(1, int(seconds / LOCK_POLL))):
            try:
                fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (BlockingIOError, PermissionError):
                time.sleep(LOCK_POLL)
        else:
            raise MigrationError("another program holds %s (is a useradd or passwd running?); run again when it "
                                 "is done." % path)
        yield
    finally:
        os.close(descriptor)


def _shadow_row(user, today):
    # Without captured aging the password counts as set today, as useradd does.
    aging = user.aging or {"lastchg": today}
    return [user.name, user.password_hash or "!"] + [
        "" if aging.get(key) is None else str(aging[key]) for key in SHADOW_AGING] + [""]


def apply(files, plan, today=None):
    """Write ``plan`` into ``files``: groups, memberships, then each account's shadow row before its passwd row."""
    today = int(time.time() // 86400) if today is None else today
    for group in plan.groups:
        if group.create:
            if files.lines["gshadow"] is not None:  # a system without gshadow gets none, as groupadd does
                files.put("gshadow", [group.name, "!", "", ""])
            files.put("group", [group.name, "x", str(group.gid), ""])
    for user in plan.users:
        for group in user.join:
            files.add_member("group", group, user.name)
            files.add_member("gshadow", group, user.name)
        if user.create:
            files.put("shadow", _shadow_row(user, today))
            files.put("passwd", [user.name, "x", str(user.uid), str(user.gid), user.gecos, user.home, user.shell])
    files.save()


def ensure(root, users, groups=(), check_mode=False):
    """Make ``users`` (as ``describe_user`` describes them) and the ``groups`` they need exist in ``root``.

    Every id is planned before anything is written; returns the plan (``plan.report()`` says what changed).
    """
    if check_mode:
        return _plan.plan(read_target(root), users, groups)
    with locked(root):
        files = AccountFiles(root)
        steps = _plan.plan(read_target(root, files), users, groups)
        apply(files, steps)
    return steps


def give_access(root, user, authorized_keys=None):
    """``user``'s home (a ``UserStep``), made if missing, with ``authorized_keys`` in the modes sshd accepts."""
    home = inside(root, user.home)
    if not os.path.isdir(home):
        os.makedirs(home, mode=0o700)
        os.chown(home, user.uid, user.gid)
    if not authorized_keys:
        return False
    ssh = os.path.join(home, ".ssh")
    if not os.path.isdir(ssh) or os.path.islink(ssh):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ssh)
        os.mkdir(ssh, 0o700)
    os.chown(ssh, user.uid, user.gid)
    os.chmod(ssh, 0o700)
    path = os.path.join(ssh, "authorized_keys")
    atomic_write(path, authorized_keys.encode("utf-8"), 0o600)
    os.chown(path, user.uid, user.gid)
    return True


def install_sudoers(runner, root, name, text):
    """/etc/sudoers.d/``name`` in ``root`` (root's, 0440), taken out again unless ``visudo -c`` accepts it."""
    directory = inside(root, "/etc/sudoers.d")
    os.makedirs(directory, mode=0o750, exist_ok=True)
    path = os.path.join(directory, name)
    atomic_write(path, text.encode("utf-8"), 0o440)
    os.chown(path, 0, 0)
    if runner.has("visudo"):
        rc, out, err = runner.run(["visudo", "-c", "-q", "-f", path], ok=None)
        if rc != 0:
            os.unlink(path)
            raise MigrationError("the sudo rule /etc/sudoers.d/%s does not pass visudo -c: %s" % (
                name, (err or out).strip()[-200:]))
