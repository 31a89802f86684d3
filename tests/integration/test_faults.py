"""Faults on loop devices: a module, or the tool it runs, SIGKILLed part way through a step, then the rerun.

The kill is what a lost controller does to a step (its SSH session takes the module and its tools
down) and what a tool crashing does; it is not a power cut (the writes already made stay in the
page cache and reach the disk), which the VM fault matrix covers. Each test asserts that the
interrupted run did not finish, and that the rerun ends where an uninterrupted run would, with
nothing lost: every file's bytes, owners and modes, accounts with their password hashes.

image_deploy's write is interrupted in tests/integration/test_image_deploy.py
(test_an_interrupted_write_resumes_from_its_checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support import adhoc
from tests.support.loopdisk import MiB, mounted, run, tree_digests
from tests.support.processes import descendants
from tests.support.trees import differences, snapshot


def command_line(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return []


def tool(proc, name, without=None):
    """The pid of a running ``name`` under ``proc`` (not one run with the argument ``without``), or None."""
    for pid in descendants(proc.pid):
        argv = command_line(pid)
        if argv and os.path.basename(argv[0]) == name.encode() and (without is None or without.encode() not in argv):
            return pid
    return None


def killing(proc, name, without=None):
    """A victims() for interrupt: the running tool, if it still runs."""
    return lambda: [pid for pid in [tool(proc, name, without)] if pid]


def start(module, args, scratch):
    """``module`` through Ansible in a process of its own (its temporary files in ``scratch``)."""
    code = ("import json, sys; from tests.support import adhoc; "
            "result = adhoc.module(sys.argv[1], json.loads(sys.argv[2])); "
            "sys.exit(0) if result['rc'] == 0 else sys.exit('%s failed: %s' % (sys.argv[1], result.get('msg')))")
    os.makedirs(scratch, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", code, module, json.dumps(args)], cwd=adhoc.REPO, env=dict(
        adhoc.environment(), PYTHONPATH=adhoc.REPO, TMPDIR=scratch, ANSIBLE_REMOTE_TMP=scratch))


def interrupt(proc, ready, victims=None, delay=0.0, frozen=None, timeout=120):
    """Once ``ready()``, wait ``delay``, stop ``victims()`` (pids; without it, the pid ``ready()`` returned) where
    they are, let ``frozen()`` assert what that point is, and SIGKILL them; return the run's exit code.

    Fails when the run ends before ``ready()`` holds: then nothing was interrupted.
    """
    try:
        deadline = time.time() + timeout
        while True:
            found = ready()
            if found:
                break
            assert proc.poll() is None, "the run finished before it could be interrupted"
            assert time.time() < deadline, "the point to interrupt never came"
            time.sleep(0.002)
        time.sleep(delay)
        # A short tool is stopped as found: looking for it a second time can come after its end.
        pids = victims() if victims else [found]
        assert pids, "nothing left to kill"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # one that ended meanwhile: frozen() says if it matters
                os.kill(pid, signal.SIGSTOP)
        if frozen:
            frozen()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return proc.wait(timeout)
    finally:
        # Whatever happened, nothing of the run outlives the test.
        for pid in [proc.pid] + descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def the_whole_run(proc):
    """Ansible starts the module in a session of its own: kill the whole tree, as a lost controller does."""
    return lambda: [proc.pid] + descendants(proc.pid)


# partition_space: the shrink --------------------------------------------------------------------------------

SHRINK_DISK = 384 * MiB
FILES, FILE_BYTES = 36, 8 * MiB


@pytest.fixture
def spread_filesystem(make_disk, tmp_path):
    """An ext4 filesystem filling a disk, its data spread to its end (every other file deleted), so that a
    shrink moves data; many small files too, so e2fsck takes long enough to be caught. Returns (disk, digests)."""
    disk = make_disk(SHRINK_DISK, "label: dos\nstart=2048, type=83\n")
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", disk.part(1))
    with mounted(disk.part(1), readonly=False) as root:
        for index in range(FILES):
            with open(os.path.join(root, "f%02d.bin" % index), "wb") as handle:
                handle.write(os.urandom(FILE_BYTES))
        for index in range(0, FILES, 2):
            os.unlink(os.path.join(root, "f%02d.bin" % index))
        for group in range(10):
            directory = os.path.join(root, "small", "d%02d" % group)
            os.makedirs(directory)
            for index in range(300):
                with open(os.path.join(directory, "s%03d" % index), "wb") as handle:
                    handle.write(b"%d/%d\n" % (group, index))
        digests = tree_digests(root)
    return disk, digests


def last_data_block(device):
    """The highest block any of the big files occupies."""
    commands = "".join("blocks /f%02d.bin\n" % index for index in range(1, FILES, 2))
    out = subprocess.run(["debugfs", "-f", "-", device], input=commands, capture_output=True, text=True,
                         check=True).stdout
    return max(int(block) for block in out.split() if block.isdigit())


def block_count(device):
    header = dict(line.split(":", 1) for line in run("dumpe2fs", "-h", device).stdout.splitlines() if ":" in line)
    return int(header["Block count"])


SHRINK_ARGS = {"size": "140MiB", "min_free": "16MiB", "label": "FAULT-%05d" % (os.getpid() % 100000)}


@pytest.mark.parametrize("victim", ["e2fsck", "resize2fs", "module during resize2fs"])
def test_a_shrink_killed_part_way_is_finished_by_the_rerun_with_every_file_intact(spread_filesystem, tmp_path, victim):
    disk, digests = spread_filesystem
    args = dict(SHRINK_ARGS, disk=disk.path)
    last = last_data_block(disk.part(1))
    proc = start("partition_space", args, str(tmp_path / "scratch"))
    # e2fsck -f -p repairs before the shrink (-n only checks after it); resize2fs -P only asks the minimum.
    if victim == "e2fsck":
        def running():
            return tool(proc, "e2fsck", "-n")
        code = interrupt(proc, running, frozen=lambda: running() or pytest.fail("e2fsck ended before the kill"))
    else:
        def running():
            return tool(proc, "resize2fs", "-P")
        code = interrupt(proc, running, killing(proc, "resize2fs", "-P") if victim == "resize2fs" else
                         the_whole_run(proc), delay=0.05, frozen=lambda: running() or pytest.fail(
                             "resize2fs ended before the kill"))
    assert code != 0, "the interrupted run finished"
    assert len(disk.table()["partitions"]) == 1, "the store was made although the shrink was interrupted"

    again = adhoc.module("partition_space", args)
    assert again["rc"] == 0 and again["changed"] is True, again.get("msg")
    table = disk.table()["partitions"]
    assert len(table) == 2 and again["store"]["usable_bytes"] >= 140 * MiB
    assert run("e2fsck", "-f", "-n", disk.part(1), check=False).returncode == 0
    assert block_count(disk.part(1)) < last, "the shrink moved no data: the test shows nothing"
    with mounted(disk.part(1)) as root:
        assert tree_digests(root) == digests


# profile_capture and profile_restore ------------------------------------------------------------------------

BIG = 96 * MiB
# Old root (a directory), the store, the new root.
PROFILES_LAYOUT = "label: gpt\nsize=200MiB\nsize=300MiB\n"


def _bytes_under(directory, prefix=""):
    """Bytes in the files under ``directory`` whose top-level entry starts with ``prefix``."""
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            if entry.startswith(prefix):
                for base, unused_dirs, files in os.walk(os.path.join(directory, entry)):
                    for name in files:
                        with contextlib.suppress(OSError):
                            total += os.lstat(os.path.join(base, name)).st_size
    return total


@pytest.fixture
def profiles(make_disk, tmp_path):
    """An old root with alice and bob (bob with a large file, so his archive takes a while), a store and a new root
    on a loop disk; yields a dict with the three paths."""
    from tests.integration.test_profiles import make_new_root, make_old_root
    old = str(tmp_path / "old")
    make_old_root(old)
    big = os.path.join(old, "home/bob/Videos/big.bin")
    os.makedirs(os.path.dirname(big))
    with open(big, "wb") as handle:
        handle.write(os.urandom(BIG))
    os.lchown(os.path.dirname(big), 1001, 1001)
    os.lchown(big, 1001, 1001)
    disk = make_disk(512 * MiB, PROFILES_LAYOUT)
    for number in (1, 2):
        run("mkfs.ext4", "-q", "-F", disk.part(number))
    with mounted(disk.part(1), readonly=False) as store, mounted(disk.part(2), readonly=False) as new:
        make_new_root(new)
        yield {"old": old, "store": store, "new": new}


def assert_restored_as_captured(systems):
    """Every file of alice and bob in the new root as in the old one (bob's ids remapped), and both accounts
    with their password hashes."""
    from tests.integration.test_profiles import ALICE_HASH, BOB_HASH, SKIPPED, groups, passwd, shadow
    old, new = systems["old"], systems["new"]
    accounts, secrets = passwd(new), shadow(new)
    assert secrets["alice"][1] == ALICE_HASH and secrets["bob"][1] == BOB_HASH
    assert [line for line in open(os.path.join(new, "etc/passwd")) if line.startswith("bob:")] == \
        [":".join(accounts["bob"]) + "\n"], "bob's account twice"
    bob_uid, bob_gid = int(accounts["bob"][2]), int(groups(new)["bob"][2])
    for name in ("alice", "bob"):
        found = differences(snapshot(os.path.join(old, "home", name), uid_map={1001: bob_uid},
                                     gid_map={1001: bob_gid}, skip=SKIPPED),
                            snapshot(os.path.join(new, "home", name)))
        assert found == [], "\n".join(found[:20])
    assert not [n for n in os.listdir(os.path.join(new, "home")) if n.startswith(".inplace-restore")]


@pytest.mark.parametrize("victim", ["zstd", "module"])
def test_a_capture_killed_mid_archive_is_completed_by_the_rerun(profiles, tmp_path, victim):
    store = profiles["store"]
    args = {"root": profiles["old"], "store": store}
    proc = start("profile_capture", args, str(tmp_path / "scratch"))
    written = os.path.join(store, "inplace")
    manifest = os.path.join(store, "inplace/profiles/manifest.json")

    def mid_archive():
        assert tool(proc, "zstd") and not os.path.exists(manifest)

    code = interrupt(proc, lambda: tool(proc, "zstd") and _bytes_under(written) > 8 * MiB,
                     killing(proc, "zstd") if victim == "zstd" else the_whole_run(proc), frozen=mid_archive)
    assert code != 0, "the interrupted capture finished"
    assert not os.path.exists(manifest), "a manifest after an interrupted capture"

    again = adhoc.module("profile_capture", args)
    assert again["rc"] == 0 and again["changed"] is True, again.get("msg")
    with open(manifest) as handle:
        recorded = json.load(handle)
    assert recorded["complete"] and recorded["verified"]
    assert [u["name"] for u in recorded["users"]] == ["alice", "bob"]
    restored = adhoc.module("profile_restore", {"store": store, "root": profiles["new"]})
    assert restored["rc"] == 0, restored.get("msg")
    assert_restored_as_captured(profiles)


RESTORE_POINTS = ["tar mid-extraction", "module mid-extraction", "module between the move and the record"]


@pytest.mark.parametrize("point", RESTORE_POINTS)
def test_a_restore_killed_mid_user_is_completed_by_the_rerun(profiles, tmp_path, point):
    store, new = profiles["store"], profiles["new"]
    assert adhoc.module("profile_capture", {"root": profiles["old"], "store": store})["rc"] == 0
    args = {"store": store, "root": new}
    proc = start("profile_restore", args, str(tmp_path / "scratch"))
    home = os.path.join(new, "home")
    bob = os.path.join(home, "bob")
    record = os.path.join(new, "var/lib/inplace-migration/restored.json")

    def bob_recorded():
        with contextlib.suppress(OSError, ValueError):
            with open(record) as handle:
                return bool(json.load(handle)["users"].get("bob", {}).get("restored"))
        return False

    if point.endswith("mid-extraction"):
        def ready():
            return tool(proc, "tar") and _bytes_under(home, ".inplace-restore-bob") > 8 * MiB

        def frozen():
            assert tool(proc, "tar") and not os.path.lexists(bob)
    else:
        def ready():
            return os.path.lexists(bob)

        def frozen():
            assert not bob_recorded()
    code = interrupt(proc, ready, killing(proc, "tar") if point.startswith("tar") else the_whole_run(proc),
                     frozen=frozen)
    assert code != 0, "the interrupted restore finished"
    assert not bob_recorded()

    again = adhoc.module("profile_restore", args)
    assert again["rc"] == 0 and again["changed"] is True, again.get("msg")
    assert "bob" in again["restored"]
    assert_restored_as_captured(profiles)
    assert adhoc.module("profile_restore", args)["changed"] is False
