"""esp_stub's main(): the stub pointed at the store and put back, check mode, diff, refusals; a directory stands in
for the mounted ESP (this host cannot mount vfat; the lab's UEFI PC runs it on a real one)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.inplace.migration.plugins.modules import esp_stub
from tests.unit.plugins.module_utils.test_efi_boot import GRUB_INSTALL_STUB, OLD_UUID, STORE_UUID, grub_image, \
    old_esp, tree

STUB = "EFI/debian/grub.cfg"


@pytest.fixture
def esp(tmp_path):
    top = old_esp(tmp_path / "esp")
    for folder in ("debian", "BOOT"):
        (tmp_path / "esp/EFI" / folder / "grubx64.efi").write_bytes(grub_image("debian", size=70000))
    return top


def test_the_stub_points_at_the_store_and_back_with_the_rest_of_the_esp_unchanged(run_module, esp):
    before = tree(esp)
    others = {name: data for name, data in before.items() if name != STUB}
    result = run_module(esp_stub, {"esp": esp, "uuid": STORE_UUID.upper()}, diff=True)
    assert not result.get("failed") and result["changed"] is True and result["kept"] is True
    assert result["vendor"] == "debian" and result["path"] == os.path.join(esp, STUB)
    assert result["before"] == {"uuid": OLD_UUID, "directory": "/boot/grub"}
    assert result["after"] == {"uuid": STORE_UUID, "directory": "/boot/grub"}
    written = tree(esp)
    assert written[STUB].decode() == (
        "# Written by inplace.migration: the GRUB directory this PC boots from.\n"
        "search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)'/boot/grub'\n"
        "configfile $prefix/grub.cfg\n" % STORE_UUID.upper())
    assert written["EFI/debian/grub.cfg.inplace-old"] == GRUB_INSTALL_STUB.encode()
    assert result["diff"] == {"before": GRUB_INSTALL_STUB, "after": written[STUB].decode(),
                              "before_header": result["path"], "after_header": result["path"]}
    assert {name: data for name, data in written.items() if not name.startswith(STUB)} == others

    again = run_module(esp_stub, {"esp": esp, "uuid": STORE_UUID.upper()})
    assert again["changed"] is False and tree(esp) == written

    back = run_module(esp_stub, {"esp": esp, "state": "restored"}, diff=True)
    assert back["changed"] is True and back["restored"] == {"uuid": OLD_UUID, "directory": "/boot/grub"}
    assert back["diff"]["after"] == GRUB_INSTALL_STUB and back["diff"]["before"] == written[STUB].decode()
    assert tree(esp) == before
    assert run_module(esp_stub, {"esp": esp, "state": "restored"})["changed"] is False


def test_check_mode_says_what_would_change_and_writes_nothing(run_module, esp):
    before = tree(esp)
    result = run_module(esp_stub, {"esp": esp, "uuid": STORE_UUID, "directory": "/grub"}, check_mode=True, diff=True)
    assert result["changed"] is True and result["kept"] is True
    assert result["after"] == {"uuid": STORE_UUID, "directory": "/grub"}
    assert "set prefix=($root)'/grub'\n" in result["diff"]["after"]
    assert tree(esp) == before
    run_module(esp_stub, {"esp": esp, "uuid": STORE_UUID})
    switched = tree(esp)
    assert run_module(esp_stub, {"esp": esp, "state": "restored"}, check_mode=True)["changed"] is True
    assert tree(esp) == switched


@pytest.mark.parametrize("args,message", [
    ({"uuid": "5d2a9c10\nconfigfile (hd1)/evil.cfg"},
     "uuid='5d2a9c10\\nconfigfile (hd1)/evil.cfg' is not a filesystem UUID; give the UUID blkid shows for that "
     "filesystem."),
    ({"uuid": STORE_UUID, "directory": "boot/grub'; reboot"},
     "directory=\"boot/grub'; reboot\" is not an absolute path of plain names; give GRUB's directory as GRUB sees it, "
     "such as /boot/grub."),
    ({"uuid": STORE_UUID, "vendor": "../BOOT"},
     "vendor='../BOOT' is not a directory name under \\EFI; give one such as debian."),
    ({"state": "present"}, "state is present but any of the following are missing: uuid, filesystem"),
])
def test_bad_input_is_refused_with_the_esp_unchanged(run_module, esp, args, message):
    before = tree(esp)
    result = run_module(esp_stub, dict(args, esp=esp))
    assert result["failed"] and not result.get("changed") and result["msg"] == message
    assert tree(esp) == before


def test_a_directory_that_is_no_mounted_esp_is_named(run_module, tmp_path):
    result = run_module(esp_stub, {"esp": str(tmp_path), "uuid": STORE_UUID})
    assert result["failed"] and result["msg"] == (
        "%s holds no EFI directory; mount the EFI system partition there first." % tmp_path)
    assert os.listdir(str(tmp_path)) == []


def test_an_esp_whose_grubs_read_no_stub_is_refused(run_module, tmp_path):
    esp = old_esp(tmp_path / "esp")
    before = tree(esp)
    result = run_module(esp_stub, {"esp": esp, "uuid": STORE_UUID})
    assert result["failed"] and result["msg"].startswith("no GRUB on the EFI system partition")
    assert tree(esp) == before


def test_cleaning_removes_the_kept_stub_and_leftovers_only(run_module, esp, tmp_path):
    run_module(esp_stub, {"esp": esp, "uuid": STORE_UUID})
    (tmp_path / "esp/EFI/BOOT/BOOTX64.EFI.inplace-new").write_bytes(b"half a shim")
    switched = tree(esp)
    planned = run_module(esp_stub, {"esp": esp, "state": "cleaned"}, check_mode=True)
    assert planned["changed"] is True and tree(esp) == switched
    done = run_module(esp_stub, {"esp": esp, "state": "cleaned"})
    assert sorted(os.path.relpath(path, esp) for path in done["removed"]) == [
        "EFI/BOOT/BOOTX64.EFI.inplace-new", "EFI/debian/grub.cfg.inplace-old"]
    assert tree(esp) == {name: data for name, data in switched.items()
                         if name not in ("EFI/BOOT/BOOTX64.EFI.inplace-new", "EFI/debian/grub.cfg.inplace-old")}
    assert run_module(esp_stub, {"esp": esp, "state": "cleaned"})["changed"] is False
