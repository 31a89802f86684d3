# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The first-boot hook: a run-once program image_deploy installs in the new system.

The new system has no Ansible, so the program is made from this file and the
module_utils it uses (a zip application, ``common.bundle``) and runs on the new
system's own python3. On the first boot that reaches multi-user.target it finds the
store by the identity image_deploy recorded (its PARTUUID, filesystem UUID, label and
disk; by its label alone only when none was recorded), takes the PC's lock (state.lock), records
the confirmation in the journal, makes the new system GRUB's saved default (the
maintenance entry stays in the menu), runs the profile restore from the store if one
is there and not done yet, and on success disables itself. It also disables itself when
the migration is complete (cleanup's record is in the root) and when it gives up after
GIVE_UP_AFTER failed boots: the playbook's own restore phase does the work then, and a
hook left enabled would fail at every boot once the store is gone.

It also holds what the module and the program share about GRUB's environment block
and menu, so both read and write them the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ansible_collections.inplace.migration.plugins.module_utils.common.bundle import zipapp
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk.mount import disk_holding, mountpoint_of, temporary_mount
from ansible_collections.inplace.migration.plugins.module_utils.boot.grub import boot_not_mounted, default_entry, update_grubenv
from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.state.files import atomic_write, atomic_write_json, read_json
from ansible_collections.inplace.migration.plugins.module_utils.state.locate import COMPLETION_RECORD
from ansible_collections.inplace.migration.plugins.module_utils.state.lock import LOCKED_BY_ENV, pc_lock
from ansible_collections.inplace.migration.plugins.module_utils.state.store import Store

DESCRIPTION = "Confirm the first boot of the new system and restore profiles from the migration store."
UNIT_NAME = "inplace-firstboot.service"
PROGRAM = "usr/local/sbin/inplace-firstboot"
CONFIG = "etc/inplace-migration/firstboot.json"
UNIT = "etc/systemd/system/" + UNIT_NAME
WANTS = "etc/systemd/system/multi-user.target.wants/" + UNIT_NAME
RESTORE_PROGRAM = "inplace/bin/inplace-restore"
JOURNAL_KEY = "firstboot"
LOCK_HOLDER = "first-boot"
LOCK_WAIT = 600.0
DEFAULT_LABEL = "INPLACE-STORE"
WHAT = "the migration store"
GRUBENV = "boot/grub/grubenv"
GRUB_CFG = "boot/grub/grub.cfg"
# In the new root, not on the store: the count must survive a store that cannot be found.
FAILURES = "var/lib/inplace-migration/firstboot-failures.json"
GIVE_UP_AFTER = 5

UNIT_TEXT = """[Unit]
Description=inplace.migration: confirm the first boot of the new system, restore profiles from the store
After=local-fs.target
ConditionPathExists=/{config}

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 /{program}
RemainAfterExit=yes
TimeoutStartSec=0
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
""".format(config=CONFIG, program=PROGRAM)


# The program ---------------------------------------------------------------------------------------

def log(message):
    sys.stdout.write("inplace-firstboot: %s\n" % message)
    sys.stdout.flush()


def make_new_system_default(root, config):
    """Make the new system GRUB's saved default; the maintenance entry stays in the menu."""
    try:
        with open(os.path.join(root, GRUB_CFG)) as handle:
            entry = default_entry(handle.read())
    except FileNotFoundError:
        entry = None
    entry = entry or config.get("default_entry")
    if not entry:
        return None
    update_grubenv(os.path.join(root, GRUBENV), saved_entry=entry, next_entry=None)
    return entry


def recorded_store(config):
    """The store's identity image_deploy recorded (older hooks: its PARTUUID and UUID), or None."""
    identity = config.get("store_identity") or {
        key: config[name] for key, name in (("partuuid", "store_partuuid"), ("uuid", "store_uuid")) if config.get(name)}
    return identity or None


def find_store_device(runner, config, label=None, root="/"):
    """The store's device: by its recorded identity, or by ``label`` when asked to or nothing was recorded.

    By the label, only on the disk holding ``root``: a device elsewhere with it (a USB stick) is never
    taken; two on that disk are refused, naming both, rather than guessed.
    """
    identity = None if label else recorded_store(config)
    if identity and identity.get("lv_uuid") and runner.has("vgchange"):
        # udev activates the store's volume group at boot, but maybe not before this hook runs.
        runner.run(["vgchange", "--activate", "ay"], ok=None)
    if identity:
        return _devices.find_recorded(runner, identity, WHAT)
    spec = "LABEL=" + (label or config.get("store_label") or DEFAULT_LABEL)
    disk = disk_holding(runner, root)
    if disk is None:
        raise MigrationError("%s is on no partition of a disk, so there is no system disk to look for %s on; give "
                             "the store's mount point (--store)." % (root, spec))
    device, elsewhere = _devices.Scan(runner).on_disk(spec, disk, WHAT)
    if device is None:
        raise MigrationError("no device on %s (the disk holding %s) has %s%s; put the store's disk back." % (
            disk, root, spec, ", only %s elsewhere, which is not taken" % ", ".join(elsewhere) if elsewhere else ""))
    return device


def read_config(root):
    """The hook's configuration in the new system's ``root``, or None."""
    return read_json(os.path.join(root, CONFIG))


def disable(root):
    """What ``systemctl disable`` does for this unit, also for a root that is not running."""
    try:
        os.unlink(os.path.join(root, WANTS))
    except FileNotFoundError:
        pass


def confirm(runner, root, store_root, config, restore=True):
    """Everything the hook does with the store mounted at ``store_root``; returns a report."""
    store = Store(store_root)
    journal = store.journal
    report = {"store": store_root}
    # Confirmed only where GRUB will read it: a grubenv written under an unmounted /boot partition
    # would leave maintenance GRUB's default with the journal saying the new system confirmed itself.
    problem = boot_not_mounted(root)
    if problem:
        raise MigrationError(problem)
    # The step is a restore's, so a profile_restore of the controller waits for the hook and the hook for it.
    with pc_lock("restore", store, wait=LOCK_WAIT, by=LOCK_HOLDER + " hook"):
        record = dict(journal.get(JOURNAL_KEY) or {})
        record.setdefault("confirmed", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        journal.put(JOURNAL_KEY, record)
        report["confirmed"] = record["confirmed"]
        report["default_entry"] = make_new_system_default(root, config)
        log("first boot confirmed; GRUB's default is now %s" % (report["default_entry"] or "unchanged (no GRUB menu)"))
        program = os.path.join(store_root, RESTORE_PROGRAM)
        if not restore:
            report["restore"] = "not asked for"
        elif not os.path.isfile(program):
            report["restore"] = "nothing to restore (no %s on the store)" % RESTORE_PROGRAM
        else:
            # Run even when the store's journal says a restore completed: the root restored into keeps
            # what it holds (profiles.restored), and a root written again holds nothing yet.
            log("restoring profiles: %s --store %s --root %s" % (program, store_root, root))
            # The restore runs under this lock; it is told so, and must not take it again.
            os.environ[LOCKED_BY_ENV] = LOCK_HOLDER
            rc, out, err = runner.run([sys.executable or "python3", program, "--store", store_root, "--root", root],
                                      ok=None)
            for line in (out + err).splitlines():
                log("restore: " + line)
            if rc != 0:
                journal.update(JOURNAL_KEY, restore_failed=rc)
                raise MigrationError("inplace-restore failed with exit code %d; the hook stays enabled and runs "
                                     "again at the next boot." % rc)
            report["restore"] = "ran"
        journal.update(JOURNAL_KEY, done=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       restore=report["restore"])
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="inplace-firstboot", description=DESCRIPTION)
    parser.add_argument("--root", default="/", help="the new system's root (another one for tests)")
    parser.add_argument("--store", help="the store's mount point (default: find the store by its label, mount it)")
    parser.add_argument("--label", help="find the store by this filesystem label (default: by the identity the "
                        "hook's configuration records)")
    parser.add_argument("--no-restore", action="store_true", help="confirm only; do not run the restore")
    parser.add_argument("--keep-enabled", action="store_true", help="do not disable the hook after success")
    args = parser.parse_args(argv)
    root = args.root
    config = read_config(root) or {}
    runner = ProcessRunner()
    if os.path.exists(os.path.join(root, COMPLETION_RECORD.lstrip("/"))):
        disable(root)
        log("the migration is complete; the hook is disabled")
        return 0
    try:
        if args.store:
            report = confirm(runner, root, args.store, config, restore=not args.no_restore)
        else:
            device = find_store_device(runner, config, args.label, root)
            mounted = mountpoint_of(device)
            if mounted:
                report = confirm(runner, root, mounted, config, restore=not args.no_restore)
            else:
                with temporary_mount(runner, device, "auto") as directory:
                    report = confirm(runner, root, directory, config, restore=not args.no_restore)
        if not args.keep_enabled:
            disable(root)
            report["disabled"] = True
    except MigrationError as error:
        log("failed: %s" % error)
        if count_failure(root, str(error)) >= GIVE_UP_AFTER and not args.keep_enabled:
            disable(root)
            log("gave up after %d failed boots and disabled itself; rerun the playbook, whose restore phase "
                "restores the profiles" % GIVE_UP_AFTER)
        return 1
    log(json.dumps(report, sort_keys=True))
    return 0


def count_failure(root, reason):
    """Record one more failed boot in ``root``; returns how many there have been."""
    path = os.path.join(root, FAILURES)
    record = read_json(path) or {}
    record = {"failures": int(record.get("failures", 0)) + 1, "last": reason,
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_json(path, record)
    return record["failures"]


# Making and installing it --------------------------------------------------------------------------

PROGRAM_MAIN = """\
import sys

from ansible_collections.inplace.migration.plugins.module_utils.boot.firstboot import main

sys.exit(main())
"""


def program_bytes():
    """The hook as a zip application (``common.bundle``): it needs nothing on the new system but python3."""
    return zipapp(PROGRAM_MAIN)


def install(root, config):
    """Install the program, its configuration and its unit in the new system's ``root``, enabled."""
    for relative, data, mode in ((PROGRAM, program_bytes(), 0o755),
                                 (CONFIG, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(), 0o644),
                                 (UNIT, UNIT_TEXT.encode(), 0o644)):
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        atomic_write(path, data, mode)
    link = os.path.join(root, WANTS)
    os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink("/" + UNIT, link)
    return [PROGRAM, CONFIG, UNIT, WANTS]
