"""The maintenance environment's setup program: the collection's accounts code, bundled by build_base.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import zipfile

from ansible_collections.inplace.migration.plugins.module_utils.preflight.inspect import SUPPORTED_ROOT_FS
from tests.support.adhoc import REPO

PACKAGE = "ansible_collections/inplace/migration/plugins/module_utils/"
# Runs the bundled program's ensure_admin (not its main, which needs a booted maintenance environment).
CALL = """\
import json, runpy, sys
setup = runpy.run_path(sys.argv[1], run_name="setup")
plan = setup["ensure_admin"](json.loads(sys.argv[2]), root=sys.argv[3])
print(json.dumps(plan.report()))
"""


def build_base():
    spec = importlib.util.spec_from_file_location(
        "build_base", os.path.join(REPO, "roles", "maintenance_env", "files", "build_base.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_setup_program_makes_the_admin_with_the_collection_s_accounts_code(tmp_path):
    program = tmp_path / "setup.pyz"
    program.write_bytes(build_base().setup_program())
    names = zipfile.ZipFile(program).namelist()
    assert PACKAGE + "profiles/accounts.py" in names and PACKAGE + "profiles/account_plan.py" in names
    assert PACKAGE + "disk/planner.py" not in names, "only what the program imports is shipped"
    root = tmp_path / "ram"
    for relative, text, mode in (
            ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\nsshd:x:1234:65534::/run/sshd:/usr/sbin/nologin\n", 0o644),
            ("etc/shadow", "root:*:19000:0:99999:7:::\nsshd:!:19000::::::\n", 0o640),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644),
            ("etc/gshadow", "root:*::\nnogroup:*::\n", 0o640),
            ("bin/bash", "", 0o755)):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
        (root / relative).chmod(mode)
    root = str(root)
    admin = {"name": "opsadmin", "uid": 1234, "gid": 1300, "password_hash": "*", "authorized_keys": ["ssh-ed25519 K"],
             "sudo": True}

    def run():
        # The system's Python, isolated: nothing of this checkout or its venv on the path.
        proc = subprocess.run(["/usr/bin/python3", "-I", "-c", CALL, str(program), json.dumps(admin), root],
                              capture_output=True, text=True, check=True)
        return json.loads(proc.stdout)

    report = run()
    assert report["remapped_users"] == {"opsadmin": {"old": 1234, "new": 1000}}
    with open(os.path.join(root, "etc/passwd")) as handle:
        assert handle.read().splitlines()[-1] == "opsadmin:x:1000:1300::/home/opsadmin:/bin/bash"
    with open(os.path.join(root, "etc/shadow")) as handle:
        assert handle.read().splitlines()[-1].startswith("opsadmin:*:")
    keys = os.path.join(root, "home/opsadmin/.ssh/authorized_keys")
    with open(keys) as handle:
        assert handle.read() == "ssh-ed25519 K\n"
    info = os.stat(keys)
    assert (info.st_uid, info.st_gid, oct(info.st_mode & 0o777)) == (1000, 1300, "0o600")
    sudoers = os.path.join(root, "etc/sudoers.d/inplace-admin")
    with open(sudoers) as handle:
        assert handle.read() == "opsadmin ALL=(ALL:ALL) NOPASSWD: ALL\n"
    assert oct(os.stat(sudoers).st_mode & 0o777) == "0o440"
    again = run()
    assert again["accounts_kept"] == ["opsadmin"] and again["accounts_created"] == again["groups_created"] == []


# What the maintenance environment needs to mount, check and resize each filesystem a root may be on.
FILESYSTEM_NEEDS = {"ext2": ("fs/ext4/", "e2fsprogs"), "ext3": ("fs/ext4/", "e2fsprogs"),
                    "ext4": ("fs/ext4/", "e2fsprogs"), "btrfs": ("fs/btrfs/", "btrfs-progs"),
                    "xfs": ("fs/xfs/", "xfsprogs")}


def test_the_maintenance_environment_carries_the_module_and_tools_of_every_supported_root_filesystem():
    base = build_base()
    for fstype in SUPPORTED_ROOT_FS:
        module, package = FILESYSTEM_NEEDS[fstype]
        assert module in base.KEPT_MODULES, "%s: the kernel module %s is pruned" % (fstype, module)
        assert package in base.PACKAGES, "%s: %s is not installed" % (fstype, package)
