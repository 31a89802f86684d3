# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Accounts as the old system's files describe them: passwd, shadow, group, login.defs.

Read from a system root (``/`` or an old root mounted read-only), never through NSS,
so capture sees the old system's accounts even from the maintenance environment.
"""

from __future__ import annotations

import os

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError

SHADOW_AGING = ("lastchg", "min", "max", "warn", "inactive", "expire")
DEFAULT_UID_RANGE = (1000, 60000)


def _lines(root, relative):
    path = os.path.join(root, relative)
    try:
        with open(path, "rb") as handle:
            return [line.rstrip(b"\n").decode("utf-8", "surrogateescape") for line in handle
                    if line.strip() and not line.startswith(b"#")]
    except FileNotFoundError:
        return []
    except PermissionError:
        raise MigrationError("%s is not readable; run as root." % path)


def login_defs_uid_range(root):
    """(UID_MIN, UID_MAX) from the system's login.defs, Debian's defaults where unset."""
    values = {}
    for line in _lines(root, "etc/login.defs"):
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("UID_MIN", "UID_MAX"):
            try:
                values[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return values.get("UID_MIN", DEFAULT_UID_RANGE[0]), values.get("UID_MAX", DEFAULT_UID_RANGE[1])


def read_passwd(root):
    users = {}
    for line in _lines(root, "etc/passwd"):
        fields = line.split(":")
        if len(fields) < 7 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        users[fields[0]] = {"name": fields[0], "uid": int(fields[2]), "gid": int(fields[3]), "gecos": fields[4],
                            "home": fields[5], "shell": fields[6]}
    return users


def read_shadow(root):
    entries = {}
    for line in _lines(root, "etc/shadow"):
        fields = line.split(":")
        if len(fields) < 8:
            continue
        aging = {}
        for key, value in zip(SHADOW_AGING, fields[2:8]):
            aging[key] = int(value) if value.lstrip("-").isdigit() else None
        entries[fields[0]] = {"password_hash": fields[1], "aging": aging}
    return entries


def read_groups(root):
    groups = {}
    for line in _lines(root, "etc/group"):
        fields = line.split(":")
        if len(fields) < 4 or not fields[2].isdigit():
            continue
        groups[fields[0]] = {"name": fields[0], "gid": int(fields[2]),
                             "members": [m for m in fields[3].split(",") if m]}
    return groups


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

    ``users`` is ``["auto"]`` (local accounts in login.defs' UID range whose home exists)
    or a list of names; a name that is not a local account is taken as a directory
    (LDAP/sssd) user whose home is /home/<name>, captured with numeric owners.
    """
    passwd = read_passwd(root)
    shadow = read_shadow(root)
    groups = read_groups(root)
    selected = []
    if users == ["auto"]:
        low, high = login_defs_uid_range(root)
        for name, entry in sorted(passwd.items(), key=lambda item: item[1]["uid"]):
            if low <= entry["uid"] <= high and os.path.isdir(os.path.join(root, entry["home"].lstrip("/"))):
                selected.append(describe_user(name, passwd, shadow, groups))
    else:
        for name in users:
            if name in passwd:
                selected.append(describe_user(name, passwd, shadow, groups))
                continue
            home = os.path.join("/home", name)
            if not os.path.isdir(os.path.join(root, home.lstrip("/"))):
                raise MigrationError("user %s is neither an account in %s/etc/passwd nor has a home %s there." % (
                    name, root.rstrip("/"), home))
            stat = os.lstat(os.path.join(root, home.lstrip("/")))
            selected.append({"name": name, "uid": stat.st_uid, "gid": stat.st_gid, "group": None, "groups": [],
                             "gecos": "", "home": home, "shell": None, "password_hash": None, "aging": None,
                             "source": "directory"})
    excluded = set(exclude_users or [])
    unknown = excluded - {u["name"] for u in selected} - set(passwd)
    if unknown:
        raise MigrationError("exclude_users names %s, which %s not an account on %s." % (
            ", ".join(sorted(unknown)), "is" if len(unknown) == 1 else "are", root))
    return [u for u in selected if u["name"] not in excluded], groups


def supplementary_groups(selected, groups):
    """The groups captured users belong to, with only captured users as members."""
    names = {u["name"] for u in selected}
    wanted = {u["group"] for u in selected if u.get("group")} | {g for u in selected for g in u["groups"]}
    return [{"name": g["name"], "gid": g["gid"], "members": sorted(m for m in g["members"] if m in names)}
            for g in sorted(groups.values(), key=lambda g: g["gid"]) if g["name"] in wanted]
