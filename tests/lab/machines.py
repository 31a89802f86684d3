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
        # Keep-alives: a guest that reboots under QEMU's user networking never resets the host side of a
        # forwarded connection, so a dead session (a stale ControlMaster among them) would otherwise hang
        # forever. Per host, not only for the group: Molecule's own inventory sets these arguments per host,
        # which would win over the group's and drop the keep-alives and the strict host keys.
        ssh_common_args = " ".join([
            "-o StrictHostKeyChecking=yes", "-o UserKnownHostsFile=%s" % self.known_hosts,
            "-o IdentitiesOnly=yes", "-o ServerAliveInterval=5", "-o ServerAliveCountMax=6"])
        hosts = {}
        for name, pc in sorted(self.pcs.items(), key=lambda item: int(item[0][2:])):
            hosts[name] = {"ansible_host": "127.0.0.1", "ansible_port": pc["port"], "lab_disk_layout": pc["layout"],
                           "ansible_ssh_common_args": ssh_common_args}
            if pc.get("guestfwd_port"):
                hosts[name]["lab_http_url"] = "http://%s" % GUEST_HTTP.replace(":80", "")
            if pc.get("stick"):
                # For a check from the controller that no phase wrote to the stick.
                hosts[name].update(lab_stick_image=pc["stick"], lab_stick_sha256=pc["stick_sha256"])
        inventory = {"all": {"children": {GROUP: {"hosts": hosts, "vars": {
            "ansible_user": images.ADMIN["name"],
            "ansible_ssh_private_key_file": self.key,
            "ansible_ssh_common_args": ssh_common_args,
            "ansible_python_interpreter": "/usr/bin/python3",
            # Under TCG a busy maintenance environment can answer SSH's banner late; a refused or slow
            # connection is retried, not reported as an unreachable PC.
            "ansible_ssh_retries": 3,
            "ansible_ssh_timeout": 30,
        }}}}}
        with open(self.inventory, "w", encoding="utf-8") as handle:
            handle.write("# Written by tests/lab/lab.py; rewritten on every start and stop.\n")
            json.dump(inventory, handle, indent=2, sort_keys=True)
            handle.write("\n")

    def running(self, name):
        return read_pid(self.directory, name)

    def add(self, count, layouts, guestfwd_port=None, devices=None):
        """Define ``count`` more PCs (pcN with the next numbers), each on an overlay of its layout's base.

        ``devices`` ({"bus": one of SYSTEM_BUSES, "stick": bool, "stick_place": one of STICK_PLACES,
        "stick_later": bool, "secure_boot": bool}) puts the system disk on another bus and gives each PC a stick of
        its own (``disk_devices``, ``make_stick``), plugged in at start or, with ``stick_later``, by ``plug_stick``;
        a UEFI layout's PC has Secure Boot on unless ``secure_boot`` is False.
        """
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
            if devices:
                self.pcs[name]["devices"] = dict(devices)
                if devices.get("stick"):
                    self.pcs[name].update(self.make_pc_stick(name))
        self.save()
        return ["pc%d" % (first + index) for index in range(count)]

    def start(self, names=None, timeout=600):
        """Start the given (default: all stopped) PCs and wait until each answers SSH; return seconds per PC."""
        names = [name for name in (names or sorted(self.pcs)) if not self.running(name)]
        started = {}
        for name in names:
            pc = self.pcs[name]
            devices = pc.get("devices")
            command = qemu_command(name, self.directory, pc["port"], disk=None if devices else pc["overlay"],
                                   guestfwd_port=pc.get("guestfwd_port"), hostname=name, host_keys=pc["host_keys"])
            if devices:
                command += disk_devices(pc["overlay"], devices.get("bus", "virtio"), pc.get("stick"),
                                        devices.get("stick_place", "usb"), stick_later=devices.get("stick_later", False))
            if pc["layout"] in images.ESP_PARTITIONS:
                from tests.lab import uefi  # uefi imports this module
                # A UEFI PC has Secure Boot on, as most bought in the last years do, unless its devices say off.
                command = uefi.uefi_command(command, self.directory, name, (devices or {}).get("secure_boot", True))
            started[name] = time.monotonic()
            launch(command, name, self.directory)
        self.save()
        return self.wait_ssh(started, timeout)

    def serve(self, directory):
        """Serve ``directory`` over HTTP on a free 127.0.0.1 port (once per lab); return the port.

        The PCs reach it through their guestfwd rule, as the controller's image server.
        """
        if self.http and _alive(self.http["pid"]):
            if self.http.get("directory") == directory:
                return self.http["port"]
            # A server left from an earlier run serves another image: the PCs would fetch the wrong one.
            self.stop_serving()
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

    def stop_serving(self):
        if self.http and _alive(self.http["pid"]):
            os.kill(self.http["pid"], signal.SIGTERM)
            try:
                os.waitpid(self.http["pid"], 0)  # started by this process: reaped, not left a zombie
            except ChildProcessError:
                wait_gone(self.http["pid"], 10)
        self.http = None

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

    def plug_stick(self, name):
        """Plug the PC's stick in now (a PC added with ``stick_later``): the next boot names its disks anew."""
        pc = self.pcs[name]
        return plug_stick(self.directory, name, pc["stick"], pc["devices"].get("stick_place", "usb"))

    def make_pc_stick(self, name):
        """The PC's own stick (``make_stick``), with files that are the PC's; its path and sha256 for the state."""
        files = os.path.join(self.directory, name + ".stick-files")
        os.makedirs(os.path.join(files, "photos"), exist_ok=True)
        with open(os.path.join(files, "README.txt"), "w", encoding="utf-8") as handle:
            handle.write("A USB stick left in %s; no phase of a migration may touch it.\n" % name)
        with open(os.path.join(files, "photos", "holiday.jpg"), "wb") as handle:
            handle.write(bytes(range(256)) * 4096)
        path = os.path.join(self.directory, name + ".stick.img")
        digest = make_stick(path, files)
        shutil.rmtree(files)
        return {"stick": path, "stick_sha256": digest}

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
                         os.path.join(self.directory, name + ".qmp")) + ((pc["stick"],) if pc.get("stick") else ()):
                if os.path.exists(path):
                    os.unlink(path)
            shutil.rmtree(pc["host_keys"], ignore_errors=True)
        self.stop_serving()
        for path in (self.state_file, self.inventory, self.known_hosts):
            if os.path.exists(path):
                os.unlink(path)
        self.pcs = {}
        return how


# A system disk on another bus, and a stick --------------------------------------------------------------
#
# How the kernel names them: an NVMe disk is nvme0n1 whatever else is there; virtio-blk disks are vdX; AHCI
# (SATA), virtio-scsi and USB disks share the sdX names, given as each disk is found. One SCSI host scans its
# targets in order (scsi-id 0 before 1; an AHCI port is a host, in port order), and usb-storage waits
# ``delay_use`` (1 s) before scanning a stick, so a USB stick present at boot comes after the disks on AHCI or
# virtio-scsi. A stick on the system disk's own SCSI host at a lower scsi-id is sda and the system disk sdb;
# plugged in while a system runs (``plug_stick``), it takes the next name in that boot and sda from the next
# boot on: the system disk's kernel name changes between boots.

SYSTEM_BUSES = ("virtio", "nvme", "scsi", "sata")
STICK_PLACES = ("usb", "scsi-first", "sata-first")
SYSTEM_SERIAL = "INPLACE-SYS-0001"
STICK_SERIAL = "INPLACE-STICK-01"
STICK_BYTES = 64 * 1024 * 1024
# The stick's table: a partition holding files, and one whose ext4 carries the store's label.
STICK_TABLE = "label: dos\nstart=2048, size=61440, type=83\nstart=63488, type=83\n"
STICK_PARTITIONS = ((2048 * 512, 61440 * 512, "LAB-STICK"), (63488 * 512, (131072 - 63488) * 512, "INPLACE-STORE"))


def _image_format(path):
    return "qcow2" if path.endswith(".qcow2") else "raw"


def disk_devices(system, bus="virtio", stick=None, stick_place="usb", serial=SYSTEM_SERIAL, stick_later=False):
    """QEMU arguments for the system disk ``system`` on ``bus`` and, with ``stick`` (a raw image), the stick.

    Pass them to ``qemu_command`` with ``disk=None``. ``stick_place`` is ``usb`` (usb-storage on an xHCI
    controller), or ``scsi-first``/``sata-first``: on the system disk's own SCSI host or AHCI controller
    ahead of it, so the stick is sda and the system disk sdb. With ``stick_later`` only the controller
    is there at start, for ``plug_stick``. The system disk has ``bootindex=0``: without it SeaBIOS boots
    the first hard disk it finds, which a stick ahead is, and would run the stick's empty boot code.
    """
    if stick_later:
        if stick_place == "sata-first":
            raise LabError("AHCI disks cannot be hot-plugged; plug a stick in later on usb or scsi-first")
        args = disk_devices(system, bus, None, stick_place, serial)
        return args + (["-device", "qemu-xhci,id=xhci"] if stick_place == "usb" else [])
    if bus not in SYSTEM_BUSES:
        raise LabError("system disk bus %r is none of %s" % (bus, ", ".join(SYSTEM_BUSES)))
    if stick and stick_place not in STICK_PLACES:
        raise LabError("stick place %r is none of %s" % (stick_place, ", ".join(STICK_PLACES)))
    if stick and stick_place != "usb" and stick_place.split("-")[0] != bus:
        raise LabError("a stick placed %s needs the system disk on %s, not %s" % (
            stick_place, stick_place.split("-")[0], bus))
    args = ["-drive", "if=none,id=sys,file=%s,format=%s" % (system, _image_format(system))]
    if stick:
        args += ["-drive", "if=none,id=stick,file=%s,format=raw" % stick]
    if bus == "virtio":
        args += ["-device", "virtio-blk-pci,drive=sys,serial=%s,bootindex=0" % serial]
    elif bus == "nvme":
        args += ["-device", "nvme,serial=%s,drive=sys,bootindex=0" % serial]
    elif bus == "scsi":
        args += ["-device", "virtio-scsi-pci,id=scsi0"]
        if stick and stick_place == "scsi-first":
            args += ["-device", _scsi_stick()]
        args += ["-device", "scsi-hd,bus=scsi0.0,channel=0,scsi-id=1,lun=0,drive=sys,serial=%s,bootindex=0" % serial]
    else:
        args += ["-device", "ahci,id=ahci0"]
        if stick and stick_place == "sata-first":
            args += ["-device", "ide-hd,bus=ahci0.0,drive=stick,serial=%s" % STICK_SERIAL]
        args += ["-device", "ide-hd,bus=ahci0.1,drive=sys,serial=%s,bootindex=0" % serial]
    if stick and stick_place == "usb":
        args += ["-device", "qemu-xhci,id=xhci", "-device", _usb_stick()]
    return args


def _scsi_stick(drive="stick"):
    return "scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun=0,drive=%s,removable=on,serial=%s" % (drive, STICK_SERIAL)


def _usb_stick(drive="stick"):
    return "usb-storage,bus=xhci.0,drive=%s,removable=on,serial=%s" % (drive, STICK_SERIAL)


def make_stick(path, files):
    """A raw stick image at ``path``: an msdos table, an ext4 partition filled from ``files`` (``mkfs.ext4 -d``,
    nothing mounted) and an empty ext4 partition labelled as the store is. Returns the image's sha256."""
    with open(path, "wb") as handle:
        handle.truncate(STICK_BYTES)
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", path], input=STICK_TABLE, text=True,
                   check=True, capture_output=True)
    for index, (offset, size, label) in enumerate(STICK_PARTITIONS):
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-E", "offset=%d" % offset]
                       + (["-d", files] if index == 0 else []) + [path, "%dk" % (size // 1024)],
                       check=True, capture_output=True)
    return file_sha256(path)


def file_sha256(path):
    import hashlib
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 * 1024 * 1024), b""):
            sha.update(block)
    return sha.hexdigest()


def stick_hotplug_messages(path, place="usb"):
    """The QMP commands that plug the stick ``path`` into a running machine (``usb`` or ``scsi-first``)."""
    if place not in ("usb", "scsi-first"):
        raise LabError("a stick can be plugged in on usb or scsi-first (AHCI disks cannot be hot-plugged), not %r"
                       % place)
    node = {"node-name": "stick", "driver": "raw", "file": {"driver": "file", "filename": path}}
    device = dict(item.split("=", 1) for item in (_usb_stick() if place == "usb" else _scsi_stick()).split(",")[1:])
    device.update(driver="usb-storage" if place == "usb" else "scsi-hd", id="stick0")
    for key in ("channel", "scsi-id", "lun"):
        if key in device:
            device[key] = int(device[key])
    if "removable" in device:
        device["removable"] = device["removable"] == "on"
    return [{"execute": "blockdev-add", "arguments": node}, {"execute": "device_add", "arguments": device}]


def plug_stick(directory, name, path, place="usb"):
    """Plug the stick into the running machine ``name`` (QMP), as a person does; returns QMP's replies."""
    replies = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(os.path.join(directory, name + ".qmp"))
        reader = sock.makefile("r")
        reader.readline()  # greeting
        for message in [{"execute": "qmp_capabilities"}] + stick_hotplug_messages(path, place):
            sock.sendall(json.dumps(message).encode() + b"\n")
            while True:
                reply = json.loads(reader.readline())
                if "return" in reply or "error" in reply:
                    break
            if "error" in reply:
                raise LabError("QEMU refused %s for %s: %s" % (message["execute"], name, reply["error"]))
            replies.append(reply)
    return replies
