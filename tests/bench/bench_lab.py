"""Measure the lab and the maintenance environment under QEMU TCG: sizes, RAM, times to SSH.

    python tests/bench/bench_lab.py   (as root, in ./dev shell; builds or reuses the cached images)

- maintenance environment: initramfs bytes and unpacked size (from its build summary);
  the least memory it boots with (tries --memory values from small to large); the time
  from QEMU start to an SSH login (``-kernel``/``-initrd``, with a per-host overlay);
- lab PCs: start to SSH login for one PC alone and for two started together.
The baseline is the old PC's own boot from its disk in the same run (a Debian 12
through GRUB); the ratio is maintenance / baseline (below 1.0: maintenance boots faster).
Timings under TCG vary by several seconds from run to run, and with other load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.support import adhoc  # noqa: E402

sys.path.insert(0, adhoc.collections_root())

from tests.lab import images, machines, maintenance  # noqa: E402

ADMIN = {"name": "benchadmin", "uid": 990, "gid": 990}


def lab_start(work, layouts):
    lab = machines.Lab(tempfile.mkdtemp(prefix="lab-", dir=work))
    try:
        lab.add(len(layouts), layouts)
        return lab.start(timeout=900)
    finally:
        lab.stop(timeout=60)


def least_memory(base, work, sizes):
    """{MiB: seconds to SSH or None} from the smallest size up, until one boots."""
    results = {}
    for memory in sizes:
        directory = tempfile.mkdtemp(prefix="maint-%d-" % memory, dir=work)
        try:
            with maintenance.booted(base, directory, "bench-pc", ADMIN, memory=memory, timeout=240) as (_ssh, seconds):
                results[memory] = seconds
                break
        except (maintenance.BootFailed, machines.LabError):
            results[memory] = None
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", type=int, nargs="+", default=[384, 448, 512, 640, 768],
                        help="memory sizes (MiB) to try booting the maintenance environment with")
    parser.add_argument("--boot-memory", type=int, default=1024, help="memory for the boot time measurement")
    args = parser.parse_args()
    base = images.maintenance_base()
    images.old_pc("msdos")
    images.old_pc("gpt")
    with tempfile.TemporaryDirectory(prefix="inplace-bench-lab-") as work:
        one = lab_start(work, ["msdos"])
        two = lab_start(work, ["msdos", "gpt"])
        with maintenance.booted(base, tempfile.mkdtemp(dir=work), "bench-pc", ADMIN,
                                memory=args.boot_memory) as (_ssh, boot_seconds):
            pass
        memory = least_memory(base, work, args.memory)
    report = {
        "maintenance": {
            "initrd_bytes": base["initrd_bytes"], "kernel_bytes": base["kernel_bytes"],
            "unpacked_bytes": base["unpacked_bytes"], "build_seconds": base["seconds"],
            "boot_to_ssh_seconds": boot_seconds, "boot_memory_mib": args.boot_memory,
            "memory_tried": memory,
        },
        "lab": {"one_pc_start_to_ssh_seconds": one, "two_pcs_start_to_ssh_seconds": two},
        "ratio_maintenance_boot_to_old_pc_boot": round(boot_seconds / one["pc1"], 2),
    }
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
