"""partition_space alone on a throw-away loop disk, layout before and after (a one-minute demo).

Builds a 4 GiB sparse disk with one ext4 partition filling it (and some files),
runs tools/demo/partition_space.yml against it, shows the disk, removes the store
again (the partition grows back), and always detaches the disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)

from tests.support import adhoc  # noqa: E402
from tests.support.loopdisk import GiB, MiB, loop_disk, mounted, run, tree_digests, write_tree  # noqa: E402


def show(title, disk):
    print("\n--- %s ---" % title)
    print(run("parted", "-s", disk.path, "unit", "MiB", "print").stdout.strip())
    sys.stdout.flush()


def playbook(*extra):
    command = ["ansible-playbook", os.path.join(TOP, "tools", "demo", "partition_space.yml")] + list(extra)
    return subprocess.run(command, env=adhoc.environment(), check=False).returncode


def main():
    with tempfile.TemporaryDirectory(prefix="inplace-demo-") as work:
        digests = write_tree(os.path.join(work, "home"), files=200, file_size=512 * 1024, big=256 * MiB)
        with loop_disk(4 * GiB, "label: dos\nstart=2048, type=83\n", directory=work) as disk:
            run("mkfs.ext4", "-q", "-F", "-L", "system", "-d", os.path.join(work, "home"), disk.part(1))
            show("before: one ext4 partition fills the disk", disk)
            if playbook("-e", "inplace_demo_disk=%s" % disk.path) != 0:
                return 1
            show("after: partition 1 shrunk, the store behind it", disk)
            print("\n--- removing the store: partition 1 and its filesystem grow back ---")
            sys.stdout.flush()
            result = adhoc.module("partition_space", {"disk": disk.path, "state": "absent"}, diff=True)
            print("\n".join(result["actions"]))
            show("after removal", disk)
            with mounted(disk.part(1), options=["noload"]) as directory:
                same = tree_digests(directory) == digests
            print("\nall %d files on partition 1 unchanged (sha256): %s" % (len(digests), same))
            return 0 if same and result["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
