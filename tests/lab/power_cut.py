"""Pull the plug on a lab PC in the middle of the image write, then boot it again.

    python tests/lab/power_cut.py --lab DIR --pc pc1 -- ansible-playbook -i DIR/inventory.yml ... (as root)

Runs the given migration command, watches the PC's store journal over SSH, and as
soon as image_deploy records that it is writing and has made at least one
checkpoint durable (or has been writing for --patience seconds), kills the PC's
QEMU: no clean shutdown, no cache flush beyond what the guest already made
durable. Then it waits a minute for the migration command to give up (stopping it after that), starts the PC again
from its disk and checks that it came back into the maintenance environment (the
store's GRUB). Prints a JSON summary; the caller reruns the playbook to finish.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.lab import machines  # noqa: E402

JOURNAL = "/run/inplace/store/inplace/journal.json"


def shared_ssh_command(lab, name, control_directory, *args, options=()):
    command = lab.ssh_command(name, *args)
    command[1:1] = ["-o", "ControlMaster=auto", "-o", "ControlPath=%s/%%C" % control_directory,
                    "-o", "ControlPersist=30", "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3"]
    command[1:1] = list(options)
    return command


def deploy_record(lab, name, control_directory, errors):
    """image_deploy's journal record on the PC, or None while there is none to read.

    Why a poll found nothing is appended to ``errors``, for the message when no cut happens.
    """
    # One SSH connection kept open for all the polls, so each costs milliseconds, not a handshake.
    # Its socket lives in a short directory: ssh refuses a control path near the 108-byte limit.
    command = shared_ssh_command(lab, name, control_directory, "sudo", "-n", "cat", JOURNAL)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        errors.append("ssh timed out")
        return None  # QEMU's user networking accepts the connection while the guest reboots, then says nothing
    if proc.returncode != 0:
        errors.append(proc.stderr.strip() or "ssh exit code %d" % proc.returncode)
        return None
    try:
        return json.loads(proc.stdout)["records"].get("image_deploy")
    except ValueError:
        return None  # caught between the write of a new journal and its rename


def log_tail(path, lines=60):
    with open(path, "rb") as log:
        return b"".join(log.readlines()[-lines:]).decode("utf-8", "replace")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", required=True)
    parser.add_argument("--pc", default="pc1")
    parser.add_argument("--patience", type=float, default=60, help="cut after this long writing, checkpoint or not")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--log", help="where the migration command's output goes (default: <lab>/power-cut.log)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    lab = machines.Lab(args.lab)
    log_path = args.log or os.path.join(lab.directory, "power-cut.log")
    with open(log_path, "ab") as log:
        migration = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    writing_since = None
    record = last_record = None
    errors = []
    control_directory = tempfile.mkdtemp(prefix="cut-")
    try:
        while True:
            if migration.poll() is not None:
                raise SystemExit("the migration ended (exit code %d) before the image write was cut; last journal "
                                 "record seen: %s; last failed polls: %s; the end of its output:\n%s" % (
                                     migration.returncode, json.dumps(last_record), errors[-3:], log_tail(log_path)))
            if time.monotonic() - started > args.timeout:
                raise SystemExit("no image write seen within %d s" % args.timeout)
            record = deploy_record(lab, args.pc, control_directory, errors)
            last_record = record or last_record
            if record and record.get("state") == "writing":
                writing_since = writing_since or time.monotonic()
                if record.get("offset") or time.monotonic() - writing_since > args.patience:
                    break
            time.sleep(0.2)
        lab.power_cut(args.pc)
        cut_at = time.monotonic() - started
        try:
            # await_step asks a lost PC again until the step's own timeout (hours), so the controller does not
            # give up soon by itself: as an operator would, stop it once the PC is dark, then rerun.
            migration.wait(timeout=60)
        except subprocess.TimeoutExpired:
            migration.kill()
            migration.wait()
        seconds = lab.start([args.pc])
        proc = subprocess.run(lab.ssh_command(args.pc, "test", "-e", "/etc/inplace-maintenance"), check=False)
        summary = {"cut_after_seconds": round(cut_at, 1), "journal_at_cut": record, "migration_log": log_path,
                   "migration_exit_code": migration.returncode, "seconds_to_ssh_after_cut": seconds,
                   "came_back_into_maintenance": proc.returncode == 0}
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0 if summary["came_back_into_maintenance"] else 1
    finally:
        subprocess.run(shared_ssh_command(lab, args.pc, control_directory, "true", options=("-O", "exit")),
                       capture_output=True, check=False, timeout=20)
        shutil.rmtree(control_directory, ignore_errors=True)
        if migration.poll() is None:
            migration.kill()
            migration.wait()


if __name__ == "__main__":
    sys.exit(main())
