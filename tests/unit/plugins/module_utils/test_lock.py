"""The PC's one migration lock, between real processes: refusal, the same step's wait, a killed holder."""

from __future__ import annotations

import calendar
import json
import multiprocessing
import os
import re
import signal
import time

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.state import lock
from ansible_collections.inplace.migration.plugins.module_utils.state.lock import pc_lock
from ansible_collections.inplace.migration.plugins.module_utils.state.store import Store


def _hold(step, run_dir, store_root, ready, release, hold_for, done_file):
    store = Store(store_root) if store_root else None
    with pc_lock(step, store, run_dir=run_dir):
        ready.set()
        if hold_for is None:
            release.wait(30)
        else:
            time.sleep(hold_for)
        if done_file:
            with open(done_file, "w") as handle:
                handle.write("the holder's work")


class Holder:
    """A second process holding the lock for ``step`` until released (or for ``hold_for`` seconds)."""

    def __init__(self, step, run_dir, store_root=None, hold_for=None, done_file=None):
        self.ready, self.release = multiprocessing.Event(), multiprocessing.Event()
        self.process = multiprocessing.Process(target=_hold, args=(
            step, run_dir, store_root, self.ready, self.release, hold_for, done_file))

    def __enter__(self):
        self.process.start()
        assert self.ready.wait(10), "the holder never took the lock"
        return self

    def __exit__(self, *exc):
        if self.process.is_alive():
            self.release.set()
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


@pytest.fixture
def dirs(tmp_path):
    run_dir, store_root = tmp_path / "run", tmp_path / "store"
    (store_root / "inplace").mkdir(parents=True)
    return str(run_dir), str(store_root)


def test_another_step_is_refused_with_one_sentence_naming_the_holder_and_since_when(dirs, monkeypatch):
    run_dir, store_root = dirs
    monkeypatch.setenv("SSH_CLIENT", "192.0.2.7 51234 22")
    monkeypatch.setenv("SUDO_USER", "admin")
    with Holder("capture", run_dir, store_root) as holder:
        started = time.time()
        with pytest.raises(MigrationError) as refused:
            with pc_lock("deploy", Store(store_root), run_dir=run_dir):
                pytest.fail("deploy ran while capture held the lock")
        assert time.time() - started < 2, "another step must be refused at once, not waited for"
    message = str(refused.value)
    lock_path = os.path.join(run_dir, "lock")
    since = re.search(r"since (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", message)
    assert message == (
        "this PC's migration lock %s is held by capture (pid %d, admin@192.0.2.7) since %s UTC; wait for it to "
        "finish, or, if pid %d no longer runs, find what holds the lock with `fuser -v %s`." % (
            lock_path, holder.process.pid, since.group(1), holder.process.pid, lock_path))
    assert abs(calendar.timegm(time.strptime(since.group(1), "%Y-%m-%d %H:%M:%S")) - started) < 60


def test_a_step_before_the_store_exists_and_one_with_it_contend_on_the_run_lock(dirs):
    run_dir, store_root = dirs
    with Holder("store", run_dir) as holder:
        with pytest.raises(MigrationError, match=r"held by store \(pid %d" % holder.process.pid):
            with pc_lock("capture", Store(store_root), run_dir=run_dir):
                pass
    with Holder("capture", run_dir, store_root) as holder:
        with pytest.raises(MigrationError, match=r"held by capture \(pid %d" % holder.process.pid):
            with pc_lock("store", run_dir=run_dir):
                pass
    record = json.loads(open(os.path.join(store_root, "inplace", "journal.lock")).read())
    assert record["step"] == "capture" and record["pid"] == holder.process.pid


def test_the_store_s_lock_alone_refuses_too(dirs, tmp_path):
    """The new system's /run is not the maintenance environment's: the store's file is what they share."""
    run_dir, store_root = dirs
    with Holder("restore", str(tmp_path / "other-run"), store_root):
        with pytest.raises(MigrationError, match=r"journal.lock is held by restore"):
            with pc_lock("cleanup", Store(store_root), run_dir=run_dir):
                pass


def test_the_same_step_waits_for_the_earlier_run_then_proceeds_and_finds_its_work_done(dirs, tmp_path):
    run_dir, store_root = dirs
    done = str(tmp_path / "captured")
    with Holder("capture", run_dir, store_root, hold_for=1.5, done_file=done):
        started = time.time()
        with pc_lock("capture", Store(store_root), wait=30, run_dir=run_dir) as record:
            waited = time.time() - started
            assert os.path.exists(done), "the rerun ran before the earlier capture finished"
        assert 0.5 < waited < 10
    assert record["step"] == "capture" and record["pid"] == os.getpid()
    assert record["started"] >= started + 0.5, "the record says since when it holds the lock, not since it waited"


def test_the_same_step_s_wait_is_bounded(dirs):
    run_dir, store_root = dirs
    with Holder("deploy", run_dir, store_root):
        started = time.time()
        with pytest.raises(MigrationError, match=r"deploy \(pid \d+\) since .* is still running, from an earlier run; "
                                                 r"waited 1 s for it \(lock_timeout\)\. Run again later"):
            with pc_lock("deploy", Store(store_root), wait=1, run_dir=run_dir):
                pass
        assert 0.9 < time.time() - started < 5


def test_a_holder_killed_with_sigkill_leaves_no_lock_behind(dirs):
    run_dir, store_root = dirs
    # Killed while it sleeps: killed inside Event.wait, it could leave the event's own lock taken.
    with Holder("capture", run_dir, store_root, hold_for=60) as holder:
        os.kill(holder.process.pid, signal.SIGKILL)
        holder.process.join(10)
        assert holder.process.exitcode == -signal.SIGKILL
        started = time.time()
        with pc_lock("deploy", Store(store_root), wait=0, run_dir=run_dir) as record:
            assert time.time() - started < 1
    assert os.path.exists(os.path.join(run_dir, "lock")), "the stale file is there and harmless"
    assert json.loads(open(os.path.join(run_dir, "lock")).read())["step"] == "deploy" == record["step"]


def test_a_program_run_by_the_holder_does_not_take_the_lock_again(dirs, monkeypatch):
    run_dir, store_root = dirs
    with Holder("restore", run_dir, store_root):
        monkeypatch.setenv(lock.LOCKED_BY_ENV, "first-boot")
        with pc_lock("restore", Store(store_root), wait=0, run_dir=run_dir):
            pass


def test_check_mode_takes_no_lock(dirs):
    run_dir, store_root = dirs
    with Holder("capture", run_dir, store_root):
        with pc_lock("deploy", Store(store_root), check_mode=True, run_dir=run_dir) as record:
            assert record is None


def test_nothing_is_created_under_a_store_that_is_not_there(dirs, tmp_path):
    run_dir, _store_root = dirs
    with pytest.raises(MigrationError, match="does not exist"):
        with pc_lock("capture", Store(str(tmp_path / "mnt" / "store")), run_dir=run_dir):
            pass
    assert not os.path.exists(tmp_path / "mnt")


def test_an_empty_store_gets_no_lock_file(tmp_path):
    """A refusal must leave a new store as it found it; the /run lock alone guards it."""
    store_root = tmp_path / "store"
    store_root.mkdir()
    with pc_lock("capture", Store(str(store_root)), run_dir=str(tmp_path / "run")):
        assert os.listdir(store_root) == []
    assert os.path.exists(tmp_path / "run" / "lock")
