# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which accounts and groups a system gains, and with which ids: planned together, before any is made.

Pure: the target system comes in as what ``accounts.read_target`` read of it, the wanted
accounts as ``accounts.describe_user`` describes them (the manifest's and the carry's
format) and the wanted groups as ``{"name", "gid"}``. Every id is chosen before the first
account is written, so an id given to one account can never be the one another still wants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError

DEFAULT_SHELL = "/bin/sh"


@dataclass(frozen=True)
class IdRange:
    """Where new ids of one kind (user or group) may come from, as the target's login.defs says."""

    kind: str
    low: int = 1000
    high: int = 60000
    system_low: int = 101
    system_high: int = 999

    @classmethod
    def from_login_defs(cls, defs, prefix):
        """``prefix`` is ``UID`` or ``GID``; unset values take shadow-utils' own defaults."""
        low = defs.get(prefix + "_MIN", 1000)
        return cls("user" if prefix == "UID" else "group", low, defs.get(prefix + "_MAX", 60000),
                   defs.get("SYS_%s_MIN" % prefix, 101), defs.get("SYS_%s_MAX" % prefix, low - 1))

    def is_system(self, wanted):
        return wanted < self.low

    def candidates(self, wanted):
        """Ids to try instead of ``wanted``: a system id stays a system id (taken from the top, as
        ``useradd --system`` does), a regular one is the lowest free from the regular range up."""
        if self.is_system(wanted):
            return range(self.system_high, self.system_low - 1, -1)
        return range(self.low, self.high + 1)

    def allows(self, candidate, wanted):
        """Whether ``candidate`` is of the same kind (system or regular) and in range, as a new id for ``wanted``."""
        if self.is_system(wanted):
            return self.system_low <= candidate <= self.system_high
        return self.low <= candidate <= self.high

    def exhausted(self, wanted):
        low, high = (self.system_low, self.system_high) if self.is_system(wanted) else (self.low, self.high)
        return MigrationError("the target system has no free %s%s id left between %d and %d; remove unused "
                              "accounts there or widen the range in its /etc/login.defs." % (
                                  "system " if self.is_system(wanted) else "", self.kind, low, high))


@dataclass
class Target:
    """The system accounts go into: ``users`` as ``read_passwd`` and ``groups`` as ``read_groups`` give them."""

    users: Dict[str, dict]
    groups: Dict[str, dict]
    uids: IdRange = field(default_factory=lambda: IdRange("user"))
    gids: IdRange = field(default_factory=lambda: IdRange("group"))
    default_shell: str = DEFAULT_SHELL
    shell_exists: Callable[[str], bool] = lambda path: True


@dataclass
class GroupStep:
    name: str
    old_gid: int
    gid: int
    create: bool


@dataclass
class UserStep:
    name: str
    old_uid: int
    uid: int
    gid: int
    create: bool
    home: str
    shell: str
    gecos: str = ""
    password_hash: Optional[str] = None
    aging: Optional[dict] = None
    replaced_shell: Optional[str] = None
    join: List[str] = field(default_factory=list)


@dataclass
class Plan:
    groups: List[GroupStep]
    users: List[UserStep]

    @property
    def changes(self):
        return any(g.create for g in self.groups) or any(u.create or u.join for u in self.users)

    def uid_map(self):
        """{old uid: new uid} where they differ: what re-owning files must follow."""
        return {u.old_uid: u.uid for u in self.users if u.old_uid != u.uid}

    def gid_map(self):
        return {g.old_gid: g.gid for g in self.groups if g.old_gid != g.gid}

    def user(self, name):
        return next(u for u in self.users if u.name == name)

    def report(self):
        """The keys profile_restore returns (and image_deploy's account fix-up), with their meaning there."""
        return {
            "accounts_created": [u.name for u in self.users if u.create],
            "accounts_kept": [u.name for u in self.users if not u.create],
            "groups_created": [g.name for g in self.groups if g.create],
            "remapped_users": {u.name: {"old": u.old_uid, "new": u.uid} for u in self.users if u.old_uid != u.uid},
            "remapped_groups": {g.name: {"old": g.old_gid, "new": g.gid} for g in self.groups
                                if g.old_gid != g.gid},
            "shells_replaced": {u.name: {"old": u.replaced_shell, "new": u.shell} for u in self.users
                                if u.replaced_shell},
            "memberships_added": {u.name: list(u.join) for u in self.users if u.join},
        }


def _primary_group(user):
    # No group held the old primary gid: like useradd, the account gets a group of its own name.
    return user.get("group") or user["name"]


def _wanted_groups(target, users, groups):
    """{name: old gid} of every group the accounts need, in a stable order: the given ones, then primaries."""
    wanted = {}
    for group in groups:
        wanted.setdefault(group["name"], group["gid"])
    for user in users:
        if user["name"] not in target.users:
            wanted.setdefault(_primary_group(user), user["gid"])
    return wanted


def _first_free(candidates, *taken):
    return next((c for c in candidates if not any(c in ids for ids in taken)), None)


def _allocate(wanted, taken, ids, paired=None):
    """New ids for ``wanted`` ({key: old id}): the old id where it is free in ``taken`` and not planned
    for another key, else the first free candidate. ``taken`` grows with every id planned.

    ``paired`` ({key: id}) holds ids already planned jointly for some keys; they are kept.
    """
    planned = dict(paired or {})
    for key, old in wanted.items():
        if key not in planned and old not in taken:
            planned[key] = old
            taken.add(old)
    for key, old in wanted.items():
        if key not in planned:
            new = _first_free(ids.candidates(old), taken)
            if new is None:
                raise ids.exhausted(old)
            planned[key] = new
            taken.add(new)
    return planned


def _pairs(target, new_users, new_groups):
    """{user: id}, {group: id} for accounts that move together with their own group.

    When an account and the group named as its primary both had the same number and both
    must move (the user-private-group convention), they get one new number free for both,
    where there is one that no other new account or group wants as its own.
    """
    taken_uids = {u["uid"] for u in target.users.values()}
    taken_gids = {g["gid"] for g in target.groups.values()}
    wanted = {u["uid"] for u in new_users} | set(new_groups.values())
    uids, gids = {}, {}
    for user in new_users:
        group, old = _primary_group(user), user["uid"]
        if new_groups.get(group) != old or group in gids or old not in taken_uids or old not in taken_gids:
            continue
        number = _first_free((c for c in target.uids.candidates(old) if target.gids.allows(c, old)),
                             taken_uids, taken_gids, wanted)
        if number is not None:
            uids[user["name"]] = gids[group] = number
            taken_uids.add(number)
            taken_gids.add(number)
    return uids, gids


def plan(target, users, groups=()):
    """The plan for making ``users`` (and the ``groups`` they need) exist in ``target``.

    An account or group the target already has keeps the target's entry and only gains
    memberships; the others get their old id where it is free in the target, else a new one.
    """
    wanted_groups = _wanted_groups(target, users, groups)
    new_groups = {name: gid for name, gid in wanted_groups.items() if name not in target.groups}
    new_users = [u for u in users if u["name"] not in target.users]
    paired_uids, paired_gids = _pairs(target, new_users, new_groups)
    gids = _allocate(new_groups, {g["gid"] for g in target.groups.values()} | set(paired_gids.values()),
                     target.gids, paired_gids)
    uids = _allocate({u["name"]: u["uid"] for u in new_users},
                     {u["uid"] for u in target.users.values()} | set(paired_uids.values()), target.uids, paired_uids)
    group_steps = [GroupStep(name, old, gids[name] if name in gids else target.groups[name]["gid"],
                             name in gids) for name, old in wanted_groups.items()]
    gid_of = {g.name: g.gid for g in group_steps}
    gid_of.update((name, g["gid"]) for name, g in target.groups.items() if name not in gid_of)
    members = {name: set(g.get("members", ())) for name, g in target.groups.items()}
    return Plan(group_steps, [_user_step(target, user, uids, gid_of, members) for user in users])


def _user_step(target, user, uids, gid_of, members):
    name = user["name"]
    existing = target.users.get(name)
    if existing is not None:
        step = UserStep(name, user["uid"], existing["uid"], existing["gid"], False, existing["home"], existing["shell"])
    else:
        shell = user.get("shell") or target.default_shell
        replaced = None
        if not target.shell_exists(shell):
            replaced, shell = shell, target.default_shell
        step = UserStep(name, user["uid"], uids[name], gid_of[_primary_group(user)], True, user["home"], shell,
                        user.get("gecos") or "", user.get("password_hash"), user.get("aging"), replaced)
    # Groups nobody described (no gid known) cannot be made; those the account has as primary need no entry.
    step.join = [g for g in user.get("groups") or () if g in gid_of and gid_of[g] != step.gid
                 and name not in members.get(g, ())]
    return step
