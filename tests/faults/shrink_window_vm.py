"""The shrink window under power cuts: e2fsck and resize2fs run in the maintenance environment (QEMU), and the
VM is killed part way through, as a PC whose power goes.

The same filesystem as ``shrink_window.py`` (ext4 of several GiB, its data spread to its end, so that the shrink
moves over a GiB) is attached to the RAM-only maintenance environment as a plain virtio disk (QEMU's default
write-back cache, not ``cache=unsafe``: what the guest had not written out is lost, as on a PC). Per point: a
pristine copy, a boot, ``e2fsck -f -p`` (the module's check) and the shrink started detached in the guest, QEMU
SIGKILLed at that fraction of the tool's measured run time in the VM; then a second boot recovers as a rerun of
partition_space does (``e2fsck -f -p``, ``resize2fs`` to the target) and checks (``e2fsck -f -n``); then every
file is compared with the listing taken when the filesystem was made, on this host, read-only.

    ./dev shell -c 'python tests/faults/shrink_window_vm.py --size-gib 6 --points 10 --fsck-points 2'

It touches only the image files it makes, in --workdir, and the loop device it reads them through.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from tests.support import adhoc  # noqa: E402

sys.path.insert(0, adhoc.collections_root())  # tests.lab.maintenance builds the overlay with the collection's code

from tests.faults.shrink_window import (  # noqa: E402
    GiB, Loop, Mounted, build, finish, judged, listing, print_header, print_row, run, shrink_target)
from tests.lab import images, machines, maintenance  # noqa: E402

HOSTNAME = "shrink-window"
ADMIN = {"name": "labadmin", "uid": 900, "gid": 900, "password_hash": "*", "sudo": True}
DISK = "/dev/vda"


def on_guest(ssh, command, check=True, timeout=1800):
    proc = subprocess.run(ssh + ["sudo", "sh", "-c", "'%s'" % command], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError("%s: %s%s" % (command, proc.stdout, proc.stderr))
    return proc


def tool_command(tool, target):
    return "e2fsck -f -p %s" % DISK if tool == "e2fsck" else "resize2fs -f %s %dK" % (DISK, target // 1024)


def timed_in_vm(base, work, pristine, target):
    """Seconds e2fsck -f -p and resize2fs take in the VM on a pristine copy."""
    image = os.path.join(work, "measure.img")
    run("cp", "--sparse=always", pristine, image)
    seconds = {}
    with maintenance.booted(base, tempfile.mkdtemp(dir=work), HOSTNAME, ADMIN, disks=[image]) as (ssh, _boot):
        for tool in ("e2fsck", "resize2fs"):
            started = time.monotonic()
            on_guest(ssh, tool_command(tool, target))
            seconds[tool] = time.monotonic() - started
    os.unlink(image)
    return seconds


def power_cut_during(base, work, image, tool, seconds, target):
    """Boot, start ``tool`` detached, kill QEMU ``seconds`` later; True when the tool was still running then."""
    directory = tempfile.mkdtemp(dir=work)
    with maintenance.booted(base, directory, HOSTNAME, ADMIN, disks=[image]) as (ssh, _boot):
        if tool == "resize2fs":
            on_guest(ssh, tool_command("e2fsck", target), check=False)
        started = time.monotonic()
        on_guest(ssh, "nohup %s >/run/tool.log 2>&1 </dev/null & echo $! >/run/tool.pid" % tool_command(tool, target))
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        running = on_guest(ssh, "kill -0 $(cat /run/tool.pid)", check=False).returncode == 0
        pid = machines.read_pid(directory, "maint")
        os.kill(pid, 9)
        machines.wait_gone(pid, 10)
    return running


def trial(base, work, pristine, tool, fraction, duration, target, expected):
    image = os.path.join(work, "trial.img")
    run("cp", "--sparse=always", pristine, image)
    result = {"tool": tool, "at": round(fraction, 2), "cut_after": round(fraction * duration, 1)}
    result["killed"] = power_cut_during(base, work, image, tool, fraction * duration, target)
    # The rerun: partition_space starts again from what is on the disk.
    with maintenance.booted(base, tempfile.mkdtemp(dir=work), HOSTNAME, ADMIN, disks=[image]) as (ssh, _boot):
        fsck = on_guest(ssh, "e2fsck -f -p %s" % DISK, check=False)
        result["e2fsck_rc"] = fsck.returncode
        if fsck.returncode not in (0, 1):
            result["e2fsck_y_rc"] = on_guest(ssh, "e2fsck -f -y %s" % DISK, check=False).returncode
        result["rerun_ok"] = on_guest(ssh, tool_command("resize2fs", target), check=False).returncode == 0
        result["clean_after"] = on_guest(ssh, "e2fsck -f -n %s" % DISK, check=False).returncode == 0
        on_guest(ssh, "sync")
    with Loop(image) as device:
        try:
            with Mounted(device) as root:
                found = listing(root)
        except subprocess.CalledProcessError as error:
            result["mount_error"] = error.stderr.strip()
            found = {}
    os.unlink(image)
    return judged(result, expected, found)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--size-gib", type=float, default=6.0)
    parser.add_argument("--points", type=int, default=10, help="power cuts in resize2fs's run")
    parser.add_argument("--fsck-points", type=int, default=2, help="power cuts in e2fsck's run")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", help="write the results here as well")
    args = parser.parse_args()
    base = images.maintenance_base()
    work = tempfile.mkdtemp(prefix="shrink-window-vm-", dir=args.workdir)
    try:
        pristine = os.path.join(work, "pristine.img")
        expected, used = build(pristine, int(args.size_gib * GiB))
        target = shrink_target(used)
        seconds = timed_in_vm(base, work, pristine, target)
        print("filesystem %.1f GiB, %d files, %.2f GiB used, shrunk to %.2f GiB; in the VM e2fsck %.1f s, resize2fs "
              "%.1f s" % (args.size_gib, len(expected), used / GiB, target / GiB, seconds["e2fsck"],
                          seconds["resize2fs"]), flush=True)
        points = [("e2fsck", (i + 1) / (args.fsck_points + 1)) for i in range(args.fsck_points)]
        points += [("resize2fs", (i + 1) / (args.points + 1)) for i in range(args.points)]
        print_header("power cut", "tool still running")
        results = []
        for tool, fraction in points:
            result = trial(base, work, pristine, tool, fraction, seconds[tool], target, expected)
            results.append(result)
            print_row(tool, fraction, result["cut_after"], "yes" if result["killed"] else "no, finished first", result)
        return finish(results, args.json, {"size": args.size_gib, "used": used, "target": target, "seconds": seconds})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
