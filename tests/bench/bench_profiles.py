"""Capture and restore throughput against plain tar | zstd, and the module's peak memory.

    ./dev shell, then: python tests/bench/bench_profiles.py [--size-mib 1024] [--rounds 2]   (as root)

Builds a home of about --size-mib MiB (many small text files, a few large ones, one
of them random) on a loop ext4 filesystem, then times, in the same run and on the
same tree:
  baseline capture   tar --xattrs --xattrs-include='*' --acls --sparse --numeric-owner -cf - | zstd -T0
  module capture     profile_capture (walk, archive, hash, read back and verify, manifest)
  baseline restore   zstd -d | tar -x with the same flags
  module restore     profile_restore (verify, checked extraction, account, move into place)
The modules run in a launcher process (no Ansible controller around them) that
reports its own peak RSS (VmHWM) and, separately, the largest of its children's.
Ratios are baseline time / module time (1.0: no overhead; higher is better).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, TOP)

from tests.support import adhoc  # noqa: E402
from tests.support.loopdisk import GiB, MiB, loop_disk, mounted, run  # noqa: E402

TAR_FLAGS = ["--xattrs", "--xattrs-include=*", "--acls", "--sparse", "--numeric-owner"]
LAUNCHER = r'''
import json, resource, runpy, sys
module, args, out = sys.argv[1:4]
sys.argv = [module, args]
stdout = sys.stdout
sys.stdout = open(out, "w")
try:
    runpy.run_path(module, run_name="__main__")
except SystemExit:
    pass
sys.stdout.close()
with open("/proc/self/status") as handle:
    peak = [int(line.split()[1]) for line in handle if line.startswith("VmHWM")][0]
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
stdout.write(json.dumps({"python_peak_kib": peak, "children_peak_kib": children}))
'''


def build_tree(home, size):
    """Many small text files (a typical profile), a few large files, one of them random."""
    rng = random.Random(7)
    letters = b"abcdefghijklmnopqrstuvwxyz"
    words = [bytes(rng.choices(letters, k=rng.randint(2, 9))) for unused in range(4000)]
    line_pool = [b" ".join(rng.choices(words, k=12)) + b"\n" for unused in range(20000)]

    def text(length):
        out = bytearray()
        while len(out) < length:
            out += b"".join(rng.choices(line_pool, k=64))
        return bytes(out[:length])

    written = 0
    small_budget = size * 3 // 10
    index = 0
    while written < small_budget:
        directory = os.path.join(home, "Documents", "project%03d" % (index // 100))
        os.makedirs(directory, exist_ok=True)
        length = int(rng.expovariate(1 / 12000)) + 10
        with open(os.path.join(directory, "note%05d.txt" % index), "wb") as handle:
            handle.write(text(length))
        written += length
        index += 1
    os.makedirs(os.path.join(home, "Videos"), exist_ok=True)
    with open(os.path.join(home, "Videos", "clip.bin"), "wb") as handle:
        for unused in range(size // 10 // MiB):
            handle.write(os.urandom(MiB))
    written += size // 10
    with open(os.path.join(home, "Documents", "big-log.txt"), "wb") as handle:
        while written < size:
            chunk = text(8 * MiB)
            handle.write(chunk)
            written += len(chunk)
    return index


def launch(module, args, workdir):
    args_file = os.path.join(workdir, "args.json")
    with open(args_file, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    launcher = os.path.join(workdir, "launcher.py")
    with open(launcher, "w") as handle:
        handle.write(LAUNCHER)
    out = os.path.join(workdir, "result.json")
    env = dict(os.environ, PYTHONPATH=adhoc.collections_root())
    path = os.path.join(TOP, "plugins", "modules", module + ".py")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, launcher, path, args_file, out], capture_output=True, text=True,
                          env=env, check=True)
    elapsed = time.monotonic() - started
    with open(out) as handle:
        result = json.load(handle)
    if result.get("failed"):
        raise SystemExit("%s failed: %s" % (module, result.get("msg")))
    return elapsed, json.loads(proc.stdout), result


def shell(command):
    started = time.monotonic()
    subprocess.run(command, shell=True, check=True)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = args.size_mib * MiB
    tree_mib = (size * 3 // 2) // MiB + 256
    layout = "label: gpt\nsize=%dMiB\nsize=%dMiB\nsize=%dMiB\n" % (tree_mib, size // MiB + 256, tree_mib)
    with tempfile.TemporaryDirectory(prefix="inplace-bench-") as work, \
            loop_disk(size * 5 + 2 * GiB, layout, directory=work) as disk:
        for number in (1, 2, 3):
            run("mkfs.ext4", "-q", "-F", disk.part(number))
        with mounted(disk.part(1), readonly=False) as old, mounted(disk.part(2), readonly=False) as store, \
                mounted(disk.part(3), readonly=False) as new:
            for root in (old, new):
                os.makedirs(os.path.join(root, "etc"))
                with open(os.path.join(root, "etc/passwd"), "w") as handle:
                    handle.write("root:x:0:0:root:/root:/bin/sh\n" +
                                 ("alice:x:1000:1000::/home/alice:/bin/sh\n" if root == old else ""))
                for name, text in (("group", "root:x:0:\n" + ("alice:x:1000:\n" if root == old else "")),
                                   ("shadow", "root:*:1::::::\n"), ("gshadow", "root:*::\n")):
                    with open(os.path.join(root, "etc", name), "w") as handle:
                        handle.write(text)
                os.makedirs(os.path.join(root, "home"))
            home = os.path.join(old, "home/alice")
            files = build_tree(home, size)
            subprocess.run(["chown", "-R", "1000:1000", home], check=True)
            subprocess.run(["sync"], check=True)
            tar = "tar --create --format=pax %s -C %s -f - ." % (" ".join("'%s'" % f for f in TAR_FLAGS), home)
            shell("%s | zstd -q -T0 -c > /dev/null" % tar)  # page cache warm for both contenders
            baseline_archive = os.path.join(store, "baseline.tar.zst")
            target = os.path.join(new, "baseline-restore")
            times = {"baseline capture": [], "module capture": [], "baseline restore": [], "module restore": []}
            memory = {}
            for unused_round in range(args.rounds):
                # The module fsyncs its archive, so the baseline fsyncs its own (sync FILE).
                times["baseline capture"].append(shell("%s | zstd -q -T0 -c > %s && sync %s" % (
                    tar, baseline_archive, baseline_archive)))
                shutil.rmtree(os.path.join(store, "inplace"), ignore_errors=True)
                elapsed, peak, captured = launch("profile_capture", {"root": old, "store": store, "users": ["alice"]},
                                                 work)
                subprocess.run(["sync"], check=True)
                times["module capture"].append(elapsed)
                memory["capture"] = peak

                for leftover in (target, os.path.join(new, "home/alice")):
                    shutil.rmtree(leftover, ignore_errors=True)
                os.makedirs(target)
                subprocess.run(["sync"], check=True)
                # The module syncs what it restored before recording it, so the baseline syncs too.
                times["baseline restore"].append(shell(
                    "zstd -q -d -c %s | tar -x %s -C %s -f - && sync" % (
                        baseline_archive, " ".join("'%s'" % f for f in TAR_FLAGS), target)))
                subprocess.run(["sync"], check=True)
                shutil.rmtree(target)
                # Forget the last restore: the store's journal, and the record in the root restored into.
                for path in (os.path.join(store, "inplace", "journal.json"),
                             os.path.join(new, "var/lib/inplace-migration/restored.json")):
                    if os.path.exists(path):
                        os.unlink(path)
                elapsed, peak, unused_result = launch(
                    "profile_restore", {"store": store, "root": new, "accounts": "skip"}, work)
                subprocess.run(["sync"], check=True)
                times["module restore"].append(elapsed)
                memory["restore"] = peak
    best = {k: min(v) for k, v in times.items()}
    print("tree: %d MiB, %d files; archive %.0f MiB (zstd -3)" % (
        args.size_mib, files + 3, captured["users"][0]["archive_bytes"] / MiB))
    for key in ("baseline capture", "module capture", "baseline restore", "module restore"):
        every = ", ".join("%.2f" % t for t in times[key])
        print("%-17s best of %d: %6.2f s   (all: %s)" % (key, args.rounds, best[key], every))
    print("capture ratio (baseline/module): %.2f" % (best["baseline capture"] / best["module capture"]))
    print("restore ratio (baseline/module): %.2f" % (best["baseline restore"] / best["module restore"]))
    for phase in ("capture", "restore"):
        print("%s peak RSS: module python %.1f MB, largest child (tar/zstd) %.1f MB" % (
            phase, memory[phase]["python_peak_kib"] / 1024, memory[phase]["children_peak_kib"] / 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())
