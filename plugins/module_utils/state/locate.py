# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a PC is in its migration: which system runs, whether a store exists, what its journal says.

The playbook asks this first on every run, so a rerun after any interruption
continues from the PC's real state rather than from what the controller remembers.
"""

from __future__ import annotations

import os
import re

from ansible_collections.inplace.migration.plugins.module_utils.boot.grub import CMDLINE_FLAG
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk import mount as _mount
from ansible_collections.inplace.migration.plugins.module_utils.state.files import read_json
from ansible_collections.inplace.migration.plugins.module_utils.state.store import JOURNAL, MANIFEST

MAINTENANCE_MARKER = "/etc/inplace-maintenance"
HOST_RECORD = "/etc/inplace/host.json"
COMPLETION_RECORD = "/etc/inplace-migration/complete.json"
# Written by cleanup (state.cleanup) in the new root before it destroys anything: once the store's
# journal may be gone, this is what says the PC runs its new system and cleanup is to be finished.
CLEANUP_RECORD = "/var/lib/inplace-migration/cleanup.json"


def _cmdline(path="/proc/cmdline"):
    try:
        with open(path) as handle:
            return handle.read().split()
    except OSError:
        return []


def _root_filesystem(runner):
    rc, out, unused_err = runner.run(["findmnt", "--noheadings", "--pairs", "--output", "SOURCE,UUID,FSTYPE", "/"],
                                     ok=None)
    fields = dict(re.findall(r'(\w+)="([^"]*)"', out)) if rc == 0 else {}
    # A btrfs subvolume's source is its device followed by the subvolume: /dev/sda2[/@].
    return {"device": fields.get("SOURCE", "").split("[")[0] or None, "uuid": fields.get("UUID") or None,
            "fstype": fields.get("FSTYPE") or None}


def _read_store(runner, device, mountpoint):
    """The journal records and manifest state, from the mounted store or a read-only mount of it."""
    def read(root):
        manifest = read_json(os.path.join(root, MANIFEST))
        journal = read_json(os.path.join(root, JOURNAL)) or {}
        return journal.get("records", {}), {
            "exists": manifest is not None,
            "complete": bool(manifest and manifest.get("complete") and manifest.get("verified")),
            "users": [u["name"] for u in (manifest or {}).get("users", [])],
        }
    if mountpoint:
        return read(mountpoint)
    # A plain read-only mount still replays the journal of a store cut off by a power loss; without
    # that replay (noload) the files written last can read back as garbage.
    fstype = _devices.blkid(runner, device).get("TYPE", "ext4")
    with _mount.temporary_mount(runner, device, fstype, readonly=True) as directory:
        return read(directory)


def store_on_system_disk(runner, label, root, scan=None):
    """The store on the system disk (the disk holding the partition ``root`` names), and what was set aside.

    Only the system disk is looked at: a device elsewhere with the store's label (a USB stick) is
    never taken for the store, only named in ``ignored_stores``. Two devices with the label on the
    system disk are an error: which one holds the journal is not for us to guess.
    """
    scan = scan or _devices.Scan(runner)
    disk = scan.disk_of(root)
    device, ignored = scan.on_disk("LABEL=" + label, disk, "the migration store")
    return {"store": {"device": device, "disk": disk if device else None,
                      "mounted_at": _mount.mountpoint_of(device) if device else None},
            "system_disk": {"device": disk, "root": root, "identity": scan.disk_identity(disk)},
            "ignored_stores": ignored}


def _system_root(root, host, root_partuuid, maintenance, host_record):
    """The root partition whose disk is the system disk, as a spec: in the maintenance environment the one the
    host record names (the RAM root is on no disk), else the one mounted at /."""
    partuuid = root_partuuid or (host or {}).get("root_partuuid")
    if partuuid:
        return "PARTUUID=" + partuuid
    if maintenance:
        raise MigrationError("the maintenance environment has no host record (%s) naming the old system's root "
                             "partition, so the disk the store must be on is unknown; boot it through maintenance_env "
                             "or give root_partuuid." % host_record)
    if not (root["device"] or "").startswith("/dev/"):
        raise MigrationError("the root filesystem is on %s, not on a partition of a disk, so there is no system disk "
                             "to look for the store on; give root_partuuid." % (root["device"] or "no device"))
    return root["device"]


def detect(runner, label, cmdline="/proc/cmdline", marker=MAINTENANCE_MARKER, completion_record=COMPLETION_RECORD,
           host_record=HOST_RECORD, find_store=None, root_partuuid=None, cleanup_record=CLEANUP_RECORD):
    """Where this PC is. The files read and the store's look-up are parameters so that tests can stand in for them.

    The store is looked for on the system disk only (``store_on_system_disk``); in the maintenance environment
    that disk is held to the identity preflight recorded for it (``disk_identity``).
    """
    maintenance = os.path.exists(marker) or CMDLINE_FLAG in _cmdline(cmdline)
    root = _root_filesystem(runner)
    completion = read_json(completion_record) if not maintenance else None
    cleanup = read_json(cleanup_record) if not maintenance else None
    host = read_json(host_record) if maintenance else None
    if (host or {}).get("lvm") and find_store is None:
        # The root's volume group holds the old root and the store: activate it (udev may have already; LVM
        # makes the device nodes itself where udev does not run).
        runner.run(["vgchange", "--activate", "y", host["lvm"]["vg"]])
    found = (find_store or store_on_system_disk)(
        runner, label, _system_root(root, host, root_partuuid, maintenance, host_record))
    store, system_disk = found["store"], found["system_disk"]
    if host and host.get("disk_identity"):
        _devices.check_disk(system_disk["device"], system_disk["identity"], host["disk_identity"],
                            "working on it from the maintenance environment")
    device = store["device"]
    records, manifest = {}, {"exists": False, "complete": False, "users": []}
    # Once cleanup has begun the store may be half zeroed: nothing on it is to be read any more.
    if device and cleanup is None:
        records, manifest = _read_store(runner, device, store["mounted_at"])
    deploy = records.get("image_deploy") or {}
    if maintenance:
        environment = "maintenance"
    elif deploy.get("state") == "complete" and (deploy.get("filesystem") or {}).get("uuid") == root["uuid"] \
            and root["uuid"]:
        environment = "new"
    elif completion is not None or cleanup is not None:
        environment = "new"
    else:
        environment = "old"
    return {
        "environment": environment,
        "completed": completion is not None,
        "completion": completion,
        "cleanup": cleanup,
        "resume": "cleanup" if cleanup is not None and completion is None else None,
        "root": root,
        "store": store,
        "system_disk": system_disk,
        "ignored_stores": found["ignored_stores"],
        "manifest": manifest,
        "journal": records,
        "host": host,
    }
