"""Long steps run detached (async, poll 0) and await_step waits for them, through ansible-playbook on localhost.

The last test kills the controller (ansible-playbook and everything in its session, as a dropped SSH
connection does) while a capture runs: the capture finishes on its own, and a rerun started while it
still runs waits for it under the PC's lock and returns its result.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
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
