"""The shrink window, measured: kill e2fsck and resize2fs part way through a shrink that moves data.

The store is made by shrinking the filesystem that holds the only copy of the profiles,
before they are captured. This script builds an ext4 filesystem on a loop device whose
shrink moves well over a GiB (files written across the whole filesystem, then every other
one deleted, so the upper part still holds data), records every file's sha256, and then,
for each kill point, starts from a pristine copy, runs the shrink as partition_space does
(``e2fsck -f -p``, then ``resize2fs`` to the target), SIGKILLs the tool at that fraction of
its measured run time, and recovers as a rerun of the module would: ``e2fsck -f -p`` (what
the module runs first) and ``resize2fs`` again. With ``--undo`` each resize2fs keeps an undo
file outside the filesystem (``resize2fs -z``), and a kill is recovered by replaying it with
``e2undo`` before anything else. Each point's outcome is: e2fsck's verdict, whether the rerun
shrink completed, and how many files differ from the listing.

    ./dev shell -c 'python tests/faults/shrink_window.py --size-gib 6 --points 10'

It touches only the image files and loop devices it makes, in --workdir.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MiB = 1024 * 1024
GiB = 1024 * MiB
FILE_BYTES = 64 * MiB


def run(*args, check=True):
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True)


class Loop:
    def __init__(self, image):
        self.image = image
        self.device = None

    def __enter__(self):
        self.device = run("losetup", "--find", "--show", self.image).stdout.strip()
        return self.device

    def __exit__(self, *exc):
        for unused in range(50):
            if run("losetup", "-d", self.device, check=False).returncode == 0:
                return False
            time.sleep(0.1)
        raise RuntimeError("could not detach %s" % self.device)


class Mounted:
    def __init__(self, device, readonly=True):
        self.device, self.readonly = device, readonly
        self.path = None

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="shrink-window-mnt-")
        run("mount", "-o", "ro" if self.readonly else "rw", self.device, self.path)
        return self.path

    def __exit__(self, *exc):
        run("umount", self.path)
        os.rmdir(self.path)
        return False


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 * MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def listing(root):
    found = {}
    for base, unused_dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            found[os.path.relpath(path, root)] = sha256(path)
    return found


def build(image, size):
    """An ext4 filesystem of ``size`` whose data is spread to its end; returns (listing, used bytes)."""
    with open(image, "wb") as handle:
        handle.truncate(size)
    run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", image)
    with Loop(image) as device, Mounted(device, readonly=False) as root:
        count = int(size * 0.85) // FILE_BYTES
        for index in range(count):
            directory = os.path.join(root, "user%02d" % (index % 7), "dir%03d" % (index // 7))
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, "file%04d" % index), "wb") as handle:
                for unused in range(FILE_BYTES // MiB):
                    handle.write(os.urandom(MiB))
        for index in range(0, count, 2):
            os.unlink(os.path.join(root, "user%02d" % (index % 7), "dir%03d" % (index // 7), "file%04d" % index))
        run("sync")
        stat = os.statvfs(root)
        used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
        return listing(root), used


def shrink_target(used):
    return (used + used // 5 + 256 * MiB) // MiB * MiB


def resize_command(device, target, undo):
    command = ["resize2fs", "-f"]
    if undo:
        command += ["-z", undo]
    return command + [device, "%dK" % (target // 1024)]


def timed(command):
    started = time.monotonic()
    run(*command)
    return time.monotonic() - started


def kill_after(command, seconds):
    """Start ``command``, SIGKILL it after ``seconds``; True when it was still running then."""
    proc = subprocess.Popen([str(a) for a in command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def trial(pristine, work, tool, fraction, duration, target, expected, undo):
    image = os.path.join(work, "trial.img")
    run("cp", "--sparse=always", pristine, image)
    undo_file = os.path.join(work, "resize.undo") if undo else None
    if undo_file and os.path.exists(undo_file):
        os.unlink(undo_file)
    result = {"tool": tool, "at": round(fraction, 2)}
    with Loop(image) as device:
        if tool == "e2fsck":
            result["killed"] = kill_after(["e2fsck", "-f", "-p", device], duration * fraction)
        else:
            run("e2fsck", "-f", "-p", device, check=False)
            result["killed"] = kill_after(resize_command(device, target, undo_file), duration * fraction)
            if undo_file and result["killed"] and os.path.exists(undo_file):
                result["e2undo"] = run("e2undo", undo_file, device, check=False).returncode
        # The rerun: partition_space starts again from what is on the disk.
        fsck = run("e2fsck", "-f", "-p", device, check=False)
        result["e2fsck_rc"] = fsck.returncode
        if fsck.returncode not in (0, 1):
            result["e2fsck_y_rc"] = run("e2fsck", "-f", "-y", device, check=False).returncode
        rerun = run(*resize_command(device, target, None), check=False)
        result["rerun_ok"] = rerun.returncode == 0
        result["clean_after"] = run("e2fsck", "-f", "-n", device, check=False).returncode == 0
        with Mounted(device) as root:
            found = listing(root)
    os.unlink(image)
    return judged(result, expected, found)


def judged(result, expected, found):
    """``result`` with the files found after the rerun held to those written before, and its verdict."""
    result["files_missing"] = len(set(expected) - set(found))
    result["files_changed"] = sum(1 for name, digest in found.items() if expected.get(name) not in (None, digest))
    result["files_extra"] = len(set(found) - set(expected))
    result["intact"] = result["files_missing"] == 0 and result["files_changed"] == 0 and result["clean_after"]
    return result


def print_header(cut, stopped):
    print("| tool | %s at | %s | e2fsck -p after | rerun shrink | clean | files missing | files changed |" % (cut, stopped))
    print("|---|---|---|---|---|---|---|---|")


def print_row(tool, fraction, at_seconds, stopped, result):
    print("| %s | %d%% (%.1f s) | %s | %s | %s | %s | %d | %d |" % (
        tool, fraction * 100, at_seconds, stopped, result["e2fsck_rc"], "ok" if result["rerun_ok"] else "failed",
        "yes" if result["clean_after"] else "NO", result["files_missing"], result["files_changed"]), flush=True)


def finish(results, json_path, summary):
    """Write the results (with ``summary``) to ``json_path`` if given, say how many points lost data; exit code."""
    if json_path:
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump(dict(summary, results=results), handle, indent=1)
    lost = [result for result in results if not result["intact"]]
    print("%d of %d points lost or damaged data" % (len(lost), len(results)))
    return 1 if lost else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--size-gib", type=float, default=6.0)
    parser.add_argument("--points", type=int, default=10, help="kill points in resize2fs's run")
    parser.add_argument("--fsck-points", type=int, default=2, help="kill points in e2fsck's run")
    parser.add_argument("--undo", action="store_true", help="resize2fs keeps an undo file outside the filesystem")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", help="write the results here as well")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="shrink-window-", dir=args.workdir)
    try:
        pristine = os.path.join(work, "pristine.img")
        expected, used = build(pristine, int(args.size_gib * GiB))
        target = shrink_target(used)
        measure = os.path.join(work, "measure.img")
        run("cp", "--sparse=always", pristine, measure)
        with Loop(measure) as device:
            fsck_seconds = timed(["e2fsck", "-f", "-p", device])
            before = int(run("dumpe2fs", "-h", device).stdout.split("Free blocks:")[1].split()[0])
            resize_seconds = timed(resize_command(device, target, None))
        os.unlink(measure)
        print("filesystem %.1f GiB, %d files, %.2f GiB used, shrunk to %.2f GiB; e2fsck %.1f s, resize2fs %.1f s "
              "(free blocks before %d)" % (args.size_gib, len(expected), used / GiB, target / GiB, fsck_seconds,
                                           resize_seconds, before), flush=True)
        results = []
        points = [("e2fsck", (i + 1) / (args.fsck_points + 1), fsck_seconds) for i in range(args.fsck_points)]
        points += [("resize2fs", (i + 1) / (args.points + 1), resize_seconds) for i in range(args.points)]
        print_header("killed", "killed")
        for tool, fraction, duration in points:
            result = trial(pristine, work, tool, fraction, duration, target, expected, args.undo)
            results.append(result)
            print_row(tool, fraction, fraction * duration, "yes" if result["killed"] else "finished first", result)
        return finish(results, args.json, {"size": args.size_gib, "used": used, "target": target,
                                           "fsck_seconds": fsck_seconds, "resize_seconds": resize_seconds})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
