"""Booting the maintenance environment under QEMU straight from its kernel and initramfs.

The per-host overlay is made here as the maintenance_env role makes it on a PC
(``_initramfs.host_overlay``) and appended to the base, as GRUB's ``initrd base
overlay`` would: the kernel unpacks both archives in turn.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time

from ansible_collections.inplace.migration.plugins.module_utils.boot.initramfs import host_overlay, write_newc
from tests.lab import cache, machines

APPEND = "console=ttyS0,115200 inplace.maintenance panic=-1"
# What the base's setup unit prints when it keeps sshd down (maintenance_setup.py).
REFUSED = b"this maintenance environment is incomplete and stays offline"


class BootFailed(Exception):
    """The environment did not come up for SSH: QEMU exited (a panic), the base refused, or time ran out."""


def make_host_keys(directory, hostname):
    """{type: (private, public)} of fresh SSH host keys."""
    keys = {}
    for key_type in ("ecdsa", "ed25519"):
        path = os.path.join(directory, "ssh_host_%s_key" % key_type)
        subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "root@" + hostname, "-f", path],
                       check=True)
        with open(path, encoding="utf-8") as private, open(path + ".pub", encoding="utf-8") as public:
            keys[key_type] = (private.read(), public.read())
    return keys


def initrd_with_overlay(base_initrd, destination, hostname, keys, admin):
    with open(base_initrd, "rb") as source, open(destination, "wb") as target:
        os.fchmod(target.fileno(), 0o600)
        shutil.copyfileobj(source, target)
        # As GRUB does between initrds: the kernel finds the next archive only at a 4-byte boundary.
        target.write(b"\0" * (-target.tell() % 4))
        write_newc(target, host_overlay(hostname, keys, admin))


@contextlib.contextmanager
def booted(base, directory, hostname, admin, memory=1024, disks=(), timeout=300):
    """Boot ``base`` (build_base.py's summary) with an overlay for ``hostname``; yield (ssh argv, seconds to SSH).

    ``admin`` is the overlay's account without its key: the lab's key is added.
    Raises BootFailed when no login succeeds (e.g. with too little memory).
    """
    with open(cache.ssh_key() + ".pub", encoding="utf-8") as handle:
        admin = dict(admin, authorized_keys=[handle.read()])
    keys = make_host_keys(directory, hostname)
    initrd = os.path.join(directory, "initrd")
    initrd_with_overlay(base["initrd"], initrd, hostname, keys, admin)
    port = machines.free_port()
    known_hosts = os.path.join(directory, "known_hosts")
    with open(known_hosts, "w", encoding="utf-8") as handle:
        for _private, public in keys.values():
            handle.write("[127.0.0.1]:%d %s\n" % (port, " ".join(public.split()[:2])))
    command = machines.qemu_command("maint", directory, port, kernel=base["kernel"], initrd=initrd, append=APPEND,
                                    memory=memory, extra_disks=disks) + ["-no-reboot"]
    ssh = ["ssh", "-p", str(port), "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + known_hosts,
           "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
           "-i", cache.ssh_key(), "%s@127.0.0.1" % admin["name"], "--"]
    started = time.monotonic()
    pid = machines.launch(command, "maint", directory)
    try:
        serial = os.path.join(directory, "maint.serial.log")
        while not machines.logged_in(ssh + ["true"], hostname):
            with open(serial, "rb") as handle:
                refused = REFUSED in handle.read()
            if refused or not machines.read_pid(directory, "maint") or time.monotonic() - started > timeout:
                raise BootFailed("no SSH login to the maintenance environment with %d MiB; see %s" % (
                    memory, serial))
            time.sleep(1)
        yield ssh, round(time.monotonic() - started, 1)
    finally:
        if machines.read_pid(directory, "maint"):
            os.kill(pid, 9)
            machines.wait_gone(pid, 10)
