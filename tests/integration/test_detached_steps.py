"""Long steps run detached (async, poll 0) and await_step waits for them, through ansible-playbook on localhost.

One test kills the controller (ansible-playbook and everything in its session, as a dropped SSH
connection does) while a capture runs: the capture finishes on its own, and a rerun started while it
still runs waits for it under the PC's lock and returns its result. The last two run the playbook over
a real SSH connection to a private sshd on 127.0.0.1 and kill that sshd (the listener and every
session) while await_step waits: once it comes back, await_step takes the step's result; when it
does not, the wait fails the PC at its reconnect timeout or the step's timeout, whichever comes first, in
one sentence.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.state.lock import RUN_DIR
from tests.support import adhoc
from tests.support.processes import descendants
from tests.unit.plugins.modules.conftest import write_accounts

MiB = 1024 * 1024
PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Capture, detached from this controller
      inplace.migration.profile_capture:
        root: {old}
        store: {store}
        settings: []
      async: 600
      poll: 0
      register: job

    - name: Wait for the capture
      inplace.migration.await_step:
        job: "{{{{ job }}}}"
        step: capture
        poll: 1
        report_every: 1
      register: result
      ignore_errors: true

    - name: Hand the result to the test
      ansible.builtin.copy:
        content: "{{{{ result | to_json }}}}"
        dest: {out}
        mode: "0600"
      check_mode: false
"""


@pytest.fixture
def rig(tmp_path):
    old, store = tmp_path / "old", tmp_path / "store"
    write_accounts(str(old), {"alice": 1000})
    home = old / "home" / "alice"
    (home / "Documents").mkdir(parents=True)
    (home / "Documents" / "notes.txt").write_bytes(b"shopping: milk\n")
    store.mkdir()
    book = tmp_path / "capture.yml"

    def write(store_path=store):
        book.write_text(PLAYBOOK.format(old=old, store=store_path, out=tmp_path / "result.json"))
        return str(book)
    return {"old": old, "home": home, "store": store, "write": write, "out": tmp_path / "result.json"}


def job_file(jid):
    return os.path.expanduser(os.path.join("~/.ansible_async", jid))


def test_await_step_prints_a_line_per_step_and_returns_the_module_s_result(rig):
    proc = adhoc.playbook(rig["write"]())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = re.search(r"^localhost: capture started \(async job (j\d+\.\d+)\)$", proc.stdout, re.M)
    assert started, proc.stdout
    assert re.search(r"^localhost: capture done after \d+ s$", proc.stdout, re.M), proc.stdout
    result = json.loads(rig["out"].read_text())
    assert result["changed"] is True and not result.get("failed")
    assert [user["name"] for user in result["users"]] == ["alice"]
    assert "ansible_job_id" not in result and "finished" not in result
    manifest = json.loads((rig["store"] / "inplace" / "profiles" / "manifest.json").read_text())
    archive = rig["store"] / "inplace" / "profiles" / "alice.tar.zst"
    assert [user["name"] for user in manifest["users"]] == ["alice"]
    assert result["users"][0]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert not os.path.exists(job_file(started.group(1))), "await_step leaves the job's file behind"


def test_a_failed_step_fails_the_wait_with_the_module_s_message(rig, tmp_path):
    missing = tmp_path / "not-mounted"
    proc = adhoc.playbook(rig["write"](missing))
    assert re.search(r"^localhost: capture failed after \d+ s$", proc.stdout, re.M), proc.stdout
    result = json.loads(rig["out"].read_text())
    assert result["failed"] is True
    assert result["msg"] == "the store %s does not exist or is not a directory; mount the store there first." % missing
    assert not missing.exists()


def test_a_job_the_pc_no_longer_has_fails_in_one_sentence_saying_to_run_again(tmp_path):
    # A PC that restarted while the step ran has lost async's job files (they live under /root and the maintenance
    # environment's root is in RAM): the wait stops at once instead of asking until the step's timeout.
    book = tmp_path / "lost.yml"
    book.write_text("""\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Wait for a step whose job the PC does not have
      inplace.migration.await_step:
        job: {ansible_job_id: j%d.1, started: 1, finished: 0}
        step: deploy
        poll: 1
""" % (os.getpid() * 1000 + 17))
    proc = adhoc.playbook(str(book))
    assert proc.returncode != 0
    failed = re.search(r'^fatal: \[localhost\]: FAILED! => .*"msg": "([^"]*)"', proc.stdout, re.M)
    assert failed, proc.stdout
    message = failed.group(1)
    assert re.fullmatch(r"localhost: the deploy step's job j\d+\.1 is not in \S+ on the PC, so the PC restarted since "
                        r"the step began; run the playbook again and the step resumes from what it finds done\.",
                        message), message
    adhoc.assert_one_sentence_naming_the_fix({"rc": 2, "msg": message}, ["run the playbook again"])


def test_in_check_mode_the_detached_step_changes_nothing_and_its_estimate_is_returned(rig):
    proc = adhoc.playbook(rig["write"](), check=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^localhost: capture done after", proc.stdout, re.M), proc.stdout
    result = json.loads(rig["out"].read_text())
    assert result["store_bytes_needed"] > 0
    assert os.listdir(rig["store"]) == []


def read_lock():
    try:
        with open(os.path.join(RUN_DIR, "lock")) as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_step_outlives_its_controller_and_a_rerun_takes_its_result(rig):
    # Incompressible data, so the capture runs several seconds.
    for index in range(3):
        with open(rig["home"] / ("data%d.bin" % index), "wb") as handle:
            handle.write(os.urandom(160 * MiB))
    book = rig["write"]()
    controller = subprocess.Popen(adhoc.playbook_command(book), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=adhoc.environment(), start_new_session=True)
    record = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            record = read_lock()
            if record and record.get("step") == "capture" and alive(record["pid"]):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the capture never took the PC's lock")
        time.sleep(1)
        # The controller dies with every process it runs (its workers detach into sessions of their own), as a
        # dropped SSH connection takes what runs in it.
        for pid in [controller.pid] + descendants(controller.pid):
            os.kill(pid, signal.SIGKILL)
        controller.wait()
        assert alive(record["pid"]), "the capture died with its controller"
        assert not (rig["store"] / "inplace" / "profiles" / "manifest.json").exists(), "the capture ended too soon"
        assert record["async_job"].startswith("j")

        rerun = adhoc.playbook(book)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert not alive(record["pid"])
        with open(job_file(record["async_job"])) as handle:
            earlier = json.loads(handle.read())
    finally:
        if controller.poll() is None:
            controller.kill()
        if record and record.get("async_job") and os.path.exists(job_file(record["async_job"])):
            os.unlink(job_file(record["async_job"]))
    # The earlier run's capture finished on its own, complete and verified.
    assert earlier["changed"] is True and not earlier.get("failed")
    manifest = json.loads((rig["store"] / "inplace" / "profiles" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["verified"]
    archive = rig["store"] / "inplace" / "profiles" / "alice.tar.zst"
    (captured,) = [user for user in earlier["users"] if user["name"] == "alice"]
    assert captured["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    listing = subprocess.run(["tar", "--zstd", "-tf", str(archive)], capture_output=True, check=True).stdout.decode()
    assert {"data0.bin", "data1.bin", "data2.bin", "Documents/notes.txt"} <= {
        name[2:] if name.startswith("./") else name for name in listing.split("\n")}
    # The rerun waited for it under the lock and took its result: nothing captured again.
    assert re.search(r"^localhost: capture done after", rerun.stdout, re.M), rerun.stdout
    result = json.loads(rig["out"].read_text())
    assert result["changed"] is False and [user["name"] for user in result["users"]] == ["alice"]
    assert result["users"][0]["bytes"] == captured["bytes"]


# A real SSH connection -------------------------------------------------------------------------------------

SSHD = "/usr/sbin/sshd"


class Sshd:
    """A private sshd on 127.0.0.1 that lets root in with a key made for the test; ``down`` kills it with every
    session it serves, ``up`` starts it again on the same port."""

    def __init__(self, directory):
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.key = os.path.join(directory, "client_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(directory, "host_key")],
                       check=True)
        shutil.copyfile(self.key + ".pub", os.path.join(directory, "authorized_keys"))
        self.config = os.path.join(directory, "sshd_config")
        with open(self.config, "w") as handle:
            handle.write("Port %d\nListenAddress 127.0.0.1\nHostKey %s/host_key\nPidFile %s/sshd.pid\n"
                         "AuthorizedKeysFile %s/authorized_keys\nStrictModes no\nUsePAM no\n"
                         "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                         "Subsystem sftp internal-sftp\n" % ((self.port,) + (directory,) * 3))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation directory
        self.process = None

    def up(self):
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", self.config], stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError("sshd did not listen on port %d" % self.port)

    def down(self):
        """Kill the listener and every session's sshd, as a PC that drops off the network: the connections close
        at once. What the sessions ran is left to end as it does when its connection goes (a SIGKILL would leave
        the root login shell's start-up files half run, with their locks held)."""
        if self.process is None:
            return
        for pid in [self.process.pid] + descendants(self.process.pid):
            try:
                with open("/proc/%d/comm" % pid) as handle:
                    if handle.read().strip() == "sshd":
                        os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass
        self.process.wait()
        self.process = None

    def inventory(self, control_dir):
        path = os.path.join(self.directory, "inventory")
        with open(path, "w") as handle:
            handle.write("pc ansible_host=127.0.0.1 ansible_port=%d ansible_user=root ansible_ssh_private_key_file=%s "
                         "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR' "
                         "ansible_control_path_dir=%s\n" % (self.port, self.key, control_dir))
        return path


@pytest.fixture
def sshd(tmp_path):
    if not os.path.exists(SSHD):
        pytest.fail("%s is missing: ./dev setup installs openssh-server" % SSHD)
    server = Sshd(str(tmp_path))
    # A short directory: the control socket's path must fit a socket address.
    control_dir = tempfile.mkdtemp(prefix="cp", dir="/tmp")
    server.up()
    try:
        yield server, control_dir
    finally:
        server.down()
        shutil.rmtree(control_dir, ignore_errors=True)


@contextlib.contextmanager
def capture_over_ssh(rig, server, control_dir, timeout, reconnect_timeout=600):
    """The capture playbook for the host ``pc`` started over SSH; yields (controller, its output file, the job's id,
    the capture's lock record) once the capture holds the PC's lock. On the way out the controller is killed if it
    still runs, the capture is waited for (it runs on, detached) and the job's file is removed."""
    book = rig["write"]()
    with open(book) as handle:
        text = handle.read()
    text = text.replace("- hosts: localhost", "- hosts: pc").replace(
        "        report_every: 1\n",
        "        report_every: 1\n        timeout: %d\n        reconnect_timeout: %d\n" % (timeout, reconnect_timeout))
    with open(book, "w") as handle:
        handle.write(text)
    for index in range(3):  # incompressible, so the capture outlives the first questions
        with open(rig["home"] / ("data%d.bin" % index), "wb") as handle:
            handle.write(os.urandom(160 * MiB))
    output = open(os.path.join(os.path.dirname(book), "controller.out"), "w+")
    command = ["ansible-playbook", "-i", server.inventory(control_dir), book]
    controller = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                  env=dict(adhoc.environment(), PYTHONUNBUFFERED="1"), start_new_session=True)
    record, jid = None, None
    try:
        jid = _wait_for(output, r"^pc: capture started \(async job (j\d+\.\d+)\)$", controller).group(1)
        record = _capture_running(controller)
        yield controller, output, jid, record
    finally:
        if controller.poll() is None:
            os.killpg(controller.pid, signal.SIGKILL)
            controller.wait()
        output.close()
        deadline = time.time() + 120
        while record and alive(record["pid"]) and time.time() < deadline:
            time.sleep(0.5)
        if jid and os.path.exists(job_file(jid)):
            os.unlink(job_file(jid))


def _printed(output):
    output.seek(0)
    return output.read()


def _capture_running(controller, seconds=120):
    """The lock record of the capture once it holds the PC's lock."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        record = read_lock()
        if record and record.get("step") == "capture" and alive(record["pid"]):
            return record
        assert controller.poll() is None, "the playbook ended before the capture took the PC's lock"
        time.sleep(0.1)
    pytest.fail("the capture never took the PC's lock")


def _wait_for(output, pattern, controller, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = re.search(pattern, _printed(output), re.M)
        if found:
            return found
        assert controller.poll() is None, "the playbook ended: " + _printed(output)
        time.sleep(0.1)
    pytest.fail("never printed %r" % pattern)


def test_await_step_asks_again_through_a_dropped_ssh_connection_and_takes_the_step_s_result(rig, sshd):
    server, control_dir = sshd
    running = capture_over_ssh(rig, server, control_dir, timeout=600, reconnect_timeout=300)
    with running as (controller, output, jid, record):
        server.down()
        # The step is detached from the sessions killed: it runs on.
        assert alive(record["pid"]), "the capture died with the SSH connection"
        _wait_for(output, r"^pc: capture: the connection to the PC dropped \(Failed to connect to the host via ssh.*\); "
                          r"asking again for up to 5 min 0 s$", controller)
        time.sleep(5)  # several questions lost, with the backoff
        server.up()
        assert controller.wait(timeout=300) == 0
        printed = _printed(output)
        assert not os.path.exists(job_file(jid)), "await_step leaves the job's file behind"
    assert re.search(r"^pc: capture: the PC answers again after \d+ s$", printed, re.M), printed
    assert re.search(r"^pc: capture done after \d+ s$", printed, re.M), printed
    result = json.loads(rig["out"].read_text())
    assert result["changed"] is True and not result.get("failed"), result
    assert [user["name"] for user in result["users"]] == ["alice"]
    manifest = json.loads((rig["store"] / "inplace" / "profiles" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["verified"]
    archive = rig["store"] / "inplace" / "profiles" / "alice.tar.zst"
    assert result["users"][0]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()


# The step's timeout ends the wait when it comes first; otherwise reconnect_timeout does, so that a PC switched off
# does not hold the others of its batch for the step's hours.
@pytest.mark.parametrize("timeout, reconnect_timeout, dropped_line, limit", [
    (8, 600, r"asking again until the step's timeout", r"until the step's timeout"),
    (600, 8, r"asking again for up to 8 s", r"the longest this wait asks again \(reconnect_timeout\)"),
], ids=["step-timeout-first", "reconnect-timeout-first"])
def test_await_step_fails_the_pc_in_one_sentence_when_the_connection_stays_down(
        rig, sshd, timeout, reconnect_timeout, dropped_line, limit):
    server, control_dir = sshd
    with capture_over_ssh(rig, server, control_dir, timeout, reconnect_timeout) as (controller, output, _jid, record):
        server.down()
        went_down = time.time()
        controller.wait(timeout=120)
        waited = time.time() - went_down
        printed = _printed(output)
        # The step finishes on its own; its job file is left for the rerun that never comes here.
        deadline = time.time() + 120
        while alive(record["pid"]) and time.time() < deadline:
            time.sleep(0.5)
    assert waited < 60, "the wait went on for %d s after the connection dropped" % waited
    assert re.search(r"^pc: capture: the connection to the PC dropped \(Failed to connect to the host via ssh.*\); "
                     + dropped_line + "$", printed, re.M), printed
    failed = re.search(r'^fatal: \[pc\]: FAILED! => .*"msg": "([^"]*)"', printed, re.M)
    assert failed, printed
    message = failed.group(1)
    assert re.fullmatch(r"pc: the connection to the PC dropped while the capture step ran and did not come back "
                        r"for \d+ s \(Failed to connect to the host via ssh.*\), " + limit + r", so this PC stops "
                        r"here while the others go on and the step may still be running there; once the PC answers, "
                        r"run the playbook again and it takes the step's result\.", message), message
    adhoc.assert_one_sentence_naming_the_fix({"rc": 2, "msg": message}, ["run the playbook again"])
    manifest = json.loads((rig["store"] / "inplace" / "profiles" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["verified"], "the step did not run on"
