"""The cached images as files: checksums, formats, the OS inside, and a cache hit the second time."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.lab import images
from tests.support import stock


@pytest.fixture(scope="module")
def new_image():
    return images.new_image()


def run(*argv, **kwargs):
    return subprocess.run(list(argv), capture_output=True, check=True, **kwargs).stdout


def test_checksum_files_verify_with_sha256sum(new_image):
    names = sorted(name for name in os.listdir(new_image) if name.endswith(".sha256"))
    assert names == ["debian13.raw.zst.sha256", "debian13.tar.zst.sha256"]
    for name in names:
        assert run("sha256sum", "--check", "--strict", name, cwd=new_image).decode().strip().endswith(": OK")


def test_the_tarball_is_debian_13_without_an_identity(new_image):
    tarball = os.path.join(new_image, "debian13.tar.zst")
    members = run("tar", "--zstd", "-tf", tarball).decode().splitlines()
    assert "./usr/sbin/sshd" in members and "./usr/sbin/grub-install" in members
    assert not [name for name in members if name.startswith("./etc/ssh/ssh_host_")]
    os_release = run("tar", "--zstd", "-xOf", tarball, "./usr/lib/os-release").decode()
    assert 'VERSION_ID="13"' in os_release
    assert run("tar", "--zstd", "-xOf", tarball, "./etc/machine-id") == b""
    verbose = run("tar", "--zstd", "--numeric-owner", "-tvf", tarball, "./etc/shadow").decode()
    assert verbose.split()[1] == "0/42"


def test_the_raw_image_is_a_clean_ext4_with_room_to_spare(new_image, tmp_path):
    raw = tmp_path / "debian13.raw"
    run("zstd", "-q", "-d", os.path.join(new_image, "debian13.raw.zst"), "-o", str(raw))
    with open(os.path.join(new_image, "info.json"), encoding="utf-8") as handle:
        info = json.load(handle)
    assert raw.stat().st_size == info["raw_bytes"]
    run("e2fsck", "-f", "-n", str(raw))
    assert run("debugfs", "-R", "cat /etc/debian_version", str(raw)).decode().startswith("13.")
    stats = run("dumpe2fs", "-h", str(raw)).decode()
    fields = dict(line.split(":", 1) for line in stats.splitlines() if ":" in line)
    free = int(fields["Free blocks"]) / int(fields["Block count"])
    assert 0.15 < free < 0.6


def installed_packages(tarball):
    """{package: priority} of what dpkg records as installed in a root tarball."""
    status = run("tar", "-xOf", tarball, "./var/lib/dpkg/status").decode()
    packages = {}
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Status") == "install ok installed":
            packages[fields["Package"]] = fields.get("Priority")
    return packages


def test_the_old_pc_is_a_plain_debian_12_without_zstd_or_pyparted():
    """What users have: the collection must not count on what the lab would add for its own convenience."""
    tarball = images.root_tarball("bookworm")
    packages = installed_packages(tarball)
    assert "zstd" not in packages and "python3-parted" not in packages and "libparted2" not in packages
    members = set(run("tar", "-tf", tarball).decode().splitlines())
    assert "./usr/bin/zstd" not in members
    assert not [m for m in members if "-packages/parted/" in m]
    assert {"python3", "openssh-server", "grub-pc", "linux-image-amd64", "sudo"} <= set(packages)
    # Every tool the old system's phases may call is there, from the package named for it.
    for tool, package in stock.OLD_SYSTEM_TOOLS.items():
        assert package in packages, tool
        assert {"./%s/%s" % (directory, tool) for directory in ("usr/bin", "usr/sbin", "bin", "sbin")} & members, tool
    # Some of the required, important and standard packages a plain install holds.
    assert {"util-linux", "e2fsprogs", "fdisk", "udev", "cron", "less", "xz-utils"} <= set(packages)


def test_old_pc_disks_are_6_gib_qcow2_and_builds_are_cached():
    for layout in images.LAYOUTS:
        directory = images.old_pc(layout)
        assert images.old_pc(layout) == directory
        details = json.loads(run("qemu-img", "info", "--output=json", os.path.join(directory, "disk.qcow2")))
        assert details["format"] == "qcow2" and details["virtual-size"] == images.DISK_BYTES
        with open(os.path.join(directory, "info.json"), encoding="utf-8") as handle:
            assert json.load(handle)["users"] == ["alice", "bob"]
