"""maintenance_boot's files: the one maintenance entry, in the system's grub.d and in the store's grub.cfg."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.boot import grub as _grub


@pytest.mark.parametrize("separate,prefix,old_cfg", [(False, "/boot/inplace", "/boot/grub/grub.cfg"),
                                                     (True, "/inplace", "/grub/grub.cfg")])
def test_both_targets_carry_the_same_entry(tmp_path, separate, prefix, old_cfg):
    path, text, mode = _grub.maintenance_boot_file("system", "boot-uuid", separate, _grub.DEFAULT_CMDLINE,
                                                   root=str(tmp_path))
    assert path == str(tmp_path) + _grub.GRUB_SCRIPT and mode == 0o755
    assert text == _grub.maintenance_script("boot-uuid", prefix, _grub.DEFAULT_CMDLINE)
    assert "\tlinux %s/vmlinuz %s\n" % (prefix, _grub.DEFAULT_CMDLINE) in text

    path, text, mode = _grub.maintenance_boot_file("store", "boot-uuid", separate, _grub.DEFAULT_CMDLINE,
                                                   store="/run/inplace/store", store_uuid="store-uuid")
    assert path == "/run/inplace/store/boot/grub/grub.cfg" and mode == 0o600
    assert _grub.maintenance_menuentry("store-uuid", _grub.STORE_PREFIX, _grub.DEFAULT_CMDLINE) in text
    assert "\tsearch --no-floppy --fs-uuid --set=root boot-uuid\n\tconfigfile %s\n" % old_cfg in text
    assert "set default=%s\n" % _grub.MAINTENANCE_ENTRY in text


def test_put_file_writes_once_and_then_changes_nothing(tmp_path):
    path = str(tmp_path / "boot" / "grub" / "grub.cfg")
    planned = _grub.put_file(path, "one\n", 0o600, check_mode=True)
    assert planned["changed"] and not os.path.exists(path)
    assert planned["diff"] == {"before": "", "after": "one\n", "before_header": path, "after_header": path}
    assert _grub.put_file(path, "one\n", 0o600)["changed"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not _grub.put_file(path, "one\n", 0o600)["changed"]
    os.chmod(path, 0o644)
    assert _grub.put_file(path, "one\n", 0o600)["changed"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    changed = _grub.put_file(path, "two\n", 0o600)
    assert changed["changed"] and changed["diff"]["before"] == "one\n"
    with open(path) as handle:
        assert handle.read() == "two\n"


def test_put_file_removes_and_then_changes_nothing(tmp_path):
    path = str(tmp_path / "45_inplace_maintenance")
    _grub.put_file(path, "x", 0o755)
    assert _grub.put_file(path, "", 0o755, state="absent", check_mode=True)["changed"] and os.path.exists(path)
    assert _grub.put_file(path, "", 0o755, state="absent")["changed"] and not os.path.exists(path)
    assert not _grub.put_file(path, "", 0o755, state="absent")["changed"]


class FakeRunner:
    def __init__(self, rc, out):
        self.rc, self.out = rc, out

    def run(self, args, ok=(0,)):
        assert args[-2:] == ["--mountpoint", "/run/inplace/store"]
        return self.rc, self.out, ""


def test_the_store_uuid_is_that_of_the_mount():
    assert _grub.mounted_uuid(FakeRunner(0, "1234-abcd\n"), "/run/inplace/store") == "1234-abcd"
    with pytest.raises(_grub.MigrationError, match="mount the store there first"):
        _grub.mounted_uuid(FakeRunner(1, ""), "/run/inplace/store")
