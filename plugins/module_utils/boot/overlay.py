# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""This PC's overlay for the maintenance environment, from its own keys and accounts."""

from __future__ import annotations

import io
import json
import os
import socket

from ansible_collections.inplace.migration.plugins.module_utils.profiles import accounts as _accounts
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.boot.initramfs import (
    HOST_KEY_TYPES, Entry, host_overlay, write_newc,
)
from ansible_collections.inplace.migration.plugins.module_utils.state.files import atomic_write

HOST_RECORD = "etc/inplace/host.json"


def _read(path):
    with open(path) as handle:
        return handle.read()


def host_keys(root="/"):
    keys = {}
    for key_type in HOST_KEY_TYPES:
        private = os.path.join(root, "etc/ssh/ssh_host_%s_key" % key_type)
        if os.path.exists(private) and os.path.exists(private + ".pub"):
            keys[key_type] = (_read(private), _read(private + ".pub"))
    if not keys:
        raise MigrationError("this system has no SSH host keys in /etc/ssh to carry into the maintenance environment.")
    return keys


def admin_account(name, root="/"):
    passwd = _accounts.read_passwd(root)
    if name not in passwd:
        raise MigrationError("the admin account %s is not in %s/etc/passwd." % (name, root.rstrip("/")))
    entry = passwd[name]
    groups = {g["gid"]: g["name"] for g in _accounts.read_groups(root).values()}
    shadow = _accounts.read_shadow(root).get(name, {})
    keys_path = os.path.join(root, entry["home"].lstrip("/"), ".ssh/authorized_keys")
    keys = [line for line in _read(keys_path).splitlines() if line.strip() and not line.startswith("#")] \
        if os.path.exists(keys_path) else []
    if not keys:
        raise MigrationError("%s has no %s, so Ansible could not log in to the maintenance environment." % (
            name, keys_path))
    return {"name": name, "uid": entry["uid"], "gid": entry["gid"], "group": groups.get(entry["gid"], name),
            "shell": entry["shell"], "password_hash": shadow.get("password_hash") or "*",
            "authorized_keys": keys, "sudo": True}


def overlay_bytes(admin, host_record, network=None, root="/"):
    hostname = (_read(os.path.join(root, "etc/hostname")).strip() if os.path.exists(os.path.join(root, "etc/hostname"))
                else socket.gethostname())
    entries = host_overlay(hostname, host_keys(root), admin_account(admin, root), network)
    entries.append(Entry.directory(os.path.dirname(HOST_RECORD)))
    entries.append(Entry.file(HOST_RECORD, json.dumps(host_record, indent=2, sort_keys=True) + "\n", mode=0o600))
    buffer = io.BytesIO()
    write_newc(buffer, entries)
    return buffer.getvalue(), sorted(host_keys(root))


def build_overlay(dest, admin, host_record, network=None, check_mode=False):
    data, key_types = overlay_bytes(admin, host_record, network)
    current = None
    if os.path.exists(dest):
        with open(dest, "rb") as handle:
            current = handle.read()
    changed = current != data
    if changed and not check_mode:
        os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
        atomic_write(dest, data, mode=0o600)
    return {"changed": changed, "dest": dest, "bytes": len(data), "host_key_types": key_types}
