"""image_deploy through Ansible on loop disks, with images built in the test from small trees.

Every test disk carries a system partition (dest), a swap partition and a store, which
is mounted for the module; refusals are held to "dest's bytes unchanged".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from tests.support import adhoc
from tests.support import images
from tests.support.loopdisk import MiB, mounted, run, tree_digests, write_tree
from tests.support.processes import descendants

# Per test run: a lookup by label must not meet a store another test process has attached.
LABEL = "INPLACE-%06d" % (os.getpid() % 1000000)
LAYOUT = "label: dos\nstart=2048, size=200MiB, type=83\nsize=16MiB, type=82\nsize=160MiB, type=83\n"
OFF = {"fstab": False, "hostname": False, "ssh_host_keys": False, "firstboot": False, "bootloader": "none"}


def deploy(check=False, **args):
    """image_deploy; these tests are about the image, so no capture is required unless they ask."""
    args.setdefault("require_capture", False)
    return adhoc.module("image_deploy", args, check=check)


def checksum_of(path):
    return "sha256:" + images.sha256(path)


def part_digest(device):
    return images.sha256(device)


def blkid(device, tag):
    return run("blkid", "-p", "-s", tag, "-o", "value", device, check=False).stdout.strip()


class Rig:
    """A disk with dest (p1), swap (p2) and a mounted store (p3)."""

    def __init__(self, disk, store):
        self.disk = disk
        self.dest = disk.part(1)
        self.swap = disk.part(2)
        self.store_dev = disk.part(3)
        self.store = store

    def journal(self):
        path = os.path.join(self.store, "inplace", "journal.json")
        if not os.path.exists(path):
            return {}
        with open(path) as handle:
            return json.load(handle)["records"].get("image_deploy") or {}


@pytest.fixture
def rig(make_disk):
    """rig(layout, size) -> Rig; its store is unmounted after the test, before the disk is detached."""
    with contextlib.ExitStack() as stack:
        def factory(layout=LAYOUT, size=512 * MiB):
            disk = make_disk(size, layout)
            run("mkswap", "-L", "oldswap", disk.part(2))
            run("mkfs.ext4", "-q", "-F", "-L", LABEL, disk.part(3))
            return Rig(disk, stack.enter_context(mounted(disk.part(3), readonly=False)))
        yield factory


@pytest.fixture
def data_image(tmp_path):
    """A 64 MiB raw ext4 image holding a small tree (mostly free space), and the tree's digests."""
    tree = tmp_path / "tree"
    digests = write_tree(str(tree), files=24, file_size=512 * 1024, big=6 * MiB, seed=5)
    raw = images.ext4_image(str(tmp_path / "data.img"), str(tree))
    return raw, digests


# Every format lands ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["raw", "raw.zst", "raw.gz", "raw.xz", "qcow2"])
def test_every_raw_format_lands_byte_for_byte_and_a_rerun_changes_nothing(rig, data_image, tmp_path, fmt):
    r = rig()
    raw, digests = data_image
    src = images.convert(raw, fmt, str(tmp_path))
    # Garbage where the image's zero runs go: they must read back as zeros all the same.
    with open(r.dest, "r+b") as handle:
        handle.write(b"\xa5" * (64 * MiB))
    result = deploy(store=r.store, src=src, checksum=checksum_of(src), dest=r.dest, grow=False, **OFF)
    assert result["rc"] == 0, result.get("msg")
    assert result["changed"] is True and result["format"] == fmt and result["state"] == "complete"
    assert images.sha256(r.dest, os.path.getsize(raw)) == images.sha256(raw)
    if fmt != "qcow2":
        assert result["zeroed_bytes"] > 32 * MiB, "the image's free space was written, not zeroed out"
        assert result["written_bytes"] + result["zeroed_bytes"] == os.path.getsize(raw)
    assert r.journal()["state"] == "complete"
    again = deploy(store=r.store, src=src, checksum=checksum_of(src), dest=r.dest, grow=False, **OFF)
    assert again["rc"] == 0 and again["changed"] is False, again.get("msg")
    with mounted(r.dest) as directory:
        assert tree_digests(directory) == digests


def _adversarial_tree(root):
    """Owners, modes, a setuid file, hard and symbolic links, an ACL and an xattr."""
    os.makedirs(os.path.join(root, "etc"))
    os.makedirs(os.path.join(root, "usr", "bin"))
    os.makedirs(os.path.join(root, "home", "anna"))
    write_tree(os.path.join(root, "srv"), files=12, seed=9)
    with open(os.path.join(root, "usr", "bin", "tool"), "wb") as handle:
        handle.write(b"#!/bin/sh\necho tool\n")
    os.chmod(os.path.join(root, "usr", "bin", "tool"), 0o4755)
    with open(os.path.join(root, "home", "anna", "notes"), "w") as handle:
        handle.write("private\n")
    os.chmod(os.path.join(root, "home", "anna", "notes"), 0o600)
    os.chown(os.path.join(root, "home", "anna", "notes"), 1234, 2345)
    os.chown(os.path.join(root, "home", "anna"), 1234, 2345)
    os.link(os.path.join(root, "usr", "bin", "tool"), os.path.join(root, "usr", "bin", "tool-again"))
    os.symlink("../usr/bin/tool", os.path.join(root, "etc", "tool-link"))
    run("setfacl", "-m", "u:4321:r", os.path.join(root, "home", "anna", "notes"))
    run("setfattr", "-n", "user.migration", "-v", "kept", os.path.join(root, "home", "anna", "notes"))


@pytest.mark.parametrize("fmt", ["tar", "tar.zst"])
def test_archives_land_file_for_file_with_owners_modes_acls_and_xattrs(rig, tmp_path, fmt):
    r = rig()
    tree = str(tmp_path / "root")
    _adversarial_tree(tree)
    src = images.tar_archive(tree, str(tmp_path / ("root." + fmt)), "zst" if fmt == "tar.zst" else None)
    result = deploy(store=r.store, src=src, checksum=checksum_of(src), dest=r.dest, label="newroot", **OFF)
    assert result["rc"] == 0, result.get("msg")
    assert result["format"] == fmt and blkid(r.dest, "LABEL") == "newroot" and blkid(r.dest, "TYPE") == "ext4"
    with mounted(r.dest) as directory:
        assert tree_digests(directory) == tree_digests(tree)
        notes = os.path.join(directory, "home", "anna", "notes")
        info = os.lstat(notes)
        # 0640, not 0600: with an ACL, the group bits show the ACL's mask.
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1234, 2345, 0o640)
        assert stat.S_IMODE(os.lstat(os.path.join(directory, "usr", "bin", "tool")).st_mode) == 0o4755
        assert os.readlink(os.path.join(directory, "etc", "tool-link")) == "../usr/bin/tool"
        assert os.stat(os.path.join(directory, "usr", "bin", "tool")).st_ino == \
            os.stat(os.path.join(directory, "usr", "bin", "tool-again")).st_ino
        assert "user:4321:r--" in run("getfacl", "-p", notes).stdout
        assert run("getfattr", "--only-values", "-n", "user.migration", notes).stdout == "kept"
    # The archive's filesystem fills the partition.
    assert result["filesystem"]["size"] == 200 * MiB


def test_a_url_source_is_streamed_and_verified_against_a_checksum_file(rig, data_image, tmp_path):
    r = rig()
    raw, unused = data_image
    served = tmp_path / "www"
    served.mkdir()
    src = images.convert(raw, "raw.zst", str(served))
    (served / "SHA256SUMS").write_text("%s  other.img\n%s  %s\n" % ("0" * 64, images.sha256(src),
                                                                    os.path.basename(src)))
    with images.http_server(str(served)) as base:
        result = deploy(store=r.store, src=base + "/" + os.path.basename(src), checksum=base + "/SHA256SUMS",
                        dest=r.dest, grow=False, **OFF)
    assert result["rc"] == 0, result.get("msg")
    assert result["format"] == "raw.zst"
    assert images.sha256(r.dest, os.path.getsize(raw)) == images.sha256(raw)


def test_a_streamed_image_with_the_wrong_checksum_fails_loudly_and_is_recorded_invalid(rig, data_image, tmp_path):
    r = rig()
    raw, unused = data_image
    served = tmp_path / "www"
    served.mkdir()
    src = images.convert(raw, "raw.gz", str(served))
    with images.http_server(str(served)) as base:
        result = deploy(store=r.store, src=base + "/" + os.path.basename(src), checksum="sha256:" + "1" * 64,
                        dest=r.dest, **OFF)
    assert result["rc"] != 0 and "holds no valid system" in result["msg"]
    assert r.journal()["state"] == "invalid"


# Refusals leave dest as it was ---------------------------------------------------------------------------

def test_a_local_image_with_the_wrong_checksum_is_refused_before_writing(rig, data_image):
    r = rig()
    raw, unused = data_image
    before = part_digest(r.dest)
    result = deploy(store=r.store, src=raw, checksum="sha256:" + "2" * 64, dest=r.dest, **OFF)
    assert result["rc"] != 0 and "nothing was written" in result["msg"], result.get("msg")
    assert result["changed"] is False
    assert part_digest(r.dest) == before


REFUSALS = {
    "mounted": "is mounted at",
    "whole disk": "is a whole disk",
    "store": "holds the store",
    "protected": "is protected by protect=",
    "protected disk": "is protected by protect=",
    "too small": "the image needs 300.0 MiB",
    "unknown format": "the format of",
    "missing source": "does not exist",
    "no such label": "no partition has LABEL=",
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_come_before_any_write(rig, data_image, tmp_path, case):
    r = rig()
    raw, unused = data_image
    run("mkfs.ext4", "-q", "-F", "-L", "oldsystem", r.dest)
    src, args = raw, {"dest": r.dest}
    if case == "whole disk":
        args["dest"] = r.disk.path
    elif case == "store":
        args["dest"] = "LABEL=" + LABEL
    elif case == "protected":
        args["protect"] = ["LABEL=oldsystem"]
    elif case == "protected disk":
        args["protect"] = [r.disk.path]
    elif case == "too small":
        big = tmp_path / "big"
        big.mkdir()
        src = images.convert(images.ext4_image(str(tmp_path / "big.img"), str(big), size=300 * MiB), "raw.zst",
                             str(tmp_path))
    elif case == "unknown format":
        src = str(tmp_path / "noise.img")
        with open(src, "wb") as handle:
            handle.write(os.urandom(1 * MiB))
    elif case == "missing source":
        src = str(tmp_path / "nope.raw.zst")
    elif case == "no such label":
        args["dest"] = "LABEL=no-such-label"
    checksum = checksum_of(src) if os.path.exists(src) else "sha256:" + "3" * 64
    before = part_digest(r.dest)
    if case == "mounted":
        with mounted(r.dest):
            result = deploy(store=r.store, src=src, checksum=checksum, **dict(OFF, **args))
    else:
        result = deploy(store=r.store, src=src, checksum=checksum, **dict(OFF, **args))
    assert result["rc"] != 0, result
    assert REFUSALS[case] in result["msg"], result["msg"]
    assert result["changed"] is False
    assert part_digest(r.dest) == before
    assert r.journal() == {}


def _capture_into(store, tmp_path):
    """A real capture of a small old root (one user, one file) onto ``store``."""
    root = tmp_path / "captured-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nanna:x:1000:1000::/home/anna:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\nanna:x:1000:\n")
    (root / "home" / "anna").mkdir(parents=True)
    (root / "home" / "anna" / "notes").write_text("kept\n")
    result = adhoc.module("profile_capture", {"root": str(root), "store": store})
    assert result["rc"] == 0, result.get("msg")
    return os.path.join(store, "inplace", "profiles", "manifest.json")


def test_no_byte_is_written_before_the_store_holds_a_complete_verified_capture(rig, data_image, tmp_path):
    r = rig()
    raw, unused = data_image
    args = dict(OFF, store=r.store, src=raw, checksum=checksum_of(raw), dest=r.dest, grow=False)
    before = part_digest(r.dest)
    for check in (True, False):
        refused = adhoc.module("image_deploy", args, check=check)
        assert refused["rc"] != 0 and refused["changed"] is False, refused
        assert "holds no complete and verified capture (it holds no profile manifest" in refused["msg"], \
            refused["msg"]
        assert "run profile_capture first" in refused["msg"] and "require_capture=false" in refused["msg"]
    manifest = _capture_into(r.store, tmp_path)
    with open(manifest) as handle:
        recorded = json.load(handle)
    with open(manifest, "w") as handle:
        json.dump(dict(recorded, verified=False), handle)
    refused = adhoc.module("image_deploy", args)
    assert refused["rc"] != 0 and "not complete and verified" in refused["msg"], refused["msg"]
    assert part_digest(r.dest) == before and r.journal() == {}
    with open(manifest, "w") as handle:
        json.dump(recorded, handle)
    result = adhoc.module("image_deploy", args)
    assert result["rc"] == 0 and result["state"] == "complete", result.get("msg")
    assert images.sha256(r.dest, os.path.getsize(raw)) == images.sha256(raw)
    # A PC whose profiles are not kept: no capture, said so.
    other = rig()
    assert adhoc.module("image_deploy", dict(args, store=other.store, dest=other.dest,
                                             require_capture=False))["rc"] == 0


def test_a_rerun_after_the_write_started_is_not_held_back_by_the_capture_gate(rig, data_image, tmp_path):
    r = rig()
    raw, unused = data_image
    args = dict(OFF, store=r.store, src=raw, checksum=checksum_of(raw), dest=r.dest, grow=False)
    manifest = _capture_into(r.store, tmp_path)
    assert adhoc.module("image_deploy", args)["rc"] == 0
    os.unlink(manifest)
    path = os.path.join(r.store, "inplace", "journal.json")
    for state, allowed in (("verifying", False), ("writing", True), ("written", True), ("fixups", True)):
        with open(path) as handle:
            journal = json.load(handle)
        journal["records"]["image_deploy"].update(state=state, touched=state != "verifying", offset=0)
        with open(path, "w") as handle:
            json.dump(journal, handle)
        result = adhoc.module("image_deploy", args)
        assert (result["rc"] == 0) is allowed, (state, result.get("msg"))
        if not allowed:
            assert "run profile_capture first" in result["msg"]
    assert images.sha256(r.dest, os.path.getsize(raw)) == images.sha256(raw)


def test_check_mode_verifies_and_plans_without_writing(rig, data_image):
    r = rig()
    raw, unused = data_image
    before = part_digest(r.dest)
    result = deploy(check=True, store=r.store, src=raw, checksum=checksum_of(raw), dest=r.dest, **OFF)
    assert result["rc"] == 0 and result["changed"] is True and result["state"] == "planned", result.get("msg")
    assert result["format"] == "raw" and result["image_bytes"] == 64 * MiB
    assert part_digest(r.dest) == before


# Interruption, growth ----------------------------------------------------------------------------------------

def test_an_interrupted_write_resumes_from_its_checkpoint(rig, tmp_path):
    r = rig("label: dos\nstart=2048, size=400MiB, type=83\nsize=16MiB, type=82\nsize=100MiB, type=83\n", 600 * MiB)
    tree = tmp_path / "tree"
    write_tree(str(tree), files=40, file_size=2 * MiB, big=160 * MiB, seed=11)
    raw = images.ext4_image(str(tmp_path / "dense.img"), str(tree), size=320 * MiB)
    served = tmp_path / "www"
    served.mkdir()
    src = images.convert(raw, "raw.zst", str(served))
    with images.http_server(str(served), delay=0.02) as base:
        url = base + "/" + os.path.basename(src)
        args = dict(OFF, store=r.store, src=url, checksum=checksum_of(src), dest=r.dest, grow=False,
                    checkpoint="16MiB", require_capture=False)
        command = [sys.executable, "-c", "import json, sys; from tests.support import adhoc; "
                   "adhoc.module('image_deploy', json.loads(sys.argv[1]))", json.dumps(args)]
        # Its own temporary directories, so what the killed module leaves behind goes with tmp_path.
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        proc = subprocess.Popen(command, cwd=adhoc.REPO, env=dict(
            adhoc.environment(), PYTHONPATH=adhoc.REPO, TMPDIR=str(scratch), ANSIBLE_REMOTE_TMP=str(scratch)))
        try:
            deadline = time.time() + 120
            while time.time() < deadline and (r.journal().get("offset") or 0) < 64 * MiB:
                assert proc.poll() is None, "the module finished before it could be interrupted"
                time.sleep(0.05)
        finally:
            # Ansible starts the module in a session of its own: kill the whole tree, as a power cut would.
            for pid in [proc.pid] + descendants(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
        record = r.journal()
        assert record["state"] == "writing" and 64 * MiB <= record["offset"] < 320 * MiB, record
        result = deploy(**args)
    assert result["rc"] == 0, result.get("msg")
    assert result.get("resumed_from") == record["offset"], result
    assert r.journal()["write_starts"] == [0, record["offset"]], "one write from 0, resumed once"
    assert images.sha256(r.dest, os.path.getsize(raw)) == images.sha256(raw)


def test_a_partuuid_two_devices_carry_is_refused_on_the_first_run_and_on_a_rerun(rig, make_disk, data_image):
    r = rig()
    raw, unused = data_image
    args = dict(OFF, store=r.store, src=raw, checksum=checksum_of(raw), grow=False)
    assert deploy(dest=r.dest, **args)["rc"] == 0
    partuuid = r.journal()["partuuid"]
    # A copy of the disk's partition table (a cloned disk attached): its first partition has dest's PARTUUID.
    clone = make_disk(512 * MiB, "label-id: 0x%s\n" % blkid(r.disk.path, "PTUUID") + LAYOUT)
    assert blkid(clone.part(1), "PART_ENTRY_UUID") == partuuid
    before = part_digest(r.dest)
    for dest in (r.dest, "PARTUUID=" + partuuid):  # the rerun finds dest by the journal's PARTUUID
        result = deploy(dest=dest, **args)
        assert result["rc"] != 0 and result["changed"] is False
        assert "PARTUUID=%s (dest" % partuuid in result["msg"], result["msg"]
        assert "names 2 devices, %s and %s, where it must name one" % tuple(sorted([r.dest, clone.part(1)])) \
            in result["msg"]
    assert part_digest(r.dest) == before


def test_grow_fills_the_partition(rig, data_image):
    r = rig()
    raw, digests = data_image
    result = deploy(store=r.store, src=raw, checksum=checksum_of(raw), dest=r.dest, **OFF)
    assert result["rc"] == 0, result.get("msg")
    assert result["grow"]["size_before"] == 64 * MiB and result["grow"]["size"] == 200 * MiB
    assert run("e2fsck", "-f", "-n", r.dest, check=False).returncode == 0
    with mounted(r.dest) as directory:
        assert all(tree_digests(directory).get(k) == v for k, v in digests.items())


# Fix-ups --------------------------------------------------------------------------------------------------------

def _old_system(root, swap_uuid):
    fstab = ("UUID=11111111-2222-3333-4444-555555555555 / ext4 errors=remount-ro 0 1\n"
             "UUID=%s none swap sw 0 0\n"
             "LABEL=%s /mnt/store ext4 defaults 0 2\n"
             "UUID=99999999-8888-7777-6666-555555555555 /data ext4 defaults 0 2\n"
             "tmpfs /tmp tmpfs defaults 0 0\n" % (swap_uuid, LABEL))
    files = {
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/fstab": fstab,
        "etc/ssh/ssh_host_ed25519_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nold-ed25519\n",
        "etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAAold root@labpc07\n",
        "etc/ssh/ssh_host_rsa_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nold-rsa\n",
        "etc/ssh/ssh_host_rsa_key.pub": "ssh-rsa AAAAold root@labpc07\n",
        "home/ansible/.ssh/authorized_keys": "ssh-ed25519 AAAAcontroller ansible@controller\n",
        "etc/sudoers.d/ansible": "ansible ALL=(ALL) NOPASSWD: ALL\n",
        "etc/sudoers.d/other": "anna ALL=(ALL) /usr/bin/true\n",
    }
    images.write_root(root, "labpc07", users=[("ansible", 1001, 1001, True), ("anna", 1002, 1002, False)],
                      extra_groups=[("labusers", 1500, "ansible,anna")], files=files)
    for name in ("ssh_host_ed25519_key", "ssh_host_rsa_key"):
        os.chmod(os.path.join(root, "etc", "ssh", name), 0o600)
    os.chmod(os.path.join(root, "etc", "sudoers.d", "ansible"), 0o440)


def _new_image(root):
    images.write_root(root, "debian", users=[("debian", 1001, 1001, False)], files={
        "etc/fstab": "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n",
        "etc/ssh/ssh_host_ecdsa_key": "image's own key\n",
        "usr/bin/python3": "",
        "etc/machine-id": "fedcba9876543210fedcba9876543210\n",
    })


def test_fixups_carry_identity_access_and_fstab_into_the_new_system(rig, tmp_path):
    r = rig()
    old = str(tmp_path / "old")
    _old_system(old, blkid(r.swap, "UUID"))
    run("mkfs.ext4", "-q", "-F", "-d", old, "-L", "oldsystem", r.dest)
    new = str(tmp_path / "new")
    _new_image(new)
    src = images.tar_archive(new, str(tmp_path / "new.tar.zst"), "zst")
    result = deploy(store=r.store, src=src, checksum=checksum_of(src), dest="LABEL=oldsystem", bootloader="none",
                    carry_accounts=["ansible", "nobody-here"])
    assert result["rc"] == 0, result.get("msg")
    fixups = result["fixups"]
    assert result["carry"]["source"] == "the old system on " + r.dest
    assert result["carry"]["missing_accounts"] == ["nobody-here"]
    uuid = result["filesystem"]["uuid"]
    carry = os.path.join(r.store, "inplace", "carry")
    assert stat.S_IMODE(os.stat(carry).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(carry, "carry.json")).st_mode) == 0o600
    with mounted(r.dest) as root:
        def text(path):
            with open(os.path.join(root, path)) as handle:
                return handle.read()
        fstab = [line.split() for line in text("etc/fstab").splitlines() if line and not line.startswith("#")]
        assert fstab[0] == ["UUID=" + uuid, "/", "ext4", "errors=remount-ro", "0", "1"]
        assert ["UUID=" + blkid(r.swap, "UUID"), "none", "swap", "sw", "0", "0"] in fstab
        assert not any(LABEL in line[0] or line[1] in ("/data", "/mnt/store", "/tmp") for line in fstab), fstab
        assert fixups["fstab"]["carried"] == ["UUID=%s none" % blkid(r.swap, "UUID")]
        assert text("etc/hostname") == "labpc07\n"
        assert "127.0.1.1\tlabpc07.lab labpc07" in text("etc/hosts")
        ssh = os.path.join(root, "etc", "ssh")
        assert sorted(os.listdir(ssh)) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key",
                                           "ssh_host_rsa_key.pub"]
        assert text("etc/ssh/ssh_host_ed25519_key") == "-----BEGIN OPENSSH PRIVATE KEY-----\nold-ed25519\n"
        assert stat.S_IMODE(os.stat(os.path.join(ssh, "ssh_host_rsa_key")).st_mode) == 0o600
        passwd = {line.split(":")[0]: line.split(":") for line in text("etc/passwd").splitlines()}
        # UID and GID 1001 are the image's own "debian": ansible gets the first free ones instead.
        assert passwd["debian"][2] == "1001" and passwd["ansible"][2] == "1000"
        groups = {line.split(":")[0]: line.split(":") for line in text("etc/group").splitlines()}
        assert passwd["ansible"][3] == groups["ansible"][2] == "1000"
        assert passwd["ansible"][5:] == ["/home/ansible", "/bin/bash"]
        assert "ansible" in groups["sudo"][3].split(",") and groups["labusers"][3] == "ansible"
        assert groups["labusers"][2] == "1500"
        assert "anna" not in passwd
        shadow = {line.split(":")[0]: line for line in text("etc/shadow").splitlines()}
        assert shadow["ansible"].startswith("ansible:$y$j9T$salt$hashansible:")
        keys = os.path.join(root, "home", "ansible", ".ssh", "authorized_keys")
        assert text("home/ansible/.ssh/authorized_keys") == "ssh-ed25519 AAAAcontroller ansible@controller\n"
        info = os.stat(keys)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1000, 1000, 0o600)
        assert stat.S_IMODE(os.stat(os.path.dirname(keys)).st_mode) == 0o700
        assert os.stat(os.path.dirname(keys)).st_uid == 1000
        assert text("etc/sudoers.d/ansible") == "ansible ALL=(ALL) NOPASSWD: ALL\n"
        assert stat.S_IMODE(os.stat(os.path.join(root, "etc/sudoers.d/ansible")).st_mode) == 0o440
        assert not os.path.exists(os.path.join(root, "etc/sudoers.d/other"))
        assert text("etc/machine-id") == "0123456789abcdef0123456789abcdef\n"
        unit = os.path.join(root, "etc/systemd/system/inplace-firstboot.service")
        assert "ExecStart=/usr/bin/python3 /usr/local/sbin/inplace-firstboot" in text(unit)
        assert os.readlink(os.path.join(root, "etc/systemd/system/multi-user.target.wants/inplace-firstboot.service")) \
            == "/etc/systemd/system/inplace-firstboot.service"
        program = os.path.join(root, "usr/local/sbin/inplace-firstboot")
        assert os.access(program, os.X_OK)
        assert subprocess.run([sys.executable, "-I", program, "--help"], capture_output=True,
                              check=False).returncode == 0
        config = json.loads(text("etc/inplace-migration/firstboot.json"))
        assert config["store_label"] == LABEL
        # The hook finds the store by what identifies it, not by its label alone.
        assert config["store_partuuid"] == blkid(r.store_dev, "PART_ENTRY_UUID") == config["store_identity"]["partuuid"]
        assert config["store_uuid"] == blkid(r.store_dev, "UUID") == config["store_identity"]["uuid"]
        assert config["store_identity"]["disk"]["ptuuid"] == blkid(r.disk.path, "PTUUID")
    # The same image again (its label is gone, the journal's PARTUUID finds the partition): nothing to do.
    again = deploy(store=r.store, src=src, checksum=checksum_of(src), dest="LABEL=oldsystem", bootloader="none",
                   carry_accounts=["ansible"])
    assert again["rc"] == 0 and again["changed"] is False, again.get("msg")


def test_an_xfs_old_root_is_carried_from_then_replaced_by_the_image_s_ext4(rig, tmp_path):
    # mkfs.xfs makes nothing smaller than 300 MB.
    r = rig("label: dos\nstart=2048, size=320MiB, type=83\nsize=16MiB, type=82\nsize=160MiB, type=83\n", 512 * MiB)
    run("mkfs.xfs", "-q", "-f", "-L", "oldsystem", r.dest)
    with mounted(r.dest, readonly=False) as old:
        _old_system(old, blkid(r.swap, "UUID"))
        with open(os.path.join(old, "etc", "fstab"), "w") as handle:
            handle.write("LABEL=oldsystem / xfs defaults 0 0\nUUID=%s none swap sw 0 0\n" % blkid(r.swap, "UUID"))
    new = str(tmp_path / "new")
    _new_image(new)
    raw = images.ext4_image(str(tmp_path / "new.img"), new)
    result = deploy(store=r.store, src=raw, checksum=checksum_of(raw), dest=r.dest, bootloader="none",
                    carry_accounts=["ansible"])
    assert result["rc"] == 0, result.get("msg")
    assert result["carry"]["source"] == "the old system on " + r.dest
    assert result["filesystem"]["type"] == "ext4" and blkid(r.dest, "TYPE") == "ext4"
    assert result["grow"]["size"] == 320 * MiB
    assert run("e2fsck", "-f", "-n", r.dest, check=False).returncode == 0
    with mounted(r.dest) as root:
        with open(os.path.join(root, "etc", "fstab")) as handle:
            fstab = [line.split() for line in handle if line.strip() and not line.startswith("#")]
        with open(os.path.join(root, "etc", "hostname")) as handle:
            assert handle.read() == "labpc07\n"
        assert os.path.exists(os.path.join(root, "home", "ansible", ".ssh", "authorized_keys"))
    assert fstab[0] == ["UUID=" + result["filesystem"]["uuid"], "/", "ext4", "errors=remount-ro", "0", "1"]
    assert not any("xfs" in line for line in fstab), fstab


def test_a_run_stopped_after_the_write_continues_with_the_fixups_from_the_store_s_copy(rig, tmp_path):
    r = rig()
    old = str(tmp_path / "old")
    _old_system(old, blkid(r.swap, "UUID"))
    run("mkfs.ext4", "-q", "-F", "-d", old, r.dest)
    new = str(tmp_path / "new")
    _new_image(new)
    src = images.tar_archive(new, str(tmp_path / "new.tar.zst"), "zst")
    args = dict(store=r.store, src=src, checksum=checksum_of(src), dest=r.dest, bootloader="none", firstboot=False)
    assert deploy(**args)["rc"] == 0
    # As if the run had stopped during the fix-ups: the new system is on dest, the old one is gone.
    path = os.path.join(r.store, "inplace", "journal.json")
    with open(path) as handle:
        journal = json.load(handle)
    journal["records"]["image_deploy"]["state"] = "fixups"
    with open(path, "w") as handle:
        json.dump(journal, handle)
    with mounted(r.dest, readonly=False) as root:
        os.unlink(os.path.join(root, "etc", "hostname"))
    again = deploy(**args)
    assert again["rc"] == 0 and again["changed"] is True, again.get("msg")
    assert again["resumed_from"].startswith("fix-ups")
    with open(path) as handle:
        assert json.load(handle)["records"]["image_deploy"]["write_starts"] == [0], "the image was written once"
    assert again["carry"]["source"].startswith("the store's copy")
    with mounted(r.dest) as root:
        with open(os.path.join(root, "etc", "hostname")) as handle:
            assert handle.read() == "labpc07\n"


def test_machine_id_can_be_regenerated(rig, tmp_path):
    r = rig()
    old = str(tmp_path / "old")
    _old_system(old, blkid(r.swap, "UUID"))
    run("mkfs.ext4", "-q", "-F", "-d", old, r.dest)
    new = str(tmp_path / "new")
    _new_image(new)
    src = images.tar_archive(new, str(tmp_path / "new.tar"))
    result = deploy(store=r.store, src=src, checksum=checksum_of(src), dest=r.dest, bootloader="none",
                    firstboot=False, machine_id="regenerate")
    assert result["rc"] == 0, result.get("msg")
    with mounted(r.dest) as root:
        assert os.path.getsize(os.path.join(root, "etc/machine-id")) == 0
        assert not os.path.exists(os.path.join(root, "etc/systemd/system/inplace-firstboot.service"))


# GRUB, with a real Debian root -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def debian_image(tmp_path_factory):
    directory = tmp_path_factory.mktemp("debian")
    root_tar = images.debian_root()
    out = str(directory / "debian.tar.zst")
    with open(root_tar, "rb") as source, open(out, "wb") as target:
        subprocess.run(["zstd", "-q", "-T0", "-c"], stdin=source, stdout=target, check=True)
    return out


GRUB_LAYOUTS = {
    "msdos": ("label: dos\nstart=2048, size=900MiB, type=83\nsize=16MiB, type=82\nsize=100MiB, type=83\n", 1),
    "gpt": ("label: gpt\nstart=2048, size=1MiB, type=21686148-6449-6E6F-744E-656564454649\n"
            "size=900MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
            "size=100MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n", 2),
}


@pytest.mark.parametrize("table", sorted(GRUB_LAYOUTS))
def test_grub_hands_the_boot_to_the_new_system_once_with_maintenance_as_fallback(make_disk, debian_image, table):
    layout, number = GRUB_LAYOUTS[table]
    disk = make_disk(1100 * MiB, layout)
    dest, store_dev = disk.part(number), disk.part(number + 1)
    run("mkfs.ext4", "-q", "-F", "-L", LABEL, store_dev)
    store_uuid = blkid(store_dev, "UUID")
    with mounted(store_dev, readonly=False) as store:
        result = deploy(store=store, src=debian_image, checksum=checksum_of(debian_image), dest=dest,
                        maintenance_cmdline="console=ttyS0,115200 inplace.maintenance",
                        disk_identity={"ptuuid": blkid(disk.path, "PTUUID"), "device": "/dev/sdz"})
        assert result["rc"] == 0, result.get("msg")
        boot = result["bootloader"]
        uuid = result["filesystem"]["uuid"]
        assert boot["disk"] == disk.path and boot["default_entry"] == "gnulinux-simple-" + uuid
        with open(disk.path, "rb") as handle:
            assert b"GRUB" in handle.read(512), "no GRUB boot code in the MBR"
        if table == "gpt":
            with open(disk.part(1), "rb") as handle:
                assert handle.read(512).strip(b"\0"), "no core image in the BIOS boot partition"
        with mounted(dest, readonly=False) as root:
            with open(os.path.join(root, "boot/grub/grub.cfg")) as handle:
                config = handle.read()
            assert "root=UUID=%s " % uuid in config and "root=/dev/" not in config
            assert "--id inplace-maintenance" in config
            assert "search --no-floppy --fs-uuid --set=root %s" % store_uuid in config
            assert "linux /inplace/boot/vmlinuz console=ttyS0,115200 inplace.maintenance" in config
            assert "initrd /inplace/boot/initrd.img /inplace/boot/overlay.img" in config
            with open(os.path.join(root, "etc/default/grub")) as handle:
                assert "GRUB_DEFAULT=saved\n" in handle.read()
            assert os.path.exists(os.path.join(root, "boot/grub/i386-pc/core.img"))
            env = _grubenv(root)
            assert env == {"saved_entry": "inplace-maintenance", "next_entry": "gnulinux-simple-" + uuid}
            assert os.path.getsize(os.path.join(root, "boot/grub/grubenv")) == 1024
            # The first boot, played against the mounted root: it confirms, makes the new system the
            # default, runs the store's restore program, and disables itself.
            os.makedirs(os.path.join(store, "inplace", "bin"))
            marker = os.path.join(store, "restored")
            with open(os.path.join(store, "inplace", "bin", "inplace-restore"), "w") as handle:
                handle.write("import os, sys\nassert os.environ['INPLACE_STORE_LOCKED_BY'] == 'first-boot'\n"
                             "open(%r, 'w').write(' '.join(sys.argv[1:]))\n" % marker)
            # No --store: the program finds the store by the identity recorded before GRUB went to the disk.
            program = os.path.join(root, "usr/local/sbin/inplace-firstboot")
            proc = subprocess.run([sys.executable, "-I", program, "--root", root],
                                  capture_output=True, text=True, check=False)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert _grubenv(root) == {"saved_entry": "gnulinux-simple-" + uuid}
            with open(marker) as handle:
                assert handle.read() == "--store %s --root %s" % (store, root)
            assert not os.path.lexists(os.path.join(root, "etc/systemd/system/multi-user.target.wants/"
                                                          "inplace-firstboot.service"))
            with open(os.path.join(store, "inplace", "journal.json")) as handle:
                records = json.load(handle)["records"]
            assert records["firstboot"]["confirmed"] and records["firstboot"]["restore"] == "ran"
            assert records["image_deploy"]["state"] == "complete"


def test_a_first_boot_that_never_confirmed_is_armed_again_a_few_times(make_disk, debian_image):
    layout, number = GRUB_LAYOUTS["msdos"]
    disk = make_disk(1100 * MiB, layout)
    dest, store_dev = disk.part(number), disk.part(number + 1)
    run("mkfs.ext4", "-q", "-F", "-L", LABEL, store_dev)
    args = dict(src=debian_image, checksum=checksum_of(debian_image), dest=dest)
    with mounted(store_dev, readonly=False) as store:
        first = deploy(store=store, **args)
        assert first["rc"] == 0, first.get("msg")
        entry = first["bootloader"]["default_entry"]
        # Before any boot the one-shot is still armed: a rerun changes nothing.
        assert deploy(store=store, **args)["changed"] is False

        def boot_without_confirming():
            # GRUB consumed next_entry and the power went before the hook confirmed.
            with mounted(dest, readonly=False) as root:
                path = os.path.join(root, "boot/grub/grubenv")
                text = open(path).read().replace("next_entry=%s\n" % entry, "")
                with open(path, "w") as handle:
                    handle.write(text.ljust(1024, "#"))
                assert _grubenv(root) == {"saved_entry": "inplace-maintenance"}

        boot_without_confirming()
        checked = deploy(check=True, store=store, **args)
        assert checked["changed"] is True and checked["first_boot_rearmed"] == entry
        with mounted(dest) as root:
            assert "next_entry" not in _grubenv(root)
        for unused_attempt in range(2):
            again = deploy(store=store, **args)
            assert again["rc"] == 0 and again["changed"] is True and again["first_boot_rearmed"] == entry
            with mounted(dest) as root:
                assert _grubenv(root) == {"saved_entry": "inplace-maintenance", "next_entry": entry}
            boot_without_confirming()
        given_up = deploy(store=store, **args)
        assert given_up["rc"] != 0 and "booted 3 times and never confirmed its first boot" in given_up["msg"]
        # Once the hook has confirmed, the deploy is simply complete.
        with open(os.path.join(store, "inplace", "journal.json")) as handle:
            journal = json.load(handle)
        journal["records"]["firstboot"] = {"confirmed": "2026-11-30T12:00:00Z"}
        with open(os.path.join(store, "inplace", "journal.json"), "w") as handle:
            json.dump(journal, handle)
        done = deploy(store=store, **args)
        assert done["rc"] == 0 and done["changed"] is False and "first_boot_rearmed" not in done


def test_a_disk_without_the_recorded_identity_is_refused_before_any_write(rig, data_image):
    r = rig()
    raw, unused = data_image
    src = images.convert(raw, "raw.zst")
    before = part_digest(r.disk.path)
    result = deploy(store=r.store, src=src, checksum=checksum_of(src), dest=r.dest, disk_identity={
        "ptuuid": "0badd15c", "serial": "WD-RECORDED"}, **OFF)
    adhoc.assert_one_sentence_naming_the_fix(result, [
        "%s is not the disk recorded when the migration was planned (it has partition table UUID %s where 0badd15c "
        "was recorded), so writing the new system to %s is refused; put the recorded disk back, or run preflight "
        "again on the old system to record this one." % (r.disk.path, blkid(r.disk.path, "PTUUID"), r.dest)])
    assert part_digest(r.disk.path) == before and r.journal() == {}


def test_the_new_system_s_grub_goes_only_onto_the_recorded_disk_checked_right_before_grub_install(
        make_disk, debian_image):
    """The disk passes the check before the write, then is given another partition table UUID while the new
    system is written (as another disk would carry): GRUB does not go onto it, and a rerun on the disk recorded
    finishes the hand-over."""
    layout, number = GRUB_LAYOUTS["msdos"]
    disk = make_disk(1100 * MiB, layout)
    dest, store_dev = disk.part(number), disk.part(number + 1)
    run("mkfs.ext4", "-q", "-F", "-L", LABEL, store_dev)
    recorded = blkid(disk.path, "PTUUID")
    args = dict(src=debian_image, checksum=checksum_of(debian_image), dest=dest,
                disk_identity={"ptuuid": recorded})
    with mounted(store_dev, readonly=False) as store:
        journal = os.path.join(store, "inplace", "journal.json")
        outcome = {}
        runner = threading.Thread(target=lambda: outcome.update(deploy(store=store, **args)))
        runner.start()
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and runner.is_alive():
                try:
                    with open(journal) as handle:
                        if json.load(handle)["records"].get("image_deploy", {}).get("state") == "writing":
                            break
                except (OSError, ValueError):
                    pass
                time.sleep(0.05)
            assert runner.is_alive(), "the deploy ended before its write: %s" % outcome.get("msg")
            run("sfdisk", "--disk-id", disk.path, "0x5eedf00d", check=False)
            assert blkid(disk.path, "PTUUID") == "5eedf00d"
        finally:
            runner.join()
        adhoc.assert_one_sentence_naming_the_fix(outcome, [
            "%s is not the disk recorded when the migration was planned (it has partition table UUID 5eedf00d where "
            "%s was recorded), so installing the new system's GRUB on it is refused; put the recorded disk back"
            % (disk.path, recorded)])
        with open(disk.path, "rb") as handle:
            assert b"GRUB" not in handle.read(512), "GRUB boot code in the MBR"
        with open(journal) as handle:
            assert json.load(handle)["records"]["image_deploy"]["state"] == "bootloader"
        run("sfdisk", "--disk-id", disk.path, "0x" + recorded, check=False)
        again = deploy(store=store, **args)
        assert again["rc"] == 0 and again["state"] == "complete", again.get("msg")
        with open(disk.path, "rb") as handle:
            assert b"GRUB" in handle.read(512), "no GRUB boot code in the MBR"


def _grubenv(root):
    with open(os.path.join(root, "boot/grub/grubenv")) as handle:
        lines = handle.read().splitlines()[1:]
    return dict(line.split("=", 1) for line in lines if not line.startswith("#"))


# A /boot partition of its own ---------------------------------------------------------------------------------

SEPARATE_BOOT = ("label: dos\nstart=2048, size=96MiB, type=83\nsize=900MiB, type=83\nsize=100MiB, type=83\n")


def _env_of(path):
    with open(path) as handle:
        lines = handle.read().splitlines()[1:]
    return dict(line.split("=", 1) for line in lines if not line.startswith("#"))


@contextlib.contextmanager
def _new_system(root_dev, boot_dev):
    """The new system's root with its /boot partition mounted where its fstab says, as it boots."""
    with mounted(root_dev, readonly=False) as root:
        with mounted(boot_dev, readonly=False) as boot:
            run("mount", "--bind", boot, os.path.join(root, "boot"))
            try:
                yield root
            finally:
                run("umount", os.path.join(root, "boot"))


def test_a_separate_boot_partition_holds_the_new_system_s_boot_grub_and_grubenv_through_cleanup(make_disk,
                                                                                                debian_image, tmp_path):
    disk = make_disk(1100 * MiB, SEPARATE_BOOT)
    boot_dev, dest, store_dev = disk.part(1), disk.part(2), disk.part(3)
    # The old system: /boot with its kernel, GRUB files and the maintenance files maintenance_env left there.
    old_boot = tmp_path / "old-boot"
    secret = os.urandom(4096)
    for name, data in (("vmlinuz-6.1.0-old-amd64", b"old kernel"), ("grub/grub.cfg", b"old menu\n"),
                       ("grub/grubenv", b"# GRUB Environment Block\n".ljust(1024, b"#")),
                       ("inplace/vmlinuz", b"maintenance kernel"), ("inplace/initrd.img", b"maintenance initrd"),
                       ("inplace/overlay.img", secret)):
        (old_boot / name).parent.mkdir(parents=True, exist_ok=True)
        (old_boot / name).write_bytes(data)
    run("mkfs.ext4", "-q", "-F", "-d", str(old_boot), boot_dev)
    boot_uuid = blkid(boot_dev, "UUID")
    old_root = str(tmp_path / "old-root")
    images.write_root(old_root, "labpc09", users=[], files={"etc/fstab": (
        "UUID=11111111-2222-3333-4444-555555555555 / ext4 errors=remount-ro 0 1\n"
        "UUID=%s /boot ext4 defaults 0 2\n" % boot_uuid), "boot/.keep": ""})
    run("mkfs.ext4", "-q", "-F", "-d", old_root, dest)
    run("mkfs.ext4", "-q", "-F", "-L", LABEL, store_dev)
    args = dict(src=debian_image, checksum=checksum_of(debian_image), dest=dest,
                maintenance_cmdline="console=ttyS0,115200 inplace.maintenance")
    with mounted(store_dev, readonly=False) as store:
        result = deploy(store=store, **args)
        assert result["rc"] == 0, result.get("msg")
        uuid = result["filesystem"]["uuid"]
        entry = "gnulinux-simple-" + uuid
        assert result["bootloader"]["boot"] == os.path.realpath(boot_dev)
        assert result["fixups"]["boot"]["removed"] == ["grub", "vmlinuz-6.1.0-old-amd64"]
        assert result["fixups"]["fstab"]["carried"] == ["UUID=%s /boot" % boot_uuid]
        with open(disk.path, "rb") as handle:
            head = handle.read(2048 * 512)
        assert b"GRUB" in head[:512], "no GRUB boot code in the MBR"
        with mounted(boot_dev) as boot:
            # The core image behind the MBR is the one grub-install made for the /boot partition (its prefix
            # is in the compressed part): as embedded but for the header grub-setup patches (first 1 KiB).
            with open(os.path.join(boot, "grub/i386-pc/core.img"), "rb") as handle:
                core = handle.read()
            assert len(core) > 16 * 1024 and head[512 + 1024:512 + len(core)] == core[1024:]
            assert sorted(os.listdir(boot)) == ["System.map-6.1.0-57-cloud-amd64", "config-6.1.0-57-cloud-amd64",
                                                "grub", "initrd.img-6.1.0-57-cloud-amd64", "inplace", "lost+found",
                                                "vmlinuz-6.1.0-57-cloud-amd64"]
            assert os.path.exists(os.path.join(boot, "grub/i386-pc/core.img"))
            with open(os.path.join(boot, "grub/grub.cfg")) as handle:
                config = handle.read()
            # Paths as GRUB sees the /boot partition, found by its UUID; the kernel's root= is the new root.
            assert "search --no-floppy --fs-uuid --set=root %s" % boot_uuid in config
            assert "linux\t/vmlinuz-6.1.0-57-cloud-amd64 root=UUID=%s " % uuid in config
            assert "--id inplace-maintenance" in config and "linux\t/boot/" not in config
            assert _env_of(os.path.join(boot, "grub/grubenv")) == {"saved_entry": "inplace-maintenance",
                                                                   "next_entry": entry}
            with open(os.path.join(boot, "inplace/overlay.img"), "rb") as handle:
                assert handle.read() == secret
        with mounted(dest) as root:
            fstab = [line.split() for line in open(os.path.join(root, "etc/fstab")) if not line.startswith("#")]
            assert ["UUID=%s" % boot_uuid, "/boot", "ext4", "defaults", "0", "2"] in fstab
            # Underneath the mount point the image's /boot stays as written, and no GRUB file of ours is there.
            assert not os.path.exists(os.path.join(root, "boot/grub/grub.cfg"))
            assert not os.path.exists(os.path.join(root, "boot/grub/grubenv"))
        # A first boot cut before the hook confirmed: the re-arm writes the /boot partition's grubenv.
        with mounted(boot_dev, readonly=False) as boot:
            update = os.path.join(boot, "grub/grubenv")
            text = open(update).read().replace("next_entry=%s\n" % entry, "")
            with open(update, "w") as handle:
                handle.write(text.ljust(1024, "#"))
        again = deploy(store=store, **args)
        assert again["rc"] == 0 and again["first_boot_rearmed"] == entry, again.get("msg")
        with mounted(boot_dev) as boot:
            assert _env_of(os.path.join(boot, "grub/grubenv")) == {"saved_entry": "inplace-maintenance",
                                                                   "next_entry": entry}
        # The first boot, with /boot mounted as the new system mounts it: the hook confirms on that partition.
        with _new_system(dest, boot_dev) as root:
            program = os.path.join(root, "usr/local/sbin/inplace-firstboot")
            proc = subprocess.run([sys.executable, "-I", program, "--root", root, "--no-restore"],
                                  capture_output=True, text=True, check=False)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert _env_of(os.path.join(root, "boot/grub/grubenv")) == {"saved_entry": entry}
    # Cleanup in the new system: the role's grubenv command, then store_cleanup, with /boot mounted.
    with _new_system(dest, boot_dev) as root:
        with _chroot_binds(root):
            run("chroot", root, "grub-editenv", "/boot/grub/grubenv", "unset", "saved_entry", "next_entry")
        done = adhoc.module("store_cleanup", {"root": root, "mode": "keep"})
        assert done["rc"] == 0 and done["state"] == "complete", done.get("msg")
        assert sorted(os.path.relpath(path, root) for path in done["maintenance_files_removed"]) == [
            "boot/inplace/initrd.img", "boot/inplace/overlay.img", "boot/inplace/vmlinuz"]
    with mounted(boot_dev) as boot:
        assert _env_of(os.path.join(boot, "grub/grubenv")) == {}
        assert not os.path.exists(os.path.join(boot, "inplace"))
        assert "vmlinuz-6.1.0-57-cloud-amd64" in os.listdir(boot)
    with open(boot_dev, "rb") as handle:
        assert secret not in handle.read(), "the overlay's bytes are still on the /boot partition"


@contextlib.contextmanager
def _chroot_binds(root):
    done = []
    try:
        for name in ("dev", "proc", "sys"):
            run("mount", "--bind", "/" + name, os.path.join(root, name))
            done.append(os.path.join(root, name))
        yield
    finally:
        for path in reversed(done):
            run("umount", path)
