"""Lab PCs as QEMU processes, and the Ansible inventory that reaches them.

Each PC runs under TCG (KVM is not usable here) with a copy-on-write qcow2 overlay
on a cached base disk, user-mode networking restricted to the guest itself
(``restrict=on``): SSH comes in through a forwarded 127.0.0.1 port, and an optional
``guestfwd`` rule lets the guest reach one HTTP service on the controller. No
other traffic leaves the guest. A lab directory holds the state (``state.json``),
the overlays, serial logs, QMP sockets, ``known_hosts`` and ``inventory.yml``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from tests.lab import cache, images

MEMORY_MIB = 1536
CPUS = 2
GUEST_HTTP = "10.0.2.100:80"
STATE = "state.json"
INVENTORY = "inventory.yml"
KNOWN_HOSTS = "known_hosts"
GROUP = "lab-pcs"
HOST_KEY_TYPES = ("rsa", "ecdsa", "ed25519")
UNIX_PATH_MAX = 107


class LabError(Exception):
    """Something the person running the lab has to act on; the message says what."""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def netdev(port, guestfwd_port=None):
    spec = "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22" % port
    if guestfwd_port:
        # A chardev target ("-tcp:...") carries one connection for the VM's whole life; a
        # command is started for every connection the guest opens.
        spec += ",guestfwd=tcp:%s-cmd:socat - TCP:127.0.0.1:%d" % (GUEST_HTTP, guestfwd_port)
    return spec


def qemu_command(name, directory, port, disk=None, kernel=None, initrd=None, append=None, memory=MEMORY_MIB,
                 guestfwd_port=None, hostname=None, host_keys=None, extra_disks=()):
    """The QEMU command line of one lab machine; its files are ``<directory>/<name>.*``."""
    qmp = os.path.join(directory, name + ".qmp")
    if len(qmp) > UNIX_PATH_MAX:
        raise LabError("the lab directory path is too long for a QMP socket (%s); use a shorter one" % qmp)
    command = [
        "qemu-system-x86_64", "-name", name, "-accel", "tcg", "-smp", str(CPUS), "-m", str(memory),
        "-display", "none", "-serial", "file:" + os.path.join(directory, name + ".serial.log"),
        "-qmp", "unix:%s,server=on,wait=off" % qmp,
        "-pidfile", os.path.join(directory, name + ".pid"), "-daemonize",
        "-netdev", netdev(port, guestfwd_port), "-device", "virtio-net-pci,netdev=net0",
    ]
    for index, path in enumerate(([disk] if disk else []) + list(extra_disks)):
        image_format = "qcow2" if path.endswith(".qcow2") else "raw"
        command += ["-drive", "file=%s,if=virtio,format=%s,index=%d" % (path, image_format, index)]
    if hostname:
        command += ["-fw_cfg", "name=opt/inplace/hostname,string=%s" % hostname]
    for key_type in HOST_KEY_TYPES if host_keys else ():
        command += ["-fw_cfg", "name=opt/inplace/ssh_host_%s_key,file=%s" % (
            key_type, os.path.join(host_keys, "ssh_host_%s_key" % key_type))]
    if kernel:
        command += ["-kernel", kernel, "-initrd", initrd, "-append", append or ""]
    return command


def read_pid(directory, name):
    try:
        with open(os.path.join(directory, name + ".pid"), encoding="utf-8") as handle:
            pid = int(handle.read().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            cmdline = handle.read().split(b"\0")
    except FileNotFoundError:
        return None
    # Only a QEMU started for this machine of this lab, never a process that reused the number.
    marker = os.fsencode("file:" + os.path.join(directory, name + ".serial.log"))
    return pid if marker in cmdline else None


def launch(command, name, directory, attempts=3):
    """Start QEMU (it daemonizes once set up); a port taken meanwhile is retried with a new one."""
    for _attempt in range(attempts):
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        if proc.returncode == 0:
            pid = read_pid(directory, name)
            if pid is None:
                raise LabError("QEMU for %s started but left no pid file in %s" % (name, directory))
            return pid
        if "hostfwd" not in proc.stdout and "Could not set up host forwarding" not in proc.stdout:
            break
    raise LabError("QEMU for %s did not start: %s" % (name, proc.stdout.strip()))


def qmp(directory, name, command):
    """Send one QMP command (e.g. system_powerdown) to a running machine."""
    path = os.path.join(directory, name + ".qmp")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        reader = sock.makefile("r")
        reader.readline()  # greeting
        for message in ({"execute": "qmp_capabilities"}, {"execute": command}):
            sock.sendall(json.dumps(message).encode() + b"\n")
            while True:
                reply = json.loads(reader.readline())
                if "return" in reply or "error" in reply:
                    break
        return reply


def logged_in(ssh_command, name):
    """Whether ``ssh_command`` (running ``true``) logs in; a host key other than the recorded one is an error."""
    try:
        probe = subprocess.run(ssh_command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               check=False, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    if "IDENTIFICATION HAS CHANGED" in probe.stderr or "Host key verification failed" in probe.stderr:
        raise LabError("%s answers with another SSH host key than the lab recorded for it" % name)
    return probe.returncode == 0


def wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists("/proc/%d" % pid):
            return True
        time.sleep(0.5)
    return not os.path.exists("/proc/%d" % pid)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class Lab:
    """A set of lab PCs described by ``<directory>/state.json``."""

    def __init__(self, directory):
        self.directory = os.path.abspath(directory)
        self.state_file = os.path.join(self.directory, STATE)
        self.known_hosts = os.path.join(self.directory, KNOWN_HOSTS)
        self.inventory = os.path.join(self.directory, INVENTORY)
        self.key = cache.ssh_key()
        self.pcs = {}
        self.http = None
        if os.path.exists(self.state_file):
            with open(self.state_file, encoding="utf-8") as handle:
                state = json.load(handle)
            self.pcs = state["pcs"]
            self.http = state.get("http")

    def save(self):
        os.makedirs(self.directory, exist_ok=True)
        temporary = self.state_file + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"pcs": self.pcs, "http": self.http}, handle, indent=2, sort_keys=True)
        os.rename(temporary, self.state_file)
        self.write_inventory()

    def ssh_options(self, strict=True):
        return ["-o", "StrictHostKeyChecking=%s" % ("yes" if strict else "no"),
                "-o", "UserKnownHostsFile=%s" % (self.known_hosts if strict else os.devnull),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-o", "LogLevel=ERROR", "-i", self.key]

    def ssh_command(self, name, *remote):
        """ssh argv running ``remote`` on the PC as the admin; ssh joins the words for the remote shell."""
        pc = self.pcs[name]
        return ["ssh", "-p", str(pc["port"])] + self.ssh_options() + [
            "%s@127.0.0.1" % images.ADMIN["name"], "--"] + list(remote)

    def write_inventory(self):
        """YAML (written as JSON, which is YAML) with group lab-pcs; strict host keys from the lab's file."""
        hosts = {}
        for name, pc in sorted(self.pcs.items(), key=lambda item: int(item[0][2:])):
            hosts[name] = {"ansible_host": "127.0.0.1", "ansible_port": pc["port"], "lab_disk_layout": pc["layout"]}
            if pc.get("guestfwd_port"):
                hosts[name]["lab_http_url"] = "http://%s" % GUEST_HTTP.replace(":80", "")
        inventory = {"all": {"children": {GROUP: {"hosts": hosts, "vars": {
            "ansible_user": images.ADMIN["name"],
            "ansible_ssh_private_key_file": self.key,
            # Keep-alives: a guest that reboots under QEMU's user networking never resets the
            # host side of a forwarded connection, so a dead session would otherwise hang forever.
            "ansible_ssh_common_args": " ".join([
                "-o StrictHostKeyChecking=yes", "-o UserKnownHostsFile=%s" % self.known_hosts,
                "-o IdentitiesOnly=yes", "-o ServerAliveInterval=5", "-o ServerAliveCountMax=6"]),
            "ansible_python_interpreter": "/usr/bin/python3",
        }}}}}
        with open(self.inventory, "w", encoding="utf-8") as handle:
            handle.write("# Written by tests/lab/lab.py; rewritten on every start and stop.\n")
            json.dump(inventory, handle, indent=2, sort_keys=True)
            handle.write("\n")

    def running(self, name):
        return read_pid(self.directory, name)

    def add(self, count, layouts, guestfwd_port=None):
        """Define ``count`` more PCs (pcN with the next numbers), each on an overlay of its layout's base."""
        layouts = list(layouts) or ["msdos"]
        first = max([int(name[2:]) for name in self.pcs] + [0]) + 1
        os.makedirs(self.directory, exist_ok=True)
        for index in range(count):
            name = "pc%d" % (first + index)
            layout = layouts[index % len(layouts)]
            base = os.path.join(images.old_pc(layout), "disk.qcow2")
            overlay = os.path.join(self.directory, name + ".qcow2")
            images.run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay)
            port = free_port()
            self.pcs[name] = {"layout": layout, "base": base, "overlay": overlay, "port": port,
                              "guestfwd_port": guestfwd_port, "host_keys": self.make_host_keys(name, port)}
        self.save()
        return ["pc%d" % (first + index) for index in range(count)]

    def start(self, names=None, timeout=600):
        """Start the given (default: all stopped) PCs and wait until each answers SSH; return seconds per PC."""
        names = [name for name in (names or sorted(self.pcs)) if not self.running(name)]
        started = {}
        for name in names:
            pc = self.pcs[name]
            command = qemu_command(name, self.directory, pc["port"], disk=pc["overlay"],
                                   guestfwd_port=pc.get("guestfwd_port"), hostname=name, host_keys=pc["host_keys"])
            started[name] = time.monotonic()
            launch(command, name, self.directory)
        self.save()
        return self.wait_ssh(started, timeout)

    def serve(self, directory):
        """Serve ``directory`` over HTTP on a free 127.0.0.1 port (once per lab); return the port.

        The PCs reach it through their guestfwd rule, as the controller's image server.
        """
        if self.http and _alive(self.http["pid"]):
            return self.http["port"]
        port = free_port()
        os.makedirs(self.directory, exist_ok=True)
        log = open(os.path.join(self.directory, "http.log"), "ab")  # pylint: disable=consider-using-with
        server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                                   directory, str(port)], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        self.http = {"pid": server.pid, "port": port, "directory": directory}
        self.save()
        return port

    def make_host_keys(self, name, port):
        """The PC's SSH host keys, made here and handed to its first boot: known_hosts is right from the start."""
        directory = os.path.join(self.directory, name + ".hostkeys")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        lines = []
        for key_type in HOST_KEY_TYPES:
            path = os.path.join(directory, "ssh_host_%s_key" % key_type)
            if not os.path.exists(path):
                subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "root@" + name, "-f", path],
                               check=True)
            with open(path + ".pub", encoding="utf-8") as handle:
                lines.append("[127.0.0.1]:%d %s" % (port, " ".join(handle.read().split()[:2])))
        prefix = "[127.0.0.1]:%d " % port
        kept = []
        if os.path.exists(self.known_hosts):
            with open(self.known_hosts, encoding="utf-8") as handle:
                kept = [line for line in handle.read().splitlines() if not line.startswith(prefix)]
        with open(self.known_hosts, "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in kept + lines))
        return directory

    def wait_ssh(self, started, timeout):
        """Wait until every PC in ``started`` ({name: monotonic start}) accepts the admin's SSH login."""
        waiting = dict(started)
        seconds = {}
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise LabError("no SSH login on %s within %d s; see %s" % (
                    ", ".join(sorted(waiting)), timeout,
                    ", ".join(os.path.join(self.directory, name + ".serial.log") for name in sorted(waiting))))
            for name in sorted(waiting):
                if not self.running(name):
                    raise LabError("QEMU for %s exited; see %s" % (
                        name, os.path.join(self.directory, name + ".serial.log")))
                if logged_in(self.ssh_command(name, "true"), name):
                    seconds[name] = round(time.monotonic() - waiting.pop(name), 1)
            time.sleep(1)
        return seconds

    def power_cut(self, name):
        """Kill the PC's QEMU at once, like pulling the plug; its disk overlay stays for a restart."""
        pid = self.running(name)
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10)
        return pid is not None

    def press_power_button(self, name):
        try:
            qmp(self.directory, name, "system_powerdown")
        except OSError:
            pass

    def wait_off(self, name, pid, timeout):
        """After the power button: wait, then ``poweroff`` over SSH, then kill a guest that ignores both."""
        if wait_gone(pid, timeout / 3):
            return "acpi"
        subprocess.run(self.ssh_command(name, "sudo", "-n", "systemctl", "poweroff"), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False, timeout=30)
        if wait_gone(pid, timeout / 3):
            return "poweroff"
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10)
        return "killed"

    def stop(self, timeout=90):
        """Shut every PC down (all at once), remove overlays, host keys and state; keep serial logs."""
        pids = {name: self.running(name) for name in self.pcs}
        for name in sorted(name for name, pid in pids.items() if pid):
            self.press_power_button(name)
        how = {name: self.wait_off(name, pid, timeout) if pid else "not running" for name, pid in pids.items()}
        for name, pc in self.pcs.items():
            for path in (pc["overlay"], os.path.join(self.directory, name + ".pid"),
                         os.path.join(self.directory, name + ".qmp")):
                if os.path.exists(path):
                    os.unlink(path)
            shutil.rmtree(pc["host_keys"], ignore_errors=True)
        if self.http and _alive(self.http["pid"]):
            os.kill(self.http["pid"], signal.SIGTERM)
            wait_gone(self.http["pid"], 10)
        self.http = None
        for path in (self.state_file, self.inventory, self.known_hosts):
            if os.path.exists(path):
                os.unlink(path)
        self.pcs = {}
        return how
