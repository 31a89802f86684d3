"""Planning accounts and groups for a target system: ids chosen together, before anything is made."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.profiles.account_plan import IdRange, Target, plan


def user(name, uid, gid=None, group=None, groups=(), shell="/bin/bash"):
    return {"name": name, "uid": uid, "gid": uid if gid is None else gid, "group": group or name,
            "groups": list(groups), "gecos": "", "home": "/home/" + name, "shell": shell, "password_hash": "$6$h",
            "aging": None}


def target(users=(), groups=(), shells=("/bin/bash", "/bin/sh"), **ranges):
    """``users`` are (name, uid, gid), ``groups`` (name, gid, members)."""
    return Target(users={n: {"name": n, "uid": u, "gid": g, "home": "/home/" + n, "shell": "/bin/sh"}
                         for n, u, g in users},
                  groups={n: {"name": n, "gid": g, "members": list(m)} for n, g, m in groups},
                  uids=IdRange("user", **ranges), gids=IdRange("group", **ranges),
                  shell_exists=lambda path: path in shells)


def test_a_later_account_s_id_is_never_given_to_an_earlier_one():
    # carol's 1001 is taken, so she moves; the first free id is 1002, which dave still wants as his own.
    system = target(users=[("ghost", 1001, 1001)], groups=[("ghost", 1001, ())])
    steps = plan(system, [user("carol", 1001), user("dave", 1002)])
    ids = {u.name: (u.uid, u.gid) for u in steps.users}
    assert ids["dave"] == (1002, 1002)
    assert ids["carol"] == (1000, 1000)
    assert steps.uid_map() == {1001: 1000} and steps.gid_map() == {1001: 1000}


def test_kept_accounts_and_groups_keep_the_target_s_entry_and_gain_memberships():
    system = target(users=[("alice", 1500, 1500)], groups=[("alice", 1500, ()), ("audio", 63, ()),
                                                           ("lab", 2000, ("alice",))])
    steps = plan(system, [user("alice", 1000, groups=["audio", "lab", "unknown"])],
                 [{"name": "alice", "gid": 1000}, {"name": "audio", "gid": 29}, {"name": "lab", "gid": 1500}])
    alice = steps.user("alice")
    assert (alice.create, alice.uid, alice.gid, alice.shell, alice.join) == (False, 1500, 1500, "/bin/sh", ["audio"])
    assert steps.report() == {
        "accounts_created": [], "accounts_kept": ["alice"], "groups_created": [],
        "remapped_users": {"alice": {"old": 1000, "new": 1500}},
        "remapped_groups": {"alice": {"old": 1000, "new": 1500}, "audio": {"old": 29, "new": 63},
                            "lab": {"old": 1500, "new": 2000}},
        "shells_replaced": {}, "memberships_added": {"alice": ["audio"]}}


def test_system_ids_stay_system_ids_taken_from_the_top():
    system = target(users=[("svc", 998, 998), ("other", 999, 999)], groups=[("svc", 997, ())])
    steps = plan(system, [user("backup", 998), user("proxy", 13)])
    assert (steps.user("backup").uid, steps.user("backup").gid) == (997, 998)
    assert steps.user("proxy").uid == 13, "a free system id is kept, even below SYS_UID_MIN"


def test_an_account_and_its_own_group_move_to_one_number_where_they_can():
    system = target(users=[("ghost", 1001, 1001), ("other", 1002, 1002)],
                    groups=[("ghost", 1001, ()), ("blocker", 1000, ())])
    bob = plan(system, [user("bob", 1001)]).user("bob")
    # 1000 is free for a user but not for a group: the pair takes 1003, free for both.
    assert (bob.uid, bob.gid) == (1003, 1003)


def test_regular_ids_come_from_login_defs_and_running_out_is_a_clear_error():
    system = target(users=[("a", 5000, 5000)], groups=[("a", 5000, ())], low=5000, high=5001)
    assert plan(system, [user("b", 5000)]).user("b").uid == 5001
    with pytest.raises(MigrationError, match="no free user id left between 5000 and 5001"):
        plan(system, [user("b", 5000, gid=100), user("c", 5001, gid=101)])


def test_missing_shell_becomes_the_default_and_is_reported():
    steps = plan(target(shells=("/bin/sh",)), [user("bob", 1001, shell="/usr/bin/zsh")])
    assert steps.user("bob").shell == "/bin/sh"
    assert steps.report()["shells_replaced"] == {"bob": {"old": "/usr/bin/zsh", "new": "/bin/sh"}}


def test_an_account_without_a_primary_group_gets_one_of_its_own_name():
    steps = plan(target(groups=[("users", 100, ())]), [dict(user("eve", 1003, gid=777), group=None)])
    assert [(g.name, g.gid, g.create) for g in steps.groups] == [("eve", 777, True)]
    assert steps.user("eve").gid == 777


def test_planning_what_exists_changes_nothing():
    system = target(users=[("alice", 1000, 1000)], groups=[("alice", 1000, ()), ("lab", 1500, ("alice",))])
    steps = plan(system, [user("alice", 1000, groups=["lab"])], [{"name": "lab", "gid": 1500}])
    assert not steps.changes and steps.uid_map() == {} and steps.gid_map() == {}


names = st.sampled_from(["u%d" % i for i in range(12)])
ids = st.integers(min_value=990, max_value=1012)


def unique_ids(by_name):
    """``by_name`` ({name: id}) with each id held by one name only, as a system's own files have them."""
    return {name: number for number, name in {number: name for name, number in by_name.items()}.items()}


@settings(max_examples=300, deadline=None)
@given(taken_uids=st.dictionaries(names, ids, max_size=8), taken_gids=st.dictionaries(names, ids, max_size=8),
       wanted=st.dictionaries(names, st.tuples(ids, ids), min_size=1, max_size=8))
def test_planned_ids_are_unique_free_in_the_target_and_the_old_ones_where_possible(taken_uids, taken_gids, wanted):
    system = target(users=[(n, u, u) for n, u in unique_ids(taken_uids).items()],
                    groups=[(n, g, ()) for n, g in unique_ids(taken_gids).items()],
                    low=1000, high=1030, system_low=960, system_high=999)
    wanted_users = [user(n, u, gid=g) for n, (u, g) in sorted(wanted.items())]
    steps = plan(system, wanted_users)
    made_users = [u for u in steps.users if u.create]
    made_groups = [g for g in steps.groups if g.create]
    target_uids = {u["uid"] for u in system.users.values()}
    target_gids = {g["gid"] for g in system.groups.values()}
    assert len({u.uid for u in made_users}) == len(made_users)
    assert len({g.gid for g in made_groups}) == len(made_groups)
    assert not {u.uid for u in made_users} & target_uids
    assert not {g.gid for g in made_groups} & target_gids
    first_uid, first_gid = {}, {}
    for step in made_users:
        first = first_uid.setdefault(step.old_uid, step.name) == step.name
        if first and step.old_uid not in target_uids:
            assert step.uid == step.old_uid, "a free id the account was first to want was not kept"
        assert (step.uid < 1000) == (step.old_uid < 1000), "a system id became a regular one or back"
    for step in made_groups:
        first = first_gid.setdefault(step.old_gid, step.name) == step.name
        if first and step.old_gid not in target_gids:
            assert step.gid == step.old_gid
        assert (step.gid < 1000) == (step.old_gid < 1000)
    for step in steps.users:
        if not step.create:
            assert (step.uid, step.gid) == (system.users[step.name]["uid"], system.users[step.name]["gid"])
