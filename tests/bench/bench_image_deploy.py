"""Time image_deploy writing a raw.zst image, against ``zstd -d | dd oflag=direct`` on the same image and disk.

    ./dev shell -c 'python tests/bench/bench_image_deploy.py'   (as root)

Two images of a --size ext4 filesystem (default 2 GiB): one about half empty, one dense
(--dense-fill of it holding random data). Each is deployed to the same loop-disk partition
by the module (through Ansible, fix-ups and bootloader off, no grow) and by
``zstd -dc IMAGE | dd of=DEST bs=4M oflag=direct conv=fsync``, alternately, --rounds times;
the fastest of each is kept. Every module run is checked byte for byte against the image.
Ratios are dd time / module time (higher is better) for the module as a whole (Ansible
start-up, checksum verification, write) and for its write alone; peak RSS is the module's
own process and, separately, the largest tool it ran (zstd).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.support import adhoc, images  # noqa: E402
from tests.support.loopdisk import GiB, MiB, loop_disk, mounted, run, write_tree  # noqa: E402


def make_image(work, name, size, data_bytes, seed):
    tree = os.path.join(work, name)
    # Files from a few KiB to a few MiB, as on a system partition, plus one big file for the rest.
    write_tree(tree, files=1500, file_size=512 * 1024, big=max(0, data_bytes - 1500 * 256 * 1024), seed=seed)
    raw = images.ext4_image(os.path.join(work, name + ".img"), tree, size=size)
    shutil.rmtree(tree)
    zst = images.convert(raw, "raw.zst", work)
    return raw, zst


def time_dd(zst, dest):
    started = time.monotonic()
    zstd = subprocess.Popen(["zstd", "-dc", zst], stdout=subprocess.PIPE)
    subprocess.run(["dd", "of=" + dest, "bs=4M", "oflag=direct", "conv=fsync", "status=none"], stdin=zstd.stdout,
                   check=True)
    zstd.stdout.close()
    assert zstd.wait() == 0
    return time.monotonic() - started


def time_module(zst, dest, store, raw):
    journal = os.path.join(store, "inplace", "journal.json")
    if os.path.exists(journal):
        os.unlink(journal)  # a fresh deploy each round, not "already deployed"
    args = {"store": store, "src": zst, "checksum": "sha256:" + images.sha256(zst), "dest": dest, "grow": False,
            "fstab": False, "hostname": False, "ssh_host_keys": False, "firstboot": False, "bootloader": "none",
            "require_capture": False}
    started = time.monotonic()
    result = adhoc.module("image_deploy", args)
    elapsed = time.monotonic() - started
    if result["rc"] != 0:
        raise SystemExit("the module failed: %s" % result.get("msg"))
    if images.sha256(dest, os.path.getsize(raw)) != images.sha256(raw):
        raise SystemExit("the module's write does not read back as the image")
    return elapsed, result


def bench(label, raw, zst, dest, store, rounds):
    dd_times, module_runs = [], []
    for unused in range(rounds):
        run("blkdiscard", "-z", dest, check=False)  # same starting point for both
        dd_times.append(time_dd(zst, dest))
        run("blkdiscard", "-z", dest, check=False)
        module_runs.append(time_module(zst, dest, store, raw))
    dd = min(dd_times)
    total, result = min(module_runs, key=lambda item: item[0])
    write = result["timings"]["write"]
    verify = result["timings"].get("verify", 0.0)
    print("\n%s: %s raw, %s as raw.zst; the module wrote %s and zeroed out %s" % (
        label, human(os.path.getsize(raw)), human(os.path.getsize(zst)), human(result["written_bytes"]),
        human(result["zeroed_bytes"])))
    print("  zstd -dc | dd bs=4M oflag=direct conv=fsync   %6.2f s" % dd)
    print("  module, whole run through Ansible             %6.2f s   ratio %.2f" % (total, dd / total))
    print("    of which: checksum verification %5.2f s, write %5.2f s   ratio (write only) %.2f,"
          " (verify + write) %.2f" % (verify, write, dd / write, dd / (verify + write)))
    print("  peak RSS: module %s, largest child (zstd) %s" % (
        human(result["peak_rss"]["module"]), human(result["peak_rss"]["largest_child"])))
    return {"dd": dd, "module": total, "write": write, "verify": verify, "rss": result["peak_rss"]}


def human(size):
    return "%.1f MiB" % (size / MiB) if size < GiB else "%.2f GiB" % (size / GiB)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2 * GiB, help="filesystem size in bytes")
    parser.add_argument("--dense-fill", type=float, default=0.88, help="part of the dense image holding data")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", default=None, help="directory for images and the disk (default: a temporary one)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="inplace-bench-", dir=args.work)
    try:
        half = make_image(work, "half", args.size, args.size // 2, seed=1)
        dense = make_image(work, "dense", args.size, int(args.size * args.dense_fill), seed=2)
        layout = "label: dos\nstart=2048, size=%dKiB, type=83\nsize=64MiB, type=83\n" % (args.size // 1024)
        with loop_disk(args.size + 80 * MiB, layout, directory=work) as disk:
            run("mkfs.ext4", "-q", "-F", "-L", "INPLACE-STORE", disk.part(2))
            with mounted(disk.part(2), readonly=False) as store:
                results = [bench("half-empty", *half, disk.part(1), store, args.rounds),
                           bench("dense", *dense, disk.part(1), store, args.rounds)]
        print("\nratios dd/module (whole run; write only): half-empty %.2f; %.2f   dense %.2f; %.2f" % (
            results[0]["dd"] / results[0]["module"], results[0]["dd"] / results[0]["write"],
            results[1]["dd"] / results[1]["module"], results[1]["dd"] / results[1]["write"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
