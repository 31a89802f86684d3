"""The maintenance environment boots from RAM with a PC's overlay, and Ansible's account gets in."""

from __future__ import annotations

import subprocess

import pytest

from tests.lab import images, maintenance

HOSTNAME = "maint-test-pc"
ADMIN = {"name": "opsadmin", "uid": 1234, "gid": 1300, "password_hash": "*", "sudo": True}


@pytest.fixture(scope="module")
def base():
    return images.maintenance_base()


@pytest.fixture
def booted(base, tmp_path):
    """Base + overlay booted with a disk holding a filesystem attached, which must stay unmounted."""
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as handle:
        handle.truncate(64 * images.MiB)
    subprocess.run(["mkfs.ext4", "-q", "-L", "OLD-ROOT", str(disk)], check=True)
    with maintenance.booted(base, str(tmp_path), HOSTNAME, ADMIN, memory=1024, disks=[str(disk)]) as (ssh, _seconds):
        yield ssh


def remote(ssh, command):
    return subprocess.run(ssh + [command], capture_output=True, text=True, check=True,
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
    remote(ssh, "sudo python3 -c 'import parted; parted.getDevice(\"/dev/vda\")'")
    assert remote(ssh, "sudo blkid -s LABEL -o value /dev/vda") == "OLD-ROOT"
    mounted = remote(ssh, "findmnt -rn -o SOURCE").split()
    assert not [source for source in mounted if source.startswith(("/dev/vd", "/dev/sd", "/dev/nvme"))], mounted
    assert remote(ssh, "sudo systemctl is-system-running --wait") == "running"
    tools = ("mkfs.ext4 resize2fs e2fsck btrfs xfs_growfs zstd qemu-img grub-install sfdisk setfacl setfattr tar parted "
             "lvm dmsetup efibootmgr")
    assert remote(ssh, "sudo sh -c 'for tool in %s; do command -v $tool >/dev/null || echo $tool; done'" % tools) == ""
    # What a root on LVM needs of the kernel: device-mapper, loaded on demand.
    assert remote(ssh, "sudo sh -c 'modprobe dm-mod && dmsetup version >/dev/null && echo ok'") == "ok"


def test_too_little_ram_never_gives_a_half_unpacked_environment_to_ssh(base, tmp_path):
    """512 MiB cannot hold this base (rootfs is capped at half the RAM): it must panic or stay offline."""
    serial = tmp_path / "maint.serial.log"
    with pytest.raises(maintenance.BootFailed):
        with maintenance.booted(base, str(tmp_path), HOSTNAME, ADMIN, memory=512, timeout=150):
            pass
    log = serial.read_bytes()
    assert b"Initramfs unpacking failed" in log
    assert b"Kernel panic" in log or maintenance.REFUSED in log
