"""Throw-away disks: sparse image files attached as loop devices, always detached again.

This kernel has no partition-table parsers, so partition nodes come from
``partx -a`` after attaching and go with ``partx -d`` before detaching.
Only devices this module attached are ever touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
import time

MiB = 1024 * 1024
GiB = 1024 * MiB


def run(*args, check=True, **kwargs):
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True, **kwargs)


class LoopDisk:
    def __init__(self, image, device):
        self.image = image
        self.path = device

    def part(self, number):
        return "%sp%d" % (self.path, number)

    def refresh(self):
        """Make the kernel's partition nodes match the table (after a change made behind its back)."""
        run("partx", "-d", self.path, check=False)
        run("partx", "-a", self.path, check=False)

    def table(self):
        """The partition table as sfdisk reads it from the image (the bytes, not the kernel's view)."""
        import json
        return json.loads(run("sfdisk", "--json", self.path).stdout)["partitiontable"]

    def digest(self):
        """sha256 of every byte of the disk image."""
        sha = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(4 * MiB), b""):
                sha.update(block)
        return sha.hexdigest()


def _detach(device):
    for unused_attempt in range(50):
        run("partx", "-d", device, check=False)
        if run("losetup", "-d", device, check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("could not detach %s" % device)


def _unmount_under(device):
    """Unmount anything mounted from ``device`` or its partitions (a failed test may leave mounts)."""
    with open("/proc/self/mountinfo") as handle:
        entries = [line.split(" - ")[1].split()[1:2] + [line.split()[4]] for line in handle]
    for source, mountpoint in reversed(entries):
        if source == device or source.startswith(device + "p"):
            run("umount", "-l", mountpoint, check=False)


@contextlib.contextmanager
def loop_disk(size, sfdisk_script=None, directory=None):
    """A sparse disk image of ``size`` bytes, partitioned by ``sfdisk_script``, attached as a loop device."""
    handle, image = tempfile.mkstemp(prefix="inplace-disk-", suffix=".img", dir=directory)
    os.close(handle)
    device = None
    try:
        os.truncate(image, size)
        if sfdisk_script:
            run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", image, input=sfdisk_script)
        device = run("losetup", "--find", "--show", image).stdout.strip()
        run("partx", "-a", device, check=False)
        yield LoopDisk(image, device)
    finally:
        if device:
            _unmount_under(device)
            _detach(device)
        os.unlink(image)


@contextlib.contextmanager
def mounted(device, readonly=True, options=None):
    directory = tempfile.mkdtemp(prefix="inplace-test-mnt-")
    opts = ["ro"] if readonly else []
    opts += options or []
    try:
        run("mount", *(["-o", ",".join(opts)] if opts else []), device, directory)
        try:
            yield directory
        finally:
            run("umount", directory)
    finally:
        os.rmdir(directory)


def tree_digests(root):
    """{relative path: sha256} of every regular file under ``root``."""
    digests = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            sha = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(4 * MiB), b""):
                    sha.update(block)
            digests[os.path.relpath(path, root)] = sha.hexdigest()
    return digests


def write_tree(root, files=40, file_size=256 * 1024, big=0, seed=0):
    """Fill ``root`` with pseudo-random files (and one ``big`` file) to checksum after a change."""
    import random
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    for index in range(files):
        sub = os.path.join(root, "dir%02d" % (index % 7))
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, "file%03d.bin" % index), "wb") as handle:
            handle.write(rng.randbytes(rng.randint(1, file_size)))
    if big:
        with open(os.path.join(root, "big.bin"), "wb") as handle:
            remaining = big
            while remaining:
                chunk = min(remaining, 8 * MiB)
                handle.write(rng.randbytes(chunk))
                remaining -= chunk
    return tree_digests(root)
