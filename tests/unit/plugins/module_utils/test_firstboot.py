"""The first-boot hook: GRUB's environment block and menu, and the generated program run against a root."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile

from ansible_collections.inplace.migration.plugins.module_utils.boot import firstboot as _firstboot
from ansible_collections.inplace.migration.plugins.module_utils.boot import grub as _grub
from ansible_collections.inplace.migration.plugins.module_utils.state.store import Store
from ansible_collections.inplace.migration.plugins.module_utils.state.lock import LOCKED_BY_ENV
from tests.support.grub_samples import GRUB_CFG


def test_the_program_ships_only_the_modules_it_imports():
    data = _firstboot.program_bytes()
    assert data.startswith(b"#!/usr/bin/python3\n")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        shipped = {name for name in archive.namelist() if not name.endswith("__init__.py")}
    prefix = "ansible_collections/inplace/migration/plugins/module_utils/"
    assert prefix + "boot/firstboot.py" in shipped and prefix + "state/store.py" in shipped
    # The partition planner and pyparted backend have no business on the new system.
    assert not {prefix + "disk/model.py", prefix + "disk/parted.py", prefix + "disk/planner.py"} & shipped
    assert _firstboot.program_bytes() == data


def install(tmp_path, restore=None):
    root = str(tmp_path / "root")
    store = str(tmp_path / "store")
    os.makedirs(os.path.join(root, "boot", "grub"))
    os.makedirs(store)
    with open(os.path.join(root, "boot", "grub", "grub.cfg"), "w") as handle:
        handle.write(GRUB_CFG)
    _grub.write_grubenv(os.path.join(root, "boot", "grub", "grubenv"),
                        {"saved_entry": "inplace-maintenance", "next_entry": "gnulinux-simple-1234"})
    _firstboot.install(root, {"store_label": "INPLACE-STORE", "default_entry": "gnulinux-simple-1234"})
    if restore is not None:
        os.makedirs(os.path.join(store, "inplace", "bin"), exist_ok=True)
        with open(os.path.join(store, "inplace", "bin", "inplace-restore"), "w") as handle:
            handle.write(restore)
    return root, store


# The program runs in a process of its own, where the unit tests' private lock directory does not
# reach; told that its lock is held, it leaves the PC's real one under /run alone.
PROGRAM_ENV = dict(os.environ, **{LOCKED_BY_ENV: "the unit tests"})


def run(root, store, *extra):
    program = os.path.join(root, _firstboot.PROGRAM)
    # -I: the collection is not importable; the program must stand alone.
    return subprocess.run([sys.executable, "-I", program, "--root", root, "--store", store] + list(extra),
                          capture_output=True, text=True, check=False, env=PROGRAM_ENV)


def wanted(root):
    return os.path.lexists(os.path.join(root, _firstboot.WANTS))


def test_first_boot_confirms_makes_the_new_system_default_restores_and_disables_itself(tmp_path):
    root, store = install(tmp_path, restore="import sys\nprint('restored', sys.argv[1:])\n")
    assert wanted(root)
    proc = run(root, store)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restore: restored ['--store', '%s', '--root', '%s']" % (store, root) in proc.stdout
    assert _grub.read_grubenv(os.path.join(root, "boot/grub/grubenv")) == {"saved_entry": "gnulinux-simple-1234"}
    record = Store(store).journal.get("firstboot")
    assert record["confirmed"] and record["restore"] == "ran"
    assert not wanted(root)


def test_a_failed_restore_keeps_the_hook_for_the_next_boot(tmp_path):
    root, store = install(tmp_path, restore="import sys\nsys.exit(3)\n")
    proc = run(root, store)
    assert proc.returncode == 1 and "inplace-restore failed with exit code 3" in proc.stdout
    assert wanted(root)
    assert Store(store).journal.get("firstboot")["restore_failed"] == 3
    # The boot was confirmed all the same: the new system is the default.
    assert _grub.read_grubenv(os.path.join(root, "boot/grub/grubenv"))["saved_entry"] == "gnulinux-simple-1234"


def test_the_root_not_the_store_s_journal_decides_what_is_restored_and_a_missing_program_is_not_run(tmp_path):
    # A root written a second time holds no profiles, whatever the store's journal says of the first one.
    args = os.path.join(str(tmp_path), "args")
    root, store = install(tmp_path, restore="import sys\nopen(%r, 'w').write(' '.join(sys.argv[1:]))\n" % args)
    Store(store).journal.put("profile_restore", {"complete": True})
    proc = run(root, store)
    assert proc.returncode == 0, proc.stdout
    assert Store(store).journal.get("firstboot")["restore"] == "ran"
    with open(args) as handle:
        assert handle.read() == "--store %s --root %s" % (store, root)
    root2, store2 = install(tmp_path / "other")
    proc = run(root2, store2)
    assert proc.returncode == 0
    assert Store(store2).journal.get("firstboot")["restore"].startswith("nothing to restore")


def test_the_unit_runs_the_program_once_per_boot_until_it_succeeds(tmp_path):
    root, unused = install(tmp_path)
    with open(os.path.join(root, _firstboot.UNIT)) as handle:
        unit = handle.read()
    assert "Type=oneshot" in unit and "WantedBy=multi-user.target" in unit
    assert "ExecStart=/usr/bin/python3 /usr/local/sbin/inplace-firstboot" in unit
    with open(os.path.join(root, _firstboot.CONFIG)) as handle:
        assert json.load(handle)["store_label"] == "INPLACE-STORE"
    assert os.readlink(os.path.join(root, _firstboot.WANTS)) == "/" + _firstboot.UNIT


def test_the_store_is_looked_for_by_its_recorded_identity_and_by_label_only_without_one():
    identity = {"device": "/dev/sda3", "partuuid": "0b4e1c2a-03", "uuid": "u-1", "label": "INPLACE-STORE",
                "disk": {"device": "/dev/sda", "ptuuid": "0b4e1c2a"}}
    assert _firstboot.recorded_store({"store_identity": identity, "store_label": "INPLACE-STORE"}) == identity
    # A configuration written before the identity was: its PARTUUID and UUID.
    assert _firstboot.recorded_store({"store_partuuid": "0b4e1c2a-03", "store_uuid": "u-1",
                                      "store_label": "INPLACE-STORE"}) == {"partuuid": "0b4e1c2a-03", "uuid": "u-1"}
    assert _firstboot.recorded_store({"store_label": "INPLACE-STORE"}) is None


def test_a_completed_migration_disables_the_hook_without_looking_for_the_store(tmp_path):
    root, unused = install(tmp_path)
    record = os.path.join(root, _firstboot.COMPLETION_RECORD.lstrip("/"))
    os.makedirs(os.path.dirname(record), exist_ok=True)
    with open(record, "w") as handle:
        handle.write('{"completed": "2026-11-30T00:00:00+00:00"}\n')
    # No --store: a hook still looking for the store would fail here, as cleanup removed it.
    proc = subprocess.run([sys.executable, "-I", os.path.join(root, _firstboot.PROGRAM), "--root", root],
                          capture_output=True, text=True, check=False, env=PROGRAM_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the migration is complete" in proc.stdout
    assert not wanted(root)


def test_the_hook_gives_up_and_disables_itself_after_repeated_failed_boots(tmp_path):
    root, store = install(tmp_path, restore="import sys\nsys.exit(3)\n")
    for boot in range(1, _firstboot.GIVE_UP_AFTER + 1):
        proc = run(root, store)
        assert proc.returncode == 1
        with open(os.path.join(root, _firstboot.FAILURES)) as handle:
            assert json.load(handle)["failures"] == boot
        assert wanted(root) == (boot < _firstboot.GIVE_UP_AFTER), boot
    assert "gave up after %d failed boots" % _firstboot.GIVE_UP_AFTER in proc.stdout


def test_a_boot_partition_in_fstab_that_is_not_mounted_is_not_confirmed(tmp_path):
    # GRUB's core reads the /boot partition's grubenv: one written into the root's /boot would go unread,
    # with the journal saying the new system confirmed itself and maintenance still the default.
    root, store = install(tmp_path, restore="import sys\nprint('restored')\n")
    with open(os.path.join(root, "etc", "fstab"), "w") as handle:
        handle.write("UUID=1111 / ext4 defaults 0 1\nUUID=2222 /boot ext4 defaults 0 2\n")
    proc = run(root, store)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "fstab mounts /boot from UUID=2222 but nothing is mounted at %s/boot" % root in proc.stdout
    assert Store(store).journal.get("firstboot") is None
    assert _grub.read_grubenv(os.path.join(root, "boot/grub/grubenv"))["saved_entry"] == "inplace-maintenance"
    assert "restored" not in proc.stdout and wanted(root)
