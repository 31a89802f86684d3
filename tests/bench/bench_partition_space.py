"""Time partition_space making a store by shrinking ext4, against the same work done with plain tools.

    ./dev shell -c 'python tests/bench/bench_partition_space.py'   (as root)

Two identical disks: a 2 GiB msdos disk whose one ext4 partition holds --data bytes
of files. On one, the module makes a --store store; on the other, the plain tools
do the same steps (e2fsck -f, resize2fs -f, sfdisk, mkfs.ext4). Prints both wall times
and their ratio (plain / module: 1.0 means no overhead; higher is better).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.support import adhoc  # noqa: E402
from tests.support.loopdisk import GiB, loop_disk, mounted, run, write_tree  # noqa: E402


def plain_tools(disk, store_bytes):
    """The same change by hand, sized as the module sized it."""
    part = disk.part(1)
    table = disk.table()["partitions"]
    start = table[0]["start"]
    end_sector = (2 * GiB - store_bytes) // 512
    run("e2fsck", "-f", "-p", part)
    run("resize2fs", "-f", part, "%dK" % ((end_sector - start) * 512 // 1024))
    script = "label: dos\nstart=%d, size=%d, type=83\nstart=%d, type=83\n" % (start, end_sector - start, end_sector)
    run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", disk.path, input=script)
    disk.refresh()
    run("mkfs.ext4", "-F", "-q", "-m", "0", "-L", "INPLACE-STORE", disk.part(2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=int, default=1 * GiB, help="bytes of files in the filesystem")
    parser.add_argument("--store", default="512MiB", help="store size asked of the module")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inplace-bench-") as work:
        tree = os.path.join(work, "tree")
        write_tree(tree, files=2000, file_size=256 * 1024, big=max(0, args.data - 2000 * 128 * 1024))
        times = {}
        with loop_disk(2 * GiB, "label: dos\nstart=2048, type=83\n", directory=work) as module_disk, \
                loop_disk(2 * GiB, "label: dos\nstart=2048, type=83\n", directory=work) as plain_disk:
            for disk in (module_disk, plain_disk):
                # Copied in through a mount, so ext4's allocator spreads the files over the
                # block groups as on a used system, and the shrink has blocks to move.
                run("mkfs.ext4", "-q", "-F", disk.part(1))
                with mounted(disk.part(1), readonly=False) as directory:
                    run("cp", "-a", tree + "/.", directory)
            started = time.monotonic()
            planned = adhoc.module("partition_space", {"disk": module_disk.path, "size": args.store}, check=True)
            times["plan"] = time.monotonic() - started
            started = time.monotonic()
            result = adhoc.module("partition_space", {"disk": module_disk.path, "size": args.store})
            times["module"] = time.monotonic() - started
            if planned["rc"] != 0 or result["rc"] != 0:
                print(result.get("msg"))
                return 1
            started = time.monotonic()
            plain_tools(plain_disk, result["store"]["size"])
            times["plain"] = time.monotonic() - started
        print("shrink of a 2 GiB ext4 filesystem holding %.2f GiB of files, %s store:" % (args.data / GiB, args.store))
        for step in result["actions"]:
            print("  " + step)
        print("module, check mode (ansible start-up, reading the disk, planning): %6.2f s" % times["plan"])
        print("module, the change (the same, then every step and its checks):    %6.2f s" % times["module"])
        print("plain tools (e2fsck -f, resize2fs -f, sfdisk, mkfs.ext4):         %6.2f s" % times["plain"])
        print("ratio plain/module: %.2f" % (times["plain"] / times["module"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
