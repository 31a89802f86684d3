"""The fault matrix in VMs: cut the power (or the controller) at one point of a migration, rerun, check.

    ./dev faults                 every point not measured yet
    ./dev faults --point 7       one point, by number or name (repeatable)
    ./dev faults --list          the points and how each is detected
    ./dev faults --table         the measured table (markdown)
    ./dev faults --again ...     measure again points already in the results

For each point one lab PC (tests/lab, msdos layout) starts from a disk whose profiles were
listed before (tests/support/trees.py: bytes, owners, modes, mtimes, ACLs, xattrs, links).
The playbook runs against it until the guest reaches the point, then QEMU is killed
(SIGKILL; its disk uses QEMU's default write-back cache, never cache=unsafe) or, for the
controller points, ansible-playbook and its SSH connections are. The PC is started again
(or left running), the playbook is run again, and the point passes when the PC ends
migrated (Debian 13, the completion record), every profile file is as listed, the image
write started from offset 0 once (image_deploy's journal ``write_starts``, read from the
guest while the runs go on, since cleanup wipes the journal), and the PC boots unattended
into the new system twice more.

Points after the store exists start from a disk snapshot taken once at the start of the
capture phase (a qcow2 overlay, cached by the inputs: base disk, image, collection
source), so they skip preflight, the maintenance reboot and the shrink. Results are
appended as JSON lines to ``$INPLACE_CACHE/faults/results.jsonl``; logs of each point go
to ``$INPLACE_CACHE/faults/logs/``. One VM at a time. Run as root.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from tests.lab import cache, images, machines, profiles  # noqa: E402
from tests.lab.lab import served_images  # noqa: E402
from tests.lab.power_cut import log_tail, shared_ssh_command  # noqa: E402

PC = "pc1"
IMAGE = "debian13.raw.zst"
PLAYBOOK = os.path.join(REPO, "playbooks", "inplace_migrate.yml")
TREES = os.path.join(REPO, "tests", "support", "trees.py")
TREE_EXCLUDES = (".cache", ".local/share/Trash", ".thumbnails")
SNAPSHOT_BANNER = "Run the phase's role, inplace.migration.capture]"
RUN_TIMEOUT = 3600
REBOOT_TIMEOUT = 600

# Run on the guest at every poll: its processes, where it is, and every store journal it has mounted.
PROBE = r"""
import glob, json, os
procs = []
for d in glob.glob("/proc/[0-9]*"):
    try:
        with open(d + "/cmdline", "rb") as f:
            procs.append(f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip())
    except OSError:
        pass
release = open("/etc/os-release").read()
journals = {}
with open("/proc/self/mounts") as f:
    for line in f:
        target = line.split()[1]
        path = target + "/inplace/journal.json"
        if os.path.isfile(path):
            try:
                journals[target] = json.load(open(path))
            except ValueError:
                pass
print(json.dumps({"procs": procs, "maintenance": os.path.exists("/etc/inplace-maintenance"),
                  "version": [l.split("=", 1)[1].strip().strip('"') for l in release.splitlines()
                              if l.startswith("VERSION_ID=")][:1],
                  "completed": os.path.exists("/etc/inplace-migration/complete.json"),
                  "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip(), "journals": journals}))
"""


def cache_dir():
    return os.path.join(os.path.dirname(cache.root()), "faults")


# -- what the guest shows


class Observation:
    """One poll of the guest (None fields when SSH did not answer) and the serial log so far."""

    def __init__(self, probe, serial, controller_log):
        self.probe = probe
        self.serial = serial
        self.controller_log = controller_log

    @property
    def up(self):
        return self.probe is not None

    def running(self, word):
        """Whether a tool of that name runs, or (for ``AnsiballZ_<module>``) a module's process."""
        if not self.up:
            return False
        if word.startswith("AnsiballZ"):
            return any(word in proc for proc in self.probe["procs"])
        return any(proc and os.path.basename(proc.split()[0]) == word for proc in self.probe["procs"])

    @property
    def env(self):
        if not self.up:
            return None
        if self.probe["maintenance"]:
            return "maintenance"
        return "new" if self.probe["version"] == ["13"] else "old"

    def record(self, key):
        for journal in (self.probe or {}).get("journals", {}).values():
            found = journal.get("records", {}).get(key)
            if found:
                return found
        return None


def serial_after(text, *markers):
    """Whether ``markers`` occur in ``text`` in this order."""
    position = 0
    for marker in markers:
        position = text.find(marker, position)
        if position < 0:
            return False
        position += len(marker)
    return True


# -- the points: (name, how the cut is made, snapshot to start from, trigger, how it is detected)
# A trigger takes the observation and a dict it may keep notes in; it returns True to cut now.


def seen_then_gone(word, still):
    def trigger(obs, notes):
        if obs.running(word):
            notes["seen"] = True
            return False
        return bool(notes.get("seen")) and obs.running(still)
    return trigger


def running_for(word, seconds, env=None):
    def trigger(obs, notes):
        if obs.running(word) and (env is None or obs.env == env):
            notes.setdefault("since", time.monotonic())
            return time.monotonic() - notes["since"] >= seconds
        return False
    return trigger


def deploy_state(state, offset=False):
    def trigger(obs, _notes):
        record = obs.record("image_deploy") or {}
        return record.get("state") == state and (not offset or bool(record.get("offset")))
    return trigger


def new_grub_booting(obs, _notes):
    # GRUB 2.12 is the new system's; its "Booting" line comes before the kernel and the hook.
    return serial_after(obs.serial, "GNU GRUB  version 2.12", "Booting `Debian GNU/Linux'")


def restore_started(obs, notes):
    if "inplace-firstboot: restoring profiles" in obs.serial:
        notes.setdefault("since", time.monotonic())
        return time.monotonic() - notes["since"] >= 1.0
    return False


# The shrink's tools run for a second or two on the lab PC's lightly used root under TCG, about one SSH poll: a
# watcher on the guest itself follows them (/proc every 20 ms) and, at the point, freezes the process named
# (SIGSTOP) or only says so, on the serial port; the harness cuts the power (or the controller) on that line.
# A frozen tool's writes so far may still be flushing, as at any power cut.
TRIPWIRE_MARK = "inplace-faults: tripwire"
TRIPWIRE = r"""
import json, os, signal, sys, time
steps, action, delay = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3])
target = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
def pids(match):
    name, without, anywhere = match
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if int(entry) == os.getpid() or any(b"inplace-tripwire" in word for word in argv):
            continue  # the watcher itself, and the shell that started it, name what they look for
        if anywhere:
            hit = any(name.encode() in word for word in argv)
        else:
            hit = os.path.basename(argv[0]).decode("utf-8", "replace") == name
        if hit and not (without and without.encode() in argv):
            found.append(int(entry))
    return found
def say(text):
    with open("/dev/ttyS0", "w") as port:
        port.write("\n%s: %s\n" % (os.environ["MARK"], text))
for event, *match in steps:
    while bool(pids(match)) != (event == "start"):
        time.sleep(0.02)
time.sleep(delay)
if action == "seen":
    say("%s seen" % os.environ["LABEL"])
else:
    stopped = []
    for pid in pids(target):
        try:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        except ProcessLookupError:
            pass
    say("%s %s" % (os.environ["LABEL"], "stopped" if stopped else "ended before it could be stopped"))
"""


class Tripwire:
    """A point detected on the guest: armed over SSH once the guest is in ``env``, seen in the serial log.

    ``steps`` are ``(event, name, without, anywhere)``: wait until a process called ``name`` (the basename of its
    argv[0], or with ``anywhere`` any word of its command line containing ``name``) without the argument
    ``without`` runs (``start``) or no longer runs (``end``), each in turn. Then, ``delay`` seconds later, freeze
    the processes ``stop`` matches (the same form), or with ``stop`` None only say the point is there.
    """

    # The serial log is read this often: the mark comes within 20 ms of the point.
    poll_interval = 0.05

    def __init__(self, label, steps, stop=None, delay=0.0, env="maintenance"):
        self.label, self.steps, self.stop, self.delay, self.env = label, steps, stop, delay, env

    def arm(self, harness, probe, armed):
        """Start the watcher on the guest once per boot (``armed`` holds the boot ids) in the environment named."""
        if Observation(probe, "", "").env == self.env and probe["boot_id"] not in armed:
            harness.ssh(*self.arm_command(), timeout=60, check=False)
            armed.add(probe["boot_id"])

    def arm_command(self):
        script = base64.b64encode(TRIPWIRE.encode()).decode()
        arguments = [json.dumps([list(step) for step in self.steps]), "stop" if self.stop else "seen",
                     str(self.delay)] + ([json.dumps(list(self.stop))] if self.stop else [])
        return ["sudo", "-n", "sh", "-c", shlex.quote(
            "echo %s | base64 -d > /run/inplace-tripwire.py && MARK=%s LABEL=%s nohup python3 "
            "/run/inplace-tripwire.py %s </dev/null >/dev/null 2>&1 &" % (
                script, shlex.quote(TRIPWIRE_MARK), shlex.quote(self.label),
                " ".join(shlex.quote(argument) for argument in arguments)))]

    def __call__(self, obs, _notes):
        # "... ended before it could be stopped" never cuts: the run goes on and the point is not reached.
        return "%s: %s %s" % (TRIPWIRE_MARK, self.label, "stopped" if self.stop else "seen") in obs.serial


SHRINK_CHECK = ("e2fsck", "-n", False)      # partition_space's e2fsck -f -p before the shrink
SHRINK = ("resize2fs", "-P", False)          # the shrink itself, not the query of the minimum
AFTER_SHRINK_CHECK = ("e2fsck", "-p", False)  # e2fsck -f -n of the shrunk filesystem, before the table write
PARTITION_SPACE = ("AnsiballZ_partition_space", None, True)


def in_new(trigger):
    def wrapped(obs, notes):
        return obs.env == "new" and trigger(obs, notes)
    return wrapped


POINTS = [
    ("e2fsck", "power", "old", Tripwire("e2fsck", [("start",) + SHRINK_CHECK], stop=SHRINK_CHECK, delay=0.15),
     "guest watcher: partition_space's e2fsck -f -p in the maintenance environment, frozen 0.15 s after it "
     "started, then the power cut"),
    ("resize2fs", "power", "old", Tripwire("resize2fs", [("start",) + SHRINK], stop=SHRINK, delay=0.2),
     "guest watcher: the shrink's resize2fs in the maintenance environment, frozen 0.2 s after it started, then "
     "the power cut"),
    ("partition table write", "power", "old",
     Tripwire("partition_space", [("start",) + SHRINK, ("end",) + SHRINK, ("start",) + AFTER_SHRINK_CHECK,
                                  ("end",) + AFTER_SHRINK_CHECK], stop=PARTITION_SPACE),
     "guest watcher: once resize2fs and the check of the shrunk filesystem have ended, partition_space (whose "
     "next step is the table write, by libparted in its own process) is frozen, then the power cut: the cut "
     "lands on or just before the write"),
    ("boot loader onto the store", "power", "old",
     lambda o, n: o.env == "maintenance" and o.record("image_deploy") is None and o.running("grub-install"),
     "ssh poll: grub-install runs in the maintenance environment before any image_deploy record (store phase)"),
    ("capture", "power", "capture", running_for("AnsiballZ_profile_capture", 8),
     "ssh poll: profile_capture has run for 8 s"),
    ("image staging", "power", "capture", running_for("AnsiballZ_get_url", 3),
     "ssh poll: get_url (staging the image on the store) has run for 3 s"),
    ("image write", "power", "capture", deploy_state("writing", offset=True),
     "ssh poll: image_deploy's journal record says writing with a durable checkpoint"),
    ("fix-ups", "power", "capture", deploy_state("fixups"),
     "ssh poll: image_deploy's journal record says fixups"),
    ("new system's boot loader", "power", "capture",
     lambda o, n: deploy_state("bootloader")(o, n) and o.running("grub-install"),
     "ssh poll: grub-install (chrooted into the new system) runs while image_deploy's journal record says bootloader"),
    ("first boot before the hook", "power", "capture", new_grub_booting,
     "serial log: the new system's GRUB (2.12) says it is booting Debian, before the kernel and the hook"),
    ("restore mid-user", "power", "capture", restore_started,
     "serial log: 1 s after the first-boot hook logs 'restoring profiles' (the restore takes a few seconds)"),
    ("cleanup after the wipe", "power", "capture", in_new(seen_then_gone("blkdiscard", "AnsiballZ")),
     "ssh poll: in the new system, blkdiscard (the store's wipe) has ended and the next step runs"),
    ("cleanup during the regrow", "power", "capture",
     in_new(lambda o, n: o.running("resize2fs") or running_for("AnsiballZ_partition_space", 2)(o, n)),
     "ssh poll: in the new system, resize2fs runs or partition_space (store deleted, root grown) has run 2 s"),
    ("controller lost during the shrink", "controller", "old", Tripwire("resize2fs", [("start",) + SHRINK]),
     "guest watcher: the shrink's resize2fs has started; ansible-playbook and its SSH connections are killed, the PC "
     "keeps running"),
    ("controller lost during the image write", "controller", "capture", deploy_state("writing", offset=True),
     "ssh poll: image_deploy writing with a checkpoint; ansible-playbook and its SSH connections are killed"),
]


def find_point(key):
    if key.isdigit() and 1 <= int(key) <= len(POINTS):
        return int(key)
    for number, point in enumerate(POINTS, 1):
        if point[0] == key:
            return number
    raise SystemExit("no point %r; ./dev faults --list shows them" % key)


# -- the harness


class Matrix:
    def __init__(self, directory, log):
        self.directory = directory
        self.lab_dir = os.path.join(directory, "lab")
        self.snapshots = os.path.join(directory, "snapshots")
        self.logs = os.path.join(directory, "logs")
        self.results = os.path.join(directory, "results.jsonl")
        for path in (self.lab_dir, self.snapshots, self.logs):
            os.makedirs(path, exist_ok=True)
        self.log = log
        self.lab = machines.Lab(self.lab_dir)
        offered = served_images(images.new_image())
        self.image = offered[IMAGE]
        self.control = tempfile.mkdtemp(prefix="faults-")
        self.write_starts = {}
        self.serial_offset = 0

    # lab plumbing

    def prepare_lab(self, disk_base):
        """The one lab PC (host keys kept across points, so snapshots keep matching them) on a new overlay."""
        port = self.lab.serve(os.path.dirname(self.image["local"]))
        if PC not in self.lab.pcs:
            self.lab.add(1, ["msdos"], port)
        self.stop_pc()
        pc = self.lab.pcs[PC]
        pc["guestfwd_port"] = port
        if os.path.exists(pc["overlay"]):
            os.unlink(pc["overlay"])
        images.run("qemu-img", "create", "-q", "-f", "qcow2", "-b", disk_base, "-F", "qcow2", pc["overlay"])
        self.lab.save()

    def stop_pc(self):
        self.lab.power_cut(PC)

    def ssh(self, *command, timeout=120, check=True):
        # stdin from /dev/null: ssh would make a shared stdin non-blocking, which ansible-playbook refuses.
        proc = subprocess.run(shared_ssh_command(self.lab, PC, self.control, *command), capture_output=True,
                              stdin=subprocess.DEVNULL, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError("%s on %s: %s" % (" ".join(command), PC, proc.stderr.strip()))
        return proc.stdout

    def probe(self):
        try:
            out = self.ssh("sudo", "-n", "python3", "-c", "'%s'" % PROBE.replace("'", "'\\''"), timeout=20,
                           check=False)
            probe = json.loads(out)
        except (subprocess.TimeoutExpired, ValueError):
            return None
        for journal in probe["journals"].values():
            record = journal.get("records", {}).get("image_deploy") or {}
            if record.get("started"):
                self.write_starts[record["started"]] = record.get("write_starts", [])
        return probe

    def serial(self):
        """The serial log since mark_serial (QEMU truncates it when the PC starts)."""
        path = os.path.join(self.lab_dir, PC + ".serial.log")
        try:
            if os.path.getsize(path) < self.serial_offset:
                self.serial_offset = 0
            with open(path, "rb") as handle:
                handle.seek(self.serial_offset)
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def mark_serial(self):
        path = os.path.join(self.lab_dir, PC + ".serial.log")
        self.serial_offset = os.path.getsize(path) if os.path.exists(path) else 0

    # the listing

    def listing(self, base):
        """The profiles as listed on a PC booted from ``base``, taken once per base disk."""
        path = os.path.join(self.snapshots, "listing-%s.json" % hashlib.sha256(base.encode()).hexdigest()[:16])
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        return None

    def take_listing(self):
        subprocess.run(["scp", "-P", str(self.lab.pcs[PC]["port"])] + self.lab.ssh_options() +
                       [TREES, "%s@127.0.0.1:/tmp/inplace-trees.py" % images.ADMIN["name"]], check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        out = self.ssh("sudo", "-n", "python3", "/tmp/inplace-trees.py", "/home", *TREE_EXCLUDES, timeout=600)
        self.ssh("rm", "-f", "/tmp/inplace-trees.py")
        return json.loads(out)

    # the playbook

    def playbook(self, log_path):
        variables = {
            "inplace_image_src": self.image["url"], "inplace_image_checksum": self.image["checksum"],
            "inplace_image_local": self.image["local"], "inplace_report_dir": os.path.join(self.directory, "reports"),
            # Durable checkpoints often, so a cut in the write resumes; reboots that fail fail soon.
            "inplace_deploy_checkpoint": "16MiB", "inplace_reboot_timeout": REBOOT_TIMEOUT,
        }
        extra = os.path.join(self.directory, "migration.json")
        with open(extra, "w", encoding="utf-8") as handle:
            json.dump(variables, handle)
        control = tempfile.mkdtemp(prefix="cp-", dir=self.control)
        environment = dict(os.environ, PYTHONUNBUFFERED="1", ANSIBLE_SSH_CONTROL_PATH_DIR=control,
                           ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(["ansible-playbook", "-i", self.lab.inventory, "-e", "@" + extra, PLAYBOOK],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                    start_new_session=True)
        proc.control = control
        return proc

    def kill_controller(self, proc):
        """ansible-playbook, its workers and its SSH connections (the persistent masters run on their own)."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            if cmdline.startswith(b"ssh") and os.fsencode(proc.control) in cmdline:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def watch(self, proc, log_path, trigger, timeout=RUN_TIMEOUT):
        """Check ``trigger`` until it holds (True) or the run ends (False).

        The guest is probed over SSH in a thread of its own: a probe can hang for its whole
        timeout while the guest reboots, and the serial log must be read meanwhile.
        """
        notes = {}
        latest = {"probe": None}
        stop = threading.Event()

        # A trigger may set itself up on the guest (an ``arm`` hook, once per boot) and ask to be checked more often.
        armed = set()
        arm = getattr(trigger, "arm", None)

        def poll():
            while not stop.is_set():
                probe = latest["probe"] = self.probe()
                if arm and probe:
                    arm(self, probe, armed)
                stop.wait(0.3)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ended = proc.poll() is not None
                with open(log_path, "rb") as handle:
                    controller_log = handle.read().decode("utf-8", "replace")
                if trigger(Observation(latest["probe"], self.serial(), controller_log), notes):
                    return True
                if ended:
                    return False
                time.sleep(getattr(trigger, "poll_interval", 0.2))
        finally:
            stop.set()
            poller.join(timeout=30)
        raise RuntimeError("the point was not reached within %d s" % timeout)

    def run_to_end(self, log_path, timeout=RUN_TIMEOUT):
        proc = self.playbook(log_path)
        self.watch(proc, log_path, lambda obs, notes: False, timeout)
        return proc.returncode

    # snapshots

    def inputs_key(self):
        digest = hashlib.sha256()
        for top in ("plugins", "roles", "playbooks"):
            for folder, dirs, files in sorted(os.walk(os.path.join(REPO, top))):
                dirs.sort()
                for name in sorted(files):
                    path = os.path.join(folder, name)
                    digest.update(os.path.relpath(path, REPO).encode())
                    with open(path, "rb") as handle:
                        digest.update(handle.read())
        digest.update(self.image["checksum"].encode())
        digest.update(self.old_base().encode())
        with open(os.path.join(self.lab.pcs[PC]["host_keys"], "ssh_host_ed25519_key.pub"), "rb") as handle:
            digest.update(handle.read())
        return digest.hexdigest()[:16]

    def old_base(self):
        return os.path.join(images.old_pc("msdos"), "disk.qcow2")

    def snapshot(self, name):
        """The disk to start from: the old PC's base, or the disk at the start of the capture phase (made once)."""
        base = self.old_base()
        if name == "old":
            return base
        path = os.path.join(self.snapshots, "%s-%s.qcow2" % (name, self.inputs_key()))
        if os.path.exists(path):
            return path
        self.log("making the snapshot at the start of the capture phase (once for these inputs)")
        self.prepare_lab(base)
        self.lab.start([PC], timeout=REBOOT_TIMEOUT)
        self.mark_serial()
        log_path = os.path.join(self.logs, "snapshot-%s.log" % name)
        proc = self.playbook(log_path)
        if not self.watch(proc, log_path, lambda obs, notes: SNAPSHOT_BANNER in obs.controller_log):
            raise RuntimeError("the playbook ended before the capture phase; see %s" % log_path)
        self.kill_controller(proc)
        # The guest is idle between phases: flush, then power off hard (maintenance is GRUB's default now).
        self.ssh("sudo", "-n", "sync")
        self.stop_pc()
        shutil.move(self.lab.pcs[PC]["overlay"], path + ".tmp")
        os.rename(path + ".tmp", path)
        return path

    # one point

    def measure(self, number):
        name, how, start, trigger, _detection = POINTS[number - 1]
        self.write_starts = {}
        log_path = os.path.join(self.logs, "point-%02d.log" % number)
        if os.path.exists(log_path):
            os.unlink(log_path)
        result = {"point": number, "name": name, "cut": how, "started_from": start, "log": log_path,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        base = self.old_base()
        listing = self.listing(base)
        if listing is None:
            self.prepare_lab(base)
            self.lab.start([PC], timeout=REBOOT_TIMEOUT)
            listing = self.take_listing()
            path = os.path.join(self.snapshots, "listing-%s.json" % hashlib.sha256(base.encode()).hexdigest()[:16])
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(listing, handle)
        disk = self.snapshot(start)
        self.prepare_lab(disk)
        self.lab.start([PC], timeout=REBOOT_TIMEOUT)
        self.mark_serial()
        self.log("point %d (%s): running the playbook until the point" % (number, name))
        proc = self.playbook(log_path)
        reached = self.watch(proc, log_path, trigger)
        if not reached:
            result.update(outcome="not reached", detail="the run ended (exit code %s) before the point" %
                          proc.returncode, log_tail=log_tail(log_path, 20))
            return result
        cut_at = time.monotonic()
        if how == "power":
            self.stop_pc()
            self.kill_controller(proc)
            self.log("point %d: power cut; starting the PC again" % number)
            self.mark_serial()
            self.lab.start([PC], timeout=REBOOT_TIMEOUT)
        else:
            self.kill_controller(proc)
            self.log("point %d: controller killed; the PC keeps running" % number)
        reruns = 0
        probe = None
        while reruns < 2:
            reruns += 1
            with open(log_path, "ab") as handle:
                handle.write(b"\n===== rerun %d =====\n" % reruns)
            code = self.run_to_end(log_path)
            probe = self.probe()
            if probe and probe["completed"]:
                break
            self.log("point %d: rerun %d ended (exit code %s) without the PC migrated" % (number, reruns, code))
        result["seconds_to_recover"] = round(time.monotonic() - cut_at)
        result["reruns"] = reruns
        result["write_starts"] = self.write_starts
        problems = []
        if not (probe and probe["completed"] and probe["version"] == ["13"] and not probe["maintenance"]):
            problems.append("not migrated: %s" % (
                {k: probe[k] for k in ("completed", "version", "maintenance")} if probe else "no SSH"))
        elif reruns > 1:
            problems.append("migrated only after a second rerun")
        starts_from_zero = sum(starts.count(0) for starts in self.write_starts.values())
        if starts_from_zero != 1:
            problems.append("image written from offset 0 %d times: %s" % (starts_from_zero, self.write_starts))
        if probe and probe["completed"]:
            after = self.take_listing()
            lost = compare(listing, after)
            if lost:
                problems.append("profiles differ: " + "; ".join(lost[:10]))
            for boot in (1, 2):
                seen = self.reboot()
                if not (seen and seen["version"] == ["13"] and not seen["maintenance"] and seen["completed"]):
                    problems.append("boot %d after the migration: %s" % (boot, seen and {
                        k: seen[k] for k in ("version", "maintenance", "completed")}))
                    break
        result["outcome"] = "pass" if not problems else "FAIL"
        if problems:
            result["problems"] = problems
            result["log_tail"] = log_tail(log_path, 30)
        return result

    def reboot(self):
        """Reboot over SSH and wait for the next boot to answer; its probe, or None."""
        before = self.probe()
        if before is None:
            return None
        self.ssh("sudo", "-n", "systemd-run", "--on-active=2", "/bin/systemctl", "reboot", check=False)
        deadline = time.monotonic() + REBOOT_TIMEOUT
        while time.monotonic() < deadline:
            time.sleep(5)
            seen = self.probe()
            if seen and seen["boot_id"] != before["boot_id"]:
                return seen
        return None

    def close(self):
        self.stop_pc()
        if self.lab.http and machines._alive(self.lab.http["pid"]):
            os.kill(self.lab.http["pid"], signal.SIGTERM)
            machines.wait_gone(self.lab.http["pid"], 10)
        self.lab.http = None
        self.lab.save()
        subprocess.run(shared_ssh_command(self.lab, PC, self.control, "true", options=("-O", "exit")),
                       capture_output=True, check=False, timeout=20)
        shutil.rmtree(self.control, ignore_errors=True)


def compare(before, after):
    """What differs between two listings of the lab users' homes, one line per difference.

    The admin's home is left out: it is not a profile (the new image brings its own).
    """
    found = []
    for user in sorted(user["name"] for user in profiles.USERS):
        old, new = before.get(user, {}), after.get(user, {})
        for path in sorted(set(old) - set(new)):
            found.append("%s: %r missing" % (user, path))
        for path in sorted(set(new) - set(old)):
            found.append("%s: %r added" % (user, path))
        for path in sorted(set(old) & set(new)):
            for key in sorted(set(old[path]) | set(new[path])):
                if old[path].get(key) != new[path].get(key):
                    found.append("%s: %r %s %r -> %r" % (user, path, key, old[path].get(key), new[path].get(key)))
    return found


# -- results


def read_results(path):
    results = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    entry = json.loads(line)
                    results[entry["point"]] = entry
    return results


def table(results):
    lines = ["| # | point | cut | outcome | time to recover | notes |", "|---|---|---|---|---|---|"]
    for number, (name, how, _start, _trigger, _detection) in enumerate(POINTS, 1):
        entry = results.get(number)
        if entry is None:
            lines.append("| %d | %s | %s | not run yet | | |" % (number, name, how))
            continue
        seconds = entry.get("seconds_to_recover")
        notes = "; ".join(entry.get("problems", [])) or entry.get("detail", "")
        if entry.get("write_starts"):
            notes = (notes + "; " if notes else "") + "write starts %s" % sorted(
                sum(entry["write_starts"].values(), []))
        lines.append("| %d | %s | %s | %s | %s | %s |" % (
            number, name, how, entry["outcome"], "%d min %02d s" % divmod(seconds, 60) if seconds else "",
            notes.replace("|", "\\|").replace("\n", " ")))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--point", action="append", default=[], help="a point's number or name (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the points and how each is detected")
    parser.add_argument("--table", action="store_true", help="print the measured table (markdown)")
    parser.add_argument("--again", action="store_true", help="measure points already in the results again")
    parser.add_argument("--directory", default=cache_dir(), help="results, logs, snapshots and the lab")
    args = parser.parse_args(argv)
    results_path = os.path.join(args.directory, "results.jsonl")
    if args.list:
        for number, (name, how, start, _trigger, detection) in enumerate(POINTS, 1):
            print("%2d  %-40s %-10s from %-8s %s" % (number, name, how, start, detection))
        return 0
    if args.table:
        print(table(read_results(results_path)))
        return 0
    numbers = [find_point(key) for key in args.point] or list(range(1, len(POINTS) + 1))
    done = read_results(results_path)
    # Only a pass or a failure is a measurement; a point not reached or a harness error is tried again.
    todo = [n for n in numbers if args.again or done.get(n, {}).get("outcome") not in ("pass", "FAIL")]

    def log(message):
        print("faults: %s" % message, file=sys.stderr, flush=True)
    if not todo:
        log("every point asked for is measured; --again measures it anew, --table shows the results")
        return 0
    matrix = Matrix(args.directory, log)
    failed = 0
    try:
        for number in todo:
            started = time.monotonic()
            try:
                result = matrix.measure(number)
            except (RuntimeError, machines.LabError, subprocess.SubprocessError) as error:
                result = {"point": number, "name": POINTS[number - 1][0], "outcome": "harness error",
                          "detail": str(error)}
            result["seconds_total"] = round(time.monotonic() - started)
            failed += result["outcome"] != "pass"
            with open(results_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(result, sort_keys=True) + "\n")
            log("point %d (%s): %s" % (number, result["name"], result["outcome"]))
    finally:
        matrix.close()
    print(table(read_results(results_path)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
