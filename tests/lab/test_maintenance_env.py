"""The maintenance environment boots from RAM with a PC's overlay, and Ansible's account gets in."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.inplace.migration.plugins.module_utils._initramfs import host_overlay, write_newc
from tests.lab import cache, images, machines

HOSTNAME = "maint-test-pc"
ADMIN = {"name": "opsadmin", "uid": 1234, "gid": 1300, "password_hash": "*", "sudo": True}


@pytest.fixture(scope="module")
def base():
    return images.maintenance_base()


def make_host_keys(directory):
    keys = {}
    for key_type in ("ecdsa", "ed25519"):
        path = os.path.join(directory, key_type)
        subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "root@" + HOSTNAME, "-f", path],
                       check=True)
        with open(path, encoding="utf-8") as private, open(path + ".pub", encoding="utf-8") as public:
            keys[key_type] = (private.read(), public.read())
    return keys


@pytest.fixture
def booted(base, tmp_path):
    """QEMU booting base + overlay (concatenated, as the kernel reads them in order) with a disk attached."""
    with open(cache.ssh_key() + ".pub", encoding="utf-8") as handle:
        admin = dict(ADMIN, authorized_keys=[handle.read()])
    keys = make_host_keys(str(tmp_path))
    initrd = tmp_path / "initrd"
    with open(base["initrd"], "rb") as source, open(initrd, "wb") as target:
        shutil.copyfileobj(source, target)
        write_newc(target, host_overlay(HOSTNAME, keys, admin))
    os.chmod(initrd, 0o600)
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as handle:
        handle.truncate(64 * images.MiB)
    subprocess.run(["mkfs.ext4", "-q", "-L", "OLD-ROOT", str(disk)], check=True)
    port = machines.free_port()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join("[127.0.0.1]:%d %s\n" % (port, " ".join(public.split()[:2]))
                                   for _private, public in keys.values()))
    command = machines.qemu_command("maint", str(tmp_path), port, kernel=base["kernel"], initrd=str(initrd),
                                    append="console=ttyS0,115200 inplace.maintenance panic=10", memory=1024,
                                    extra_disks=[str(disk)])
    started = time.monotonic()
    pid = machines.launch(command, "maint", str(tmp_path))
    ssh = ["ssh", "-p", str(port), "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=%s" % known_hosts,
           "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-i", cache.ssh_key(),
           "%s@127.0.0.1" % ADMIN["name"], "--"]
    try:
        deadline = started + 300
        while not machines.logged_in(ssh + ["true"], HOSTNAME):
            assert machines.read_pid(str(tmp_path), "maint"), (tmp_path / "maint.serial.log").read_text()
            assert time.monotonic() < deadline, "no SSH within 300 s"
            time.sleep(1)
        yield ssh
    finally:
        os.kill(pid, 9)
        machines.wait_gone(pid, 10)


def remote(ssh, command):
    return subprocess.run(ssh + ["sh", "-c", command], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def test_the_base_is_small(base):
    assert base["initrd_bytes"] < 100 * images.MiB
    assert base["unpacked_bytes"] < 300 * images.MiB


def test_maintenance_boots_with_the_overlays_identity_and_mounts_no_disk(booted):
    ssh = booted
    assert remote(ssh, "hostname") == HOSTNAME
    assert remote(ssh, "id -u; id -g") == "1234\n1300"
    assert remote(ssh, "sudo -n id -u") == "0"
    assert remote(ssh, "test -f /etc/inplace-maintenance && grep -ow inplace.maintenance /proc/cmdline") == \
        "inplace.maintenance"
    assert remote(ssh, "findmnt -n -o FSTYPE /") in ("rootfs", "tmpfs")
    remote(ssh, "python3 -c 'import parted; parted.getDevice(\"/dev/vda\")'")
    assert remote(ssh, "sudo blkid -s LABEL -o value /dev/vda") == "OLD-ROOT"
    mounted = remote(ssh, "findmnt -rn -o SOURCE").split()
    assert not [source for source in mounted if source.startswith(("/dev/vd", "/dev/sd", "/dev/nvme"))], mounted
    assert remote(ssh, "systemctl is-system-running --wait") == "running"
    for tool in ("mkfs.ext4", "resize2fs", "btrfs", "zstd", "qemu-img", "grub-install", "sfdisk", "setfacl",
                 "setfattr", "tar", "parted"):
        remote(ssh, "command -v %s" % tool)
