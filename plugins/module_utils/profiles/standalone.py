# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restore program the capture leaves on the store, for a new system that has no Ansible.

A new system that boots without the controller (a PC that lost its network) restores
its profiles itself from the store: its first-boot hook runs
``python3 <store>/inplace/bin/inplace-restore --store <store>``. The program is a zip
application (``common.bundle``) holding the same module_utils code profile_restore runs, so both
restore alike and record the same journal.
"""

from __future__ import annotations

import os

from ansible_collections.inplace.migration.plugins.module_utils.common.bundle import zipapp
# Imported so that Ansible ships them to the host with profile_capture (and so they exist).
from ansible_collections.inplace.migration.plugins.module_utils.profiles import restore as _restore  # noqa: F401 pylint: disable=unused-import
from ansible_collections.inplace.migration.plugins.module_utils.state.files import atomic_write, atomic_write_json, read_json

PROGRAM = "inplace/bin/inplace-restore"
OPTIONS = "inplace/restore-options.json"

MAIN = '''\
"""inplace-restore: restore captured accounts, profiles and settings from this store."""
import argparse, json, os, sys

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.profiles.restore import Restore
from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.state.files import read_json


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True, help="mount point of the store")
    parser.add_argument("--root", default="/")
    parser.add_argument("--users", nargs="*")
    parser.add_argument("--accounts", choices=["create", "require", "skip"])
    parser.add_argument("--conflict", choices=["overwrite", "keep_new", "rename"])
    parser.add_argument("--settings", nargs="*")
    args = parser.parse_args()
    # Defaults the controller left on the store (the playbook's restore options).
    options = read_json(os.path.join(args.store, "%(options)s")) or {}
    for key in ("users", "accounts", "conflict", "settings"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    try:
        result = Restore(ProcessRunner(), args.store, root=args.root, users=options.get("users"),
                         accounts=options.get("accounts", "create"), conflict=options.get("conflict", "overwrite"),
                         settings=options.get("settings")).run()
    except MigrationError as error:
        json.dump({"failed": True, "msg": str(error)}, sys.stdout)
        return 1
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    return 1 if result["failed_users"] else 0


sys.exit(main())
''' % {"options": OPTIONS}


def write_restore_program(store):
    """Put the program on the store (root-only, like everything there)."""
    path = store.path(PROGRAM)
    store.ensure_dir(os.path.dirname(PROGRAM))
    atomic_write(path, zipapp(MAIN), mode=0o700)
    return path


def put_restore_options(store, options):
    """Leave the restore's options for the program, written whole and synced; True when they changed."""
    path = store.path(OPTIONS)
    if read_json(path) == options:
        return False
    store.ensure_dir(os.path.dirname(OPTIONS))
    atomic_write_json(path, options)
    return True
