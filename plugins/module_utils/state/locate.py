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
    return {"device": fields.get("SOURCE") or None, "uuid": fields.get("UUID") or None,
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


def _find_store(runner, label):
    """The store's device (None when there is none), its disk and where it is mounted."""
    # Two devices with the store's label are an error: which one holds the journal is not for us to guess.
    device = _devices.lookup(runner, "LABEL=" + label, "the migration store")
    return {"device": device, "disk": _devices.parent_disk(device) if device else None,
            "mounted_at": _mount.mountpoint_of(device) if device else None}


def detect(runner, label, cmdline="/proc/cmdline", marker=MAINTENANCE_MARKER, completion_record=COMPLETION_RECORD,
           host_record=HOST_RECORD, find_store=None, cleanup_record=CLEANUP_RECORD):
    """Where this PC is. The files read and the store's look-up are parameters so that tests can stand in for them."""
    maintenance = os.path.exists(marker) or CMDLINE_FLAG in _cmdline(cmdline)
    root = _root_filesystem(runner)
    completion = read_json(completion_record) if not maintenance else None
    cleanup = read_json(cleanup_record) if not maintenance else None
    store = (find_store or _find_store)(runner, label)
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
        "manifest": manifest,
        "journal": records,
        "host": read_json(host_record) if maintenance else None,
    }
