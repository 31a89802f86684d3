"""profile_capture and profile_restore through Ansible, between real ext4 filesystems on loop disks."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tarfile

import pytest

from tests.support import adhoc
from tests.support.loopdisk import GiB, MiB, mounted, run
from tests.support.trees import build_home, differences, snapshot

ALICE_HASH = "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"
BOB_HASH = "$6$salt$" + "b" * 86
SKIPPED = {b"a-socket", b"a-device", b".cache", b".local/share/Trash"}
# Disk layout: old system root, the store, the new system root.
LAYOUT = "label: gpt\nsize=1200MiB\nsize=800MiB\nsize=1000MiB\n"


def capture(check=False, **args):
    return adhoc.module("profile_capture", args, check=check)


def restore(check=False, **args):
    return adhoc.module("profile_restore", args, check=check)


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def make_old_root(root, homes=None):
    """A small old system: accounts, login.defs, two users with homes (in ``homes``, else its /home), settings."""
    write(os.path.join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n"
          "alice:x:1000:1000:Alice A,,,:/home/alice:/bin/bash\n"
          "bob:x:1001:1001:Bob B:/home/bob:/usr/bin/zsh\n"
          "svc:x:120:120::/var/lib/svc:/usr/sbin/nologin\n")
    write(os.path.join(root, "etc/shadow"), "root:*:19000:0:99999:7:::\n"
          "alice:%s:19500:1:90:14:30::\n" % ALICE_HASH +
          "bob:%s:19600:0:99999:7:::\n" % BOB_HASH, 0o640)
    write(os.path.join(root, "etc/group"), "root:x:0:\nalice:x:1000:\nbob:x:1001:\nlab:x:1500:alice,bob\n"
          "crontab:x:107:\nsvc:x:120:\n")
    write(os.path.join(root, "etc/login.defs"), "UID_MIN 1000\nUID_MAX 60000\n")
    write(os.path.join(root, "etc/hostname"), "old-pc-17\n")
    write(os.path.join(root, "etc/hosts"), "127.0.0.1 localhost\n127.0.1.1 old-pc-17\n")
    write(os.path.join(root, "etc/timezone"), "Europe/Berlin\n")
    write(os.path.join(root, "etc/fstab"), "UUID=1234 / ext4 defaults 0 1\n")
    write(os.path.join(root, "var/spool/cron/crontabs/alice"), "0 5 * * * echo hi\n", 0o600)
    os.chown(os.path.join(root, "var/spool/cron/crontabs/alice"), 1000, 107)
    os.makedirs(os.path.join(root, "var/lib/svc"))
    homes = homes or os.path.join(root, "home")
    skipped = build_home(os.path.join(homes, "alice"), 1000, 1000, other_uid=1001, seed=1)
    build_home(os.path.join(homes, "bob"), 1001, 1001, seed=2, payload=8 * MiB)
    return skipped


def make_new_root(root, ghost=True):
    """A fresh system: root, and (with ``ghost``) an account holding UID/GID 1001, so bob must move."""
    write(os.path.join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n" +
          ("ghost:x:1001:1001::/home/ghost:/bin/bash\n" if ghost else ""))
    write(os.path.join(root, "etc/shadow"), "root:*:19000:0:99999:7:::\n" +
          ("ghost:!:19000:0:99999:7:::\n" if ghost else ""), 0o640)
    write(os.path.join(root, "etc/group"), "root:x:0:\ncrontab:x:102:\n" + ("ghost:x:1001:\n" if ghost else ""))
    write(os.path.join(root, "etc/gshadow"), "root:*::\ncrontab:!::\n" + ("ghost:!::\n" if ghost else ""), 0o640)
    write(os.path.join(root, "etc/login.defs"), "UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\n")
    write(os.path.join(root, "etc/default/useradd"), "SHELL=/bin/sh\n")
    write(os.path.join(root, "bin/bash"), "", 0o755)
    write(os.path.join(root, "bin/sh"), "", 0o755)
    os.makedirs(os.path.join(root, "home"), exist_ok=True)


@contextlib.contextmanager
def built_systems(make_disk, build_old):
    """(old root mounted read-only, store, new root) on one loop disk; ``build_old(root)`` makes the old root."""
    disk = make_disk(3 * GiB, LAYOUT)
    for number in (1, 2, 3):
        run("mkfs.ext4", "-q", "-F", disk.part(number))
    with mounted(disk.part(1), readonly=False) as old:
        skipped = build_old(old)
    with contextlib.ExitStack() as stack:
        old = stack.enter_context(mounted(disk.part(1)))
        store = stack.enter_context(mounted(disk.part(2), readonly=False))
        new = stack.enter_context(mounted(disk.part(3), readonly=False))
        make_new_root(new)
        yield {"old": old, "store": store, "new": new, "skipped": skipped, "disk": disk}


@pytest.fixture
def systems(make_disk):
    with built_systems(make_disk, make_old_root) as found:
        yield found


def passwd(root):
    entries = {}
    with open(os.path.join(root, "etc/passwd")) as handle:
        for line in handle:
            fields = line.rstrip("\n").split(":")
            entries[fields[0]] = fields
    return entries


def shadow(root):
    with open(os.path.join(root, "etc/shadow")) as handle:
        return {line.split(":")[0]: line.rstrip("\n").split(":") for line in handle}


def groups(root):
    with open(os.path.join(root, "etc/group")) as handle:
        return {line.split(":")[0]: line.rstrip("\n").split(":") for line in handle}


def test_round_trip_keeps_everything_and_remaps_a_taken_uid(systems):
    old, store, new = systems["old"], systems["store"], systems["new"]
    before_alice = snapshot(os.path.join(old, "home/alice"), skip=SKIPPED)
    before_bob = snapshot(os.path.join(old, "home/bob"), skip=SKIPPED)

    estimate = capture(root=old, store=store, settings=["hostname", "crontabs", "timezone"], check=True)
    assert estimate["rc"] == 0, estimate.get("msg")
    assert os.listdir(store) == ["lost+found"], "check mode wrote to the store"
    names = [u["name"] for u in estimate["users"]]
    assert names == ["alice", "bob"], "svc (uid 120) is outside login.defs' range"
    alice_estimate = estimate["users"][0]
    assert {s["path"] for s in alice_estimate["skipped"]} == {"a-socket", "a-device"}
    assert set(alice_estimate["excluded"]) == {".cache", ".local/share/Trash"}
    assert estimate["store_bytes_needed"] > estimate["estimated_archive_bytes"] > MiB

    made = capture(root=old, store=store, settings=["hostname", "crontabs", "timezone"])
    assert made["rc"] == 0 and made["changed"] is True, made.get("msg")
    assert [u["files"] for u in made["users"]] == [u["files"] for u in estimate["users"]]
    manifest = json.load(open(os.path.join(store, "inplace/profiles/manifest.json")))
    assert manifest["complete"] and manifest["verified"]
    alice = manifest["users"][0]
    assert (alice["uid"], alice["gid"], alice["group"], alice["groups"], alice["shell"]) == (
        1000, 1000, "alice", ["lab"], "/bin/bash")
    assert alice["password_hash"] == ALICE_HASH and alice["aging"]["max"] == 90 and alice["gecos"] == "Alice A,,,"
    assert oct(os.stat(os.path.join(store, "inplace")).st_mode & 0o777) == "0o700"
    assert capture(root=old, store=store, settings=["hostname", "crontabs", "timezone"])["changed"] is False

    restored = restore(store=store, root=new, settings=["hostname", "crontabs"])
    assert restored["rc"] == 0 and restored["changed"] is True, restored.get("msg")
    assert restored["restored"] == ["alice", "bob"]
    assert restored["restored_bytes"] == sum(u["data_bytes"] for u in manifest["users"]) > 8 * MiB
    accounts = passwd(new)
    bob_uid = int(accounts["bob"][2])
    assert int(accounts["alice"][2]) == 1000 and bob_uid not in (1001, 1000)
    assert restored["remapped_users"] == {"bob": {"old": 1001, "new": bob_uid}}
    assert restored["shells_replaced"] == {"bob": {"old": "/usr/bin/zsh", "new": "/bin/sh"}}
    assert accounts["alice"][4:7] == ["Alice A,,,", "/home/alice", "/bin/bash"]
    secrets = shadow(new)
    assert secrets["alice"][1:8] == [ALICE_HASH, "19500", "1", "90", "14", "30", ""]
    assert secrets["bob"][1] == BOB_HASH
    new_groups = groups(new)
    bob_gid = int(new_groups["bob"][2])
    assert sorted(new_groups["lab"][3].split(",")) == ["alice", "bob"] and new_groups["lab"][2] == "1500"
    assert int(accounts["bob"][3]) == bob_gid != 1001

    after_alice = snapshot(os.path.join(new, "home/alice"))
    found = differences(snapshot(os.path.join(old, "home/alice"), uid_map={1001: bob_uid}, gid_map={1001: bob_gid},
                                 skip=SKIPPED), after_alice)
    assert found == [], "\n".join(found)
    after_bob = snapshot(os.path.join(new, "home/bob"))
    found = differences(snapshot(os.path.join(old, "home/bob"), uid_map={1001: bob_uid}, gid_map={1001: bob_gid},
                                 skip=SKIPPED), after_bob)
    assert found == [], "\n".join(found)
    # The same trees, owners aside: nothing lost, nothing added.
    assert set(after_alice) == set(before_alice) and set(after_bob) == set(before_bob)

    assert open(os.path.join(new, "etc/hostname")).read() == "old-pc-17\n"
    crontab = os.lstat(os.path.join(new, "var/spool/cron/crontabs/alice"))
    assert (crontab.st_uid, crontab.st_gid, oct(crontab.st_mode & 0o777)) == (1000, 102, "0o600")
    assert not os.path.exists(os.path.join(new, "etc/timezone")), "timezone was captured but not asked for"

    again = restore(store=store, root=new, settings=["hostname", "crontabs"])
    assert again["rc"] == 0 and again["changed"] is False and again["already_restored"] == ["alice", "bob"]
    journal = json.load(open(os.path.join(store, "inplace/journal.json")))
    assert journal["records"]["profile_restore"]["complete"] is True


def test_conflict_rules_for_files_the_new_image_brought(systems):
    old, store, new = systems["old"], systems["store"], systems["new"]
    assert capture(root=old, store=store, users=["bob"])["changed"] is True
    for rule in ("keep_new", "rename", "overwrite"):
        home = os.path.join(new, "home/bob")
        # Forget the last restore: what decides is the record in the root restored into.
        subprocess.run(["rm", "-rf", home, os.path.join(store, "inplace/journal.json"),
                        os.path.join(new, "var/lib/inplace-migration/restored.json")], check=True)
        write(os.path.join(home, ".bashrc"), "# the new image's bashrc\n")
        write(os.path.join(home, ".config/new-only"), "fresh\n")
        result = restore(store=store, root=new, conflict=rule, accounts="skip")
        assert result["rc"] == 0, result.get("msg")
        assert result["conflicts"]["bob"]["paths"] == [".bashrc"]
        bashrc = open(os.path.join(home, ".bashrc")).read()
        old_bashrc = open(os.path.join(old, "home/bob/.bashrc")).read()
        assert os.path.exists(os.path.join(home, ".config/new-only"))
        if rule == "keep_new":
            assert bashrc == "# the new image's bashrc\n"
            assert not os.path.exists(os.path.join(home, ".bashrc.inplace-old"))
        elif rule == "rename":
            assert bashrc == "# the new image's bashrc\n"
            assert open(os.path.join(home, ".bashrc.inplace-old")).read() == old_bashrc
        else:
            assert bashrc == old_bashrc
            info = os.lstat(home)
            assert (info.st_uid, oct(info.st_mode & 0o7777)) == (1001, "0o750")


def _archive_of(members):
    """A zstd-compressed tar built member by member: (TarInfo, bytes or None)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return subprocess.run(["zstd", "-q", "-c"], input=raw.getvalue(), capture_output=True, check=True).stdout


def _entry(name, kind=tarfile.REGTYPE, data=b"x", linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    return info, (data if kind == tarfile.REGTYPE else None)


def _tamper(store, user, payload):
    """Replace ``user``'s archive and make the manifest agree, as an attacker with the store would."""
    import hashlib
    path = os.path.join(store, "inplace/profiles/%s.tar.zst" % user)
    with open(path, "wb") as handle:
        handle.write(payload)
    manifest_path = os.path.join(store, "inplace/profiles/manifest.json")
    manifest = json.load(open(manifest_path))
    for entry in manifest["users"]:
        if entry["name"] == user:
            entry.update(sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload))
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle)


@pytest.mark.parametrize("members, expected", [
    ([_entry("./ok"), _entry("../escaped")], "has a '..' component"),
    ([_entry("/tmp/inplace-absolute-escape")], "is an absolute path"),
    ([_entry("./evil", tarfile.SYMTYPE, linkname="/tmp"), _entry("./evil/inplace-through-symlink")],
     "passes through the symlink 'evil' earlier in the archive"),
    ([_entry("./hard", tarfile.LNKTYPE, linkname="../../etc/passwd")], "has a '..' component"),
    ([_entry("./dev", tarfile.CHRTYPE)], "is a device node"),
])
def test_hostile_archives_fail_their_user_only(systems, members, expected):
    old, store, new = systems["old"], systems["store"], systems["new"]
    assert capture(root=old, store=store)["changed"] is True
    _tamper(store, "bob", _archive_of(members))
    result = restore(store=store, root=new)
    assert result["rc"] != 0
    assert result["restored"] == ["alice"] and list(result["failed_users"]) == ["bob"]
    assert expected in result["failed_users"]["bob"], result["failed_users"]["bob"]
    adhoc.assert_one_sentence_naming_the_fix(result, ["could not restore bob (the others are restored)", expected,
                                                      "restore this user's files from a backup"])
    for outside in ("/tmp/inplace-absolute-escape", "/tmp/inplace-through-symlink",
                    os.path.join(new, "home/escaped"), os.path.join(new, "escaped")):
        assert not os.path.lexists(outside)
    assert not os.path.exists(os.path.join(new, "home/bob")), "a refused archive left files behind"
    assert not [n for n in os.listdir(os.path.join(new, "home")) if n.startswith(".inplace-restore")]


def test_symlink_already_in_the_target_is_replaced_not_followed(systems):
    old, store, new = systems["old"], systems["store"], systems["new"]
    assert capture(root=old, store=store, users=["bob"])["changed"] is True
    outside = os.path.join(new, "outside")
    os.makedirs(outside)
    os.makedirs(os.path.join(new, "home/bob"))
    os.symlink(outside, os.path.join(new, "home/bob/Documents"))
    result = restore(store=store, root=new, accounts="skip")
    assert result["rc"] == 0, result.get("msg")
    assert os.listdir(outside) == [], "the restore wrote through a symlink"
    documents = os.path.join(new, "home/bob/Documents")
    assert not os.path.islink(documents) and os.path.isfile(os.path.join(documents, "payload.bin"))
    assert result["conflicts"]["bob"]["paths"] == ["Documents"]


def test_corrupted_archive_is_refused_before_extraction(systems):
    old, store, new = systems["old"], systems["store"], systems["new"]
    assert capture(root=old, store=store)["changed"] is True
    path = os.path.join(store, "inplace/profiles/bob.tar.zst")
    with open(path, "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = restore(store=store, root=new)
    assert result["rc"] != 0 and result["restored"] == ["alice"]
    assert "does not match the manifest" in result["failed_users"]["bob"]
    assert not os.path.exists(os.path.join(new, "home/bob"))
    again = restore(store=store, root=new)
    assert again["restored"] == [] and again["already_restored"] == ["alice"] and "bob" in again["failed_users"]


def test_capture_failures_leave_no_manifest(systems, make_disk):
    old, store = systems["old"], systems["store"]
    missing = capture(root=old, store=store, users=["alice", "nobody"])
    assert missing["rc"] != 0 and "nobody is neither an account" in missing["msg"]
    unreadable = capture(root="/nonexistent-root", store=store)
    assert unreadable["rc"] != 0 and "is not readable" in unreadable["msg"]
    no_store = capture(root=old, store="/nonexistent-store")
    assert no_store["rc"] != 0 and "does not exist" in no_store["msg"]

    tiny = make_disk(64 * MiB, "label: gpt\nsize=8MiB\n")
    run("mkfs.ext4", "-q", "-F", tiny.part(1))
    with mounted(tiny.part(1), readonly=False) as small:
        full = capture(root=old, store=small)
        assert full["rc"] != 0 and "is full" in full["msg"] and "larger" in full["msg"], full["msg"]
        assert os.listdir(os.path.join(small, "inplace/profiles")) == [], "no manifest, no archive, no work files"
    for failed in (missing, unreadable, no_store):
        assert not os.path.exists(os.path.join(store, "inplace/profiles/manifest.json"))
        assert failed["changed"] is False


def test_capture_again_only_when_the_source_changed_or_forced(systems, make_disk):
    old, store = systems["old"], systems["store"]
    assert capture(root=old, store=store)["changed"] is True
    assert capture(root=old, store=store)["changed"] is False
    assert capture(root=old, store=store, check=True)["changed"] is False
    assert capture(root=old, store=store, force=True)["changed"] is True
    assert capture(root=old, store=store, exclude=[".cache"])["changed"] is True, "other rules, other capture"


def test_the_store_carries_a_restore_program_that_needs_no_ansible(systems):
    old, store, new = systems["old"], systems["store"], systems["new"]
    assert capture(root=old, store=store, settings=["hostname"])["changed"] is True
    program = os.path.join(store, "inplace/bin/inplace-restore")
    assert oct(os.stat(program).st_mode & 0o777) == "0o700"
    with open(os.path.join(store, "inplace/restore-options.json"), "w") as handle:
        json.dump({"settings": ["hostname"], "conflict": "rename"}, handle)
    # The system's own Python, isolated from this venv: no Ansible anywhere on its path.
    proc = subprocess.run(["/usr/bin/python3", "-I", program, "--store", store, "--root", new],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["restored"] == ["alice", "bob"] and result["settings_restored"] == ["hostname"]
    assert open(os.path.join(new, "etc/hostname")).read() == "old-pc-17\n"
    assert int(passwd(new)["bob"][2]) == result["remapped_users"]["bob"]["new"]
    assert restore(store=store, root=new, settings=["hostname"])["changed"] is False


# No selected user is left out -------------------------------------------------------------------------------

def _add_account(root, name, uid, home):
    for relative, line in (("etc/passwd", "%s:x:%d:%d::%s:/bin/bash\n" % (name, uid, uid, home)),
                           ("etc/shadow", "%s:$6$%s$hash:19700:0:99999:7:::\n" % (name, name)),
                           ("etc/group", "%s:x:%d:\n" % (name, uid))):
        with open(os.path.join(root, relative), "a") as handle:
            handle.write(line)


def make_old_root_with_indirect_homes(root):
    """alice's home behind an absolute symlink, dave's behind a bind mount in fstab (both on the old root),
    and frank, an account without a home."""
    skipped = make_old_root(root)
    os.makedirs(os.path.join(root, "data/homes"))
    os.rename(os.path.join(root, "home/alice"), os.path.join(root, "data/homes/alice"))
    os.symlink("/data/homes/alice", os.path.join(root, "home/alice"))
    _add_account(root, "dave", 1002, "/home/dave")
    build_home(os.path.join(root, "data/homes/dave"), 1002, 1002, seed=4)
    os.makedirs(os.path.join(root, "home/dave"))  # the bind mount's mount point, empty
    with open(os.path.join(root, "etc/fstab"), "a") as handle:
        handle.write("/data/homes/dave /home/dave none bind 0 0\n")
    _add_account(root, "frank", 1003, "/home/frank")
    return skipped


@pytest.fixture
def indirect(make_disk):
    with built_systems(make_disk, make_old_root_with_indirect_homes) as found:
        yield found


def test_homes_behind_a_symlink_or_a_bind_mount_are_captured_from_where_they_are(indirect):
    old, store, new = indirect["old"], indirect["store"], indirect["new"]
    made = capture(root=old, store=store)
    assert made["rc"] == 0, made.get("msg")
    assert [u["name"] for u in made["users"]] == ["alice", "bob", "dave"]
    assert [(u["name"], u["reason"]) for u in made["homes_not_archived"]] == [
        ("frank", "its home /home/frank does not exist")]
    manifest = json.load(open(os.path.join(store, "inplace/profiles/manifest.json")))
    recorded = {u["name"]: u for u in manifest["users"]}
    assert sorted(recorded) == ["alice", "bob", "dave", "frank"]
    assert (recorded["alice"]["home_source"], recorded["dave"]["home_source"]) == (
        "/data/homes/alice", "/data/homes/dave")
    assert recorded["frank"]["home_archived"] is False and recorded["frank"]["password_hash"] == "$6$frank$hash"

    restored = restore(store=store, root=new)
    assert restored["rc"] == 0, restored.get("msg")
    accounts = passwd(new)
    assert sorted(restored["restored"]) == ["alice", "bob", "dave", "frank"]
    assert shadow(new)["frank"][1] == "$6$frank$hash" and accounts["frank"][5] == "/home/frank"
    assert not os.path.lexists(os.path.join(new, "home/frank"))
    bob_uid, bob_gid = int(accounts["bob"][2]), int(groups(new)["bob"][2])
    for name, source in (("alice", "data/homes/alice"), ("dave", "data/homes/dave")):
        home = os.path.join(new, "home", name)
        assert not os.path.islink(home)
        found = differences(snapshot(os.path.join(old, source), uid_map={1001: bob_uid}, gid_map={1001: bob_gid},
                                     skip=SKIPPED), snapshot(home))
        assert found == [], "\n".join(found)


def test_a_named_user_whose_home_is_missing_is_an_error(indirect):
    old, store = indirect["old"], indirect["store"]
    result = capture(root=old, store=store, users=["alice", "frank"])
    assert result["rc"] != 0 and result["changed"] is False
    assert "frank" in result["msg"] and "/home/frank" in result["msg"] and "users" in result["msg"], result["msg"]
    assert not os.path.exists(os.path.join(store, "inplace/profiles/manifest.json"))


# Accounts whose homes the reimage keeps -------------------------------------------------------------------------

# Old root, /home of its own, store, new root.
KEPT_HOME_LAYOUT = "label: gpt\nsize=300MiB\nsize=300MiB\nsize=300MiB\nsize=300MiB\n"


@contextlib.contextmanager
def mounted_at(device, path):
    run("mount", device, path)
    try:
        yield path
    finally:
        run("umount", path)


@pytest.fixture
def kept_home(make_disk):
    """An old system whose /home is a partition of its own (which the reimage keeps), not mounted under the old
    root (as in the maintenance environment); ``mount_home()`` mounts it at the new root's /home, as the new
    system's fstab has it."""
    disk = make_disk(1300 * MiB, KEPT_HOME_LAYOUT)
    for number in (1, 2, 3, 4):
        run("mkfs.ext4", "-q", "-F", disk.part(number))
    home_uuid = run("blkid", "-p", "-s", "UUID", "-o", "value", disk.part(2)).stdout.strip()
    with mounted(disk.part(1), readonly=False) as old, mounted(disk.part(2), readonly=False) as homes:
        make_old_root(old, homes=homes)
        os.makedirs(os.path.join(old, "home"))  # the mount point, empty while /home is not mounted
        with open(os.path.join(old, "etc/fstab"), "a") as handle:
            handle.write("UUID=%s /home ext4 defaults 0 2\n" % home_uuid)
    with contextlib.ExitStack() as stack:
        old = stack.enter_context(mounted(disk.part(1)))
        store = stack.enter_context(mounted(disk.part(3), readonly=False))
        new = stack.enter_context(mounted(disk.part(4), readonly=False))
        make_new_root(new)
        yield {"old": old, "store": store, "new": new, "home_uuid": home_uuid,
               "mount_home": lambda: stack.enter_context(mounted_at(disk.part(2), os.path.join(new, "home")))}


def test_accounts_whose_homes_the_reimage_keeps_are_recreated_and_their_files_re_owned(kept_home):
    old, store, new = kept_home["old"], kept_home["store"], kept_home["new"]
    made = capture(root=old, store=store)
    assert made["rc"] == 0, made.get("msg")
    assert made["users"] == []
    reason = "on /home (UUID=%s), a partition the reimage keeps" % kept_home["home_uuid"]
    assert [(u["name"], u["reason"]) for u in made["homes_not_archived"]] == [
        ("alice", "its home /home/alice is " + reason), ("bob", "its home /home/bob is " + reason)]
    manifest = json.load(open(os.path.join(store, "inplace/profiles/manifest.json")))
    alice = manifest["users"][0]
    assert (alice["name"], alice["home_archived"], alice["password_hash"], alice["groups"]) == (
        "alice", False, ALICE_HASH, ["lab"])
    assert not [n for n in os.listdir(os.path.join(store, "inplace/profiles")) if n.endswith(".tar.zst")]

    unmounted = restore(store=store, root=new)
    assert unmounted["rc"] != 0 and sorted(unmounted["failed_users"]) == ["alice", "bob"]
    assert "not in %s although the reimage kept it" % new in unmounted["failed_users"]["bob"]
    kept_home["mount_home"]()
    before = {name: snapshot(os.path.join(new, "home", name)) for name in ("alice", "bob")}
    restored = restore(store=store, root=new)
    assert restored["rc"] == 0, restored.get("msg")
    assert restored["restored"] == ["alice", "bob"] and restored["homes_reowned"] == ["alice", "bob"]
    accounts, secrets, new_groups = passwd(new), shadow(new), groups(new)
    assert accounts["alice"][2:7] == ["1000", "1000", "Alice A,,,", "/home/alice", "/bin/bash"]
    assert secrets["alice"][1:8] == [ALICE_HASH, "19500", "1", "90", "14", "30", ""]
    assert secrets["bob"][1] == BOB_HASH
    assert sorted(new_groups["lab"][3].split(",")) == ["alice", "bob"]
    bob_uid, bob_gid = int(accounts["bob"][2]), int(new_groups["bob"][2])
    assert bob_uid != 1001 and bob_gid != 1001 and restored["remapped_users"]["bob"]["new"] == bob_uid
    # The files stayed where they were; those of bob (in his home and alice's) follow his new ids.
    for name in ("alice", "bob"):
        found = differences({k: dict(v, uid={1001: bob_uid}.get(v["uid"], v["uid"]),
                                     gid={1001: bob_gid}.get(v["gid"], v["gid"])) for k, v in before[name].items()},
                            snapshot(os.path.join(new, "home", name)))
        assert found == [], "\n".join(found)
    assert os.lstat(os.path.join(new, "home/alice/Documents/from-a-colleague")).st_uid == bob_uid
    again = restore(store=store, root=new)
    assert again["rc"] == 0 and again["changed"] is False, again.get("msg")


# Restore: durable before recorded, and recorded with the root restored into ------------------------------------

def _on_the_device(device, path, scratch):
    """The bytes of ``path`` in the ext4 filesystem on ``device`` as a power cut now would leave them: the device
    read past every cache, its journal replayed on a copy; None when the file is not there."""
    copy = os.path.join(scratch, "after-the-cut.img")
    run("dd", "if=%s" % device, "of=%s" % copy, "bs=1M", "iflag=direct", "status=none")
    assert run("e2fsck", "-f", "-y", copy, check=False).returncode < 4
    found = subprocess.run(["debugfs", "-R", "cat %s" % path, copy], capture_output=True, check=True)
    return found.stdout if b"File not found" not in found.stderr else None


def test_restored_files_are_on_the_device_before_the_journal_records_them(systems, make_disk, tmp_path, monkeypatch):
    from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
    from ansible_collections.inplace.migration.plugins.module_utils.profiles.restore import Restore
    from ansible_collections.inplace.migration.plugins.module_utils.state.store import Journal

    old, store = systems["old"], systems["store"]
    assert capture(root=old, store=store, users=["bob"])["changed"] is True
    with open(os.path.join(old, "home/bob/Documents/payload.bin"), "rb") as handle:
        payload = handle.read()
    disk = make_disk(256 * MiB, "label: gpt\nsize=200MiB\n")
    run("mkfs.ext4", "-q", "-F", disk.part(1))
    seen = []
    real_put = Journal.put

    def put(journal, key, value):
        if key == "profile_restore" and value["users"].get("bob", {}).get("restored") and not seen:
            seen.append(_on_the_device(disk.part(1), "/home/bob/Documents/payload.bin", str(tmp_path)))
        real_put(journal, key, value)

    monkeypatch.setattr(Journal, "put", put)
    # A long commit interval: nothing reaches the device unless the restore makes it.
    with mounted(disk.part(1), readonly=False, options=["commit=600"]) as new:
        make_new_root(new, ghost=False)
        report = Restore(ProcessRunner(), store, root=new, accounts="skip").run()
    assert report["restored"] == ["bob"] and len(seen) == 1
    assert seen[0] is not None and len(seen[0]) == len(payload) and seen[0] == payload, \
        "bob was recorded restored while his files were not yet on the device"


def test_a_root_deployed_again_gets_the_profiles_restored_into_it(systems, make_disk):
    old, store, first = systems["old"], systems["store"], systems["new"]
    assert capture(root=old, store=store)["changed"] is True
    assert restore(store=store, root=first)["restored"] == ["alice", "bob"]
    # The image is written again (say the first boot failed): a fresh root, the same store.
    disk = make_disk(1200 * MiB, "label: gpt\nsize=1100MiB\n")
    run("mkfs.ext4", "-q", "-F", disk.part(1))
    with mounted(disk.part(1), readonly=False) as second:
        make_new_root(second)
        again = restore(store=store, root=second)
        assert again["rc"] == 0, again.get("msg")
        assert again["restored"] == ["alice", "bob"] and again["already_restored"] == []
        accounts, secrets = passwd(second), shadow(second)
        assert secrets["alice"][1] == ALICE_HASH and secrets["bob"][1] == BOB_HASH
        bob_uid, bob_gid = int(accounts["bob"][2]), int(groups(second)["bob"][2])
        for name in ("alice", "bob"):
            found = differences(snapshot(os.path.join(old, "home", name), uid_map={1001: bob_uid},
                                         gid_map={1001: bob_gid}, skip=SKIPPED),
                                snapshot(os.path.join(second, "home", name)))
            assert found == [], "\n".join(found)
        assert restore(store=store, root=second)["changed"] is False
    assert restore(store=store, root=first)["changed"] is False
    marker = os.path.join(first, "var/lib/inplace-migration/restored.json")
    assert oct(os.stat(marker).st_mode & 0o777) == "0o600"


def test_a_marker_the_new_image_brought_from_another_migration_does_not_count(systems):
    old, store, new = systems["old"], systems["store"], systems["new"]
    assert capture(root=old, store=store)["changed"] is True
    marker = os.path.join(new, "var/lib/inplace-migration/restored.json")
    os.makedirs(os.path.dirname(marker))
    with open(marker, "w") as handle:
        json.dump({"capture": "another capture", "users": {"alice": {"restored": True}, "bob": {"restored": True}},
                   "settings": {}}, handle)
    result = restore(store=store, root=new)
    assert result["rc"] == 0 and result["restored"] == ["alice", "bob"], result.get("msg")
    assert os.path.isfile(os.path.join(new, "home/alice/Documents/payload.bin"))
