# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""First thing the maintenance environment runs, before sshd: apply the per-host overlay.

The base initramfs is the same for every PC. The overlay, unpacked over it by the
kernel, brings the PC's hostname, SSH host keys and network file as plain files,
and the admin account as ``/etc/inplace-host/admin.json`` (see
``plugins/module_utils/boot/initramfs.py: host_overlay``). Accounts cannot be dropped in
as files without replacing the base's passwd and group, so they are made here, by the
collection's own accounts code: build_base.py ships this program as a zip application
(``common.bundle``) holding it and the modules it imports.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.profiles import accounts

ADMIN_FILE = "/etc/inplace-host/admin.json"
HOST_KEY_GLOB = "/etc/ssh/ssh_host_*_key"
UNPACK_FAILED = b"Initramfs unpacking failed"


class Broken(Exception):
    """This environment must not be used: sshd stays down (it requires this unit) and the console says why."""


def kernel_log():
    """Every record in the kernel's ring buffer so far."""
    descriptor = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    records = []
    try:
        while True:
            try:
                records.append(os.read(descriptor, 8192))
            except BlockingIOError:
                return b"".join(records)
            except BrokenPipeError:
                continue  # a record was overwritten while reading; go on with the next
    finally:
        os.close(descriptor)


def check_unpacked():
    """With too little RAM the kernel stops unpacking part way, and what is there may still boot."""
    if UNPACK_FAILED in kernel_log():
        raise Broken("the initramfs did not unpack completely (too little RAM?); "
                     "this maintenance environment is incomplete and stays offline.")


def run(*argv):
    subprocess.run(list(argv), check=True)


def lift_rootfs_cap():
    """The kernel caps the RAM root at half of memory; profiles and images need more working space."""
    run("mount", "-o", "remount,size=90%", "/")


def ensure_admin(admin, root="/"):
    """The account Ansible connects as (``admin.json``, see ``host_overlay``), its keys and its sudo rule."""
    name = admin["name"]
    user = {"name": name, "uid": admin["uid"], "gid": admin["gid"], "group": admin.get("group", name), "groups": [],
            "gecos": "", "home": "/home/" + name, "shell": admin.get("shell", "/bin/bash"),
            "password_hash": admin.get("password_hash", "*"), "aging": None}
    plan = accounts.ensure(root, [user], [{"name": user["group"], "gid": admin["gid"]}])
    accounts.give_access(root, plan.user(name), "".join(key.strip() + "\n" for key in admin.get("authorized_keys", [])))
    if admin.get("sudo", True):
        accounts.install_sudoers(ProcessRunner(), root, "inplace-admin", "%s ALL=(ALL:ALL) NOPASSWD: ALL\n" % name)
    return plan


def main():
    try:
        check_unpacked()
    except Broken as error:
        sys.stderr.write("inplace-maintenance: %s\n" % error)
        return 1
    lift_rootfs_cap()
    if os.path.exists(ADMIN_FILE):
        with open(ADMIN_FILE, encoding="utf-8") as handle:
            ensure_admin(json.load(handle))
    if not glob.glob(HOST_KEY_GLOB):
        # Booted without an overlay (a developer's test): sshd needs some host key to start.
        run("ssh-keygen", "-A")
    return 0


if __name__ == "__main__":
    sys.exit(main())
