# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PC's one migration lock, held by every step that writes: store, capture, deploy, restore, cleanup.

The rule: a step always locks ``/run/inplace-migration/lock`` first and then, when it is given a
mounted store that holds the migration's directory (``inplace/``), the store's
``inplace/journal.lock`` too. Every writer takes the /run file, so a step that runs before the store
exists (partition_space) and one that runs with it (capture) contend there; the store's file is
what environments with a /run of their own share (the new system's first-boot hook and a restore,
the maintenance environment and a store mounted elsewhere); a store still empty holds nothing to
guard, and a refusal leaves it empty. Both are ``flock`` locks: the kernel drops them when the
holder dies (SIGKILL, a reboot), so a lock file left behind means nothing.

Each file holds the holder's record (step, pid, start, the controller's user@host, the async job),
read by whoever finds the lock taken:

- another step is refused at once, with one sentence naming the holder and since when;
- the same step (a rerun whose controller was lost while the step ran on) waits for the holder,
  up to ``wait`` seconds, and then runs: the steps are idempotent, so it finds the work done and
  returns its result.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import time

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.state.store import JOURNAL_LOCK, TOP

RUN_DIR = "/run/inplace-migration"
LOCK_NAME = "lock"
# Set by a holder for a program it runs under its lock (the first-boot hook's restore program).
LOCKED_BY_ENV = "INPLACE_STORE_LOCKED_BY"
DEFAULT_WAIT = 3600
LOCK_ARGUMENT_SPEC = {"lock_timeout": {"type": "int", "default": DEFAULT_WAIT}}
POLL = 0.5
# How long a holder may take between its flock and writing its record before it counts as unknown.
RECORD_GRACE = 3.0


@contextlib.contextmanager
def pc_lock(step, store=None, wait=DEFAULT_WAIT, check_mode=False, by=None, run_dir=None):
    """Hold the PC's migration lock for ``step`` (and the store's, with a ``store``), or raise MigrationError.

    Check mode changes nothing and takes no lock. ``by`` says who runs the step when it is not a
    controller (the first-boot hook).
    """
    if check_mode or os.environ.get(LOCKED_BY_ENV):
        yield None
        return
    run_dir = run_dir or RUN_DIR
    os.makedirs(run_dir, 0o700, exist_ok=True)
    paths = [os.path.join(run_dir, LOCK_NAME)]
    if store is not None:
        # Never create the lock on whatever lies under an unmounted store's mount point.
        store.check(writable=True)
        if os.path.isdir(store.path(TOP)):
            paths.append(store.path(JOURNAL_LOCK))
    record = holder_record(step, by)
    deadline = time.time() + wait
    with contextlib.ExitStack() as stack:
        for path in paths:
            stack.enter_context(_flock(path, step, deadline, wait, record))
        yield record


def holder_record(step, by=None):
    record = {"step": step, "pid": os.getpid()}
    controller = _controller()
    if by or controller:
        record["by"] = by or controller
    job = _async_job()
    if job:
        record["async_job"] = job
    return record


def describe(record):
    """``capture (pid 1234, admin@192.0.2.7, async job j1.2) since 2026-11-30 17:02:11 UTC``."""
    details = ["pid %s" % record.get("pid", "?")]
    if record.get("by"):
        details.append(str(record["by"]))
    if record.get("async_job"):
        details.append("async job %s" % record["async_job"])
    started = record.get("started")
    since = " since %s" % time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if started else ""
    return "%s (%s)%s" % (record.get("step", "an unknown step"), ", ".join(details), since)


@contextlib.contextmanager
def _flock(path, step, deadline, wait, record):
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        unknown_since = None
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            holder = _read(descriptor)
            now = time.time()
            if holder is None or not _alive(holder):
                # Taken a moment ago and not described yet, or held by something other than its recorded pid.
                unknown_since = unknown_since or now
                if now - unknown_since < RECORD_GRACE:
                    time.sleep(0.1)
                    continue
                raise MigrationError(_refusal(path, holder))
            unknown_since = None
            if holder.get("step") != step:
                raise MigrationError(_refusal(path, holder))
            if now >= deadline:
                raise MigrationError(
                    "%s is still running, from an earlier run; waited %d s for it (lock_timeout). Run again later "
                    "to take its result." % (describe(holder), wait))
            time.sleep(POLL)
        # Since when it holds the lock, not since when it waited for it.
        record["started"] = time.time()
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(record, sort_keys=True).encode("utf-8"), 0)
        yield
    finally:
        os.close(descriptor)


def _refusal(path, holder):
    who = describe(holder) if holder else "a process that left no record"
    pid = "pid %s" % holder.get("pid") if holder else "it"
    return ("this PC's migration lock %s is held by %s; wait for it to finish, or, if %s no longer runs, find what "
            "holds the lock with `fuser -v %s`." % (path, who, pid, path))


def _read(descriptor):
    try:
        record = json.loads(os.pread(descriptor, 4096, 0).decode("utf-8"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _alive(record):
    try:
        os.kill(int(record.get("pid")), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass
    return True


def _controller():
    """``user@address`` of the controller that started this module over SSH (with sudo), if known."""
    client = os.environ.get("SSH_CLIENT", "").split()
    user = os.environ.get("SUDO_USER") or os.environ.get("USER") or os.environ.get("LOGNAME")
    if client:
        return "%s@%s" % (user or "?", client[0])
    return user


def _async_job():
    """The Ansible async job id when this runs under async_wrapper (the job's id is its job file's name)."""
    pid = os.getppid()
    for _depth in range(4):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                argv = handle.read().decode("utf-8", "replace").split("\0")
            with open("/proc/%d/stat" % pid) as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        if len(argv) > 2 and "async_wrapper" in os.path.basename(argv[1]):
            directory = os.path.expanduser(os.environ.get("ANSIBLE_ASYNC_DIR", "~/.ansible_async"))
            found = glob.glob(os.path.join(glob.escape(directory), glob.escape(argv[2]) + ".*"))
            return os.path.basename(found[0]) if len(found) == 1 else argv[2]
        if parent <= 1:
            return None
        pid = parent
    return None
