"""README's first command: migrate the two-PC lab from Debian 12 to Debian 13 in place.

Builds (or finds cached) the lab's images, starts two lab PCs under QEMU (one on an
msdos disk, one on GPT; --layout picks others, e.g. one PC alone) with the image server, prints each PC's disk and users,
runs playbooks/inplace_migrate.yml on both in parallel, prints the per-phase times
and where the fleet report is, and stops the lab, also when something failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)

from tests.lab import machines  # noqa: E402
from tests.lab.lab import main as lab_main  # noqa: E402
from tests.support import adhoc  # noqa: E402


def say(text):
    print("\n==> %s" % text, flush=True)


def on_pc(lab, name, command):
    return subprocess.run(lab.ssh_command(name, command), capture_output=True, text=True, check=False).stdout


def show(lab, title):
    say(title)
    for name in sorted(lab.pcs):
        print("--- %s (%s)" % (name, lab.pcs[name]["layout"]))
        print(on_pc(lab, name, "grep PRETTY_NAME /etc/os-release; sudo sfdisk --list /dev/vda | tail -n +8; "
                               "id alice; id bob").rstrip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default=os.path.join(os.environ.get("INPLACE_CACHE", os.path.expanduser(
        "~/.cache/inplace-migration")), "demo-lab"), help="the lab's directory (default: %(default)s)")
    parser.add_argument("--image", default="debian13.tar.zst", choices=["debian13.tar.zst", "debian13.raw.zst"])
    parser.add_argument("--layout", action="append", choices=["msdos", "gpt"],
                        help="one lab PC per use, on a disk of this label (default: one msdos, one gpt)")
    args = parser.parse_args()
    layouts = args.layout or ["msdos", "gpt"]
    pcs = "%d lab PCs" % len(layouts) if len(layouts) > 1 else "one lab PC"
    say("building the lab's images (cached after the first time: Debian 12 PCs, Debian 13 image, maintenance)")
    if lab_main(["build"]) != 0:
        return 1
    lab = machines.Lab(args.lab)
    if lab.pcs:
        lab.stop()
    try:
        say("starting %s (QEMU, software emulation) and the image server" % pcs)
        started = subprocess.run([sys.executable, os.path.join(TOP, "tests/lab/lab.py"), "start", "--lab", args.lab,
                                  "--serve-images"] + [option for layout in layouts for option in ("--layout", layout)],
                                 capture_output=True, text=True, check=True)
        offered = json.loads(started.stdout)["images"][args.image]
        lab = machines.Lab(args.lab)
        show(lab, "before: Debian 12, one root partition, two users with their profiles")
        reports = os.path.join(args.lab, "reports")
        shutil.rmtree(reports, ignore_errors=True)  # a report merges into its PC's earlier one: start afresh
        variables = os.path.join(args.lab, "migration.json")
        with open(variables, "w", encoding="utf-8") as handle:
            json.dump({"inplace_image_src": offered["url"], "inplace_image_checksum": offered["checksum"],
                       "inplace_image_local": offered["local"], "inplace_report_dir": reports}, handle, indent=2)
        say("migrating %s: ansible-playbook playbooks/inplace_migrate.yml -l lab-pcs "
            "(each phase is a role; a PC reboots twice)" % pcs)
        began = time.monotonic()
        status = subprocess.run(["ansible-playbook", "-i", lab.inventory, "-l", "lab-pcs", "-e", "@" + variables,
                                 os.path.join(TOP, "playbooks", "inplace_migrate.yml")],
                                env=adhoc.environment(), check=False).returncode
        total = time.monotonic() - began
        show(lab, "after: Debian 13, the same users and files, the store gone, the root grown back")
        # Ansible runs a task on every PC before the next task, so PCs migrated together share their phase times.
        say("per-phase times (seconds, in the order the phases ran)")
        for name in sorted(lab.pcs):
            path = os.path.join(reports, name + ".json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    phases = json.load(handle).get("phases", {})
                ran = sorted((times["start"], phase, times["end"] - times["start"])
                             for phase, times in phases.items() if "start" in times and "end" in times)
                print("%s: %s" % (name, ", ".join("%s %.0f" % (phase, seconds) for unused, phase, seconds in ran)))
        print("%s in %.0f s; fleet report: %s" % (pcs, total, os.path.join(reports, "index.html")))
        return status
    finally:
        say("stopping the lab")
        machines.Lab(args.lab).stop()


if __name__ == "__main__":
    sys.exit(main())
