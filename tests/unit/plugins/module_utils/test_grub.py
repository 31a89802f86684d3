"""GRUB: the maintenance entry defined once, the environment block, the menu, the pinned root."""

from __future__ import annotations

import os

from ansible_collections.inplace.migration.plugins.module_utils.boot import grub as _grub
from tests.support.grub_samples import GRUB_CFG


def test_menu_entries_and_the_new_system_s_default():
    assert _grub.menu_entries(GRUB_CFG) == ["gnulinux-simple-1234", "inplace-maintenance"]
    assert _grub.default_entry(GRUB_CFG) == "gnulinux-simple-1234"
    assert _grub.default_entry("menuentry 'M' --id inplace-maintenance {\n}\n") is None


def test_grubenv_is_a_padded_1024_byte_block_edited_in_place(tmp_path):
    path = str(tmp_path / "grubenv")
    _grub.write_grubenv(path, {"saved_entry": "a"})
    inode = os.stat(path).st_ino
    with open(path, "rb") as handle:
        data = handle.read()
    assert len(data) == 1024 and data.startswith(b"# GRUB Environment Block\nsaved_entry=a\n#")
    _grub.update_grubenv(path, next_entry="b")
    assert _grub.read_grubenv(path) == {"saved_entry": "a", "next_entry": "b"}
    _grub.update_grubenv(path, next_entry=None, saved_entry="c")
    assert _grub.read_grubenv(path) == {"saved_entry": "c"}
    assert os.stat(path).st_ino == inode


def test_grub_texts():
    assert _grub.grub_default_text("GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\n") == "GRUB_DEFAULT=saved\nGRUB_TIMEOUT=5\n"
    assert _grub.grub_default_text("GRUB_TIMEOUT=5\n") == "GRUB_DEFAULT=saved\nGRUB_TIMEOUT=5\n"
    script = _grub.maintenance_script("store-uuid", "/inplace/boot", "panic=10 inplace.maintenance")
    assert script.splitlines()[2] == "exec tail -n +4 $0"
    assert "menuentry 'inplace.migration maintenance' --id inplace-maintenance {" in script
    assert "\tsearch --no-floppy --fs-uuid --set=root store-uuid\n\tlinux /inplace/boot/vmlinuz panic=10 " \
           "inplace.maintenance\n\tinitrd /inplace/boot/initrd.img /inplace/boot/overlay.img\n" in script


def test_one_maintenance_entry_in_every_menu_that_offers_it():
    entry = _grub.maintenance_menuentry("u", "/inplace/boot", _grub.DEFAULT_CMDLINE)
    assert entry in _grub.maintenance_script("u", "/inplace/boot", _grub.DEFAULT_CMDLINE)
    store = _grub.store_config("u", "old-uuid", "/boot/grub/grub.cfg", _grub.DEFAULT_CMDLINE)
    assert entry in store and store.startswith("# Written by inplace.migration")
    assert "set default=inplace-maintenance\n" in store
    assert "\tsearch --no-floppy --fs-uuid --set=root old-uuid\n\tconfigfile /boot/grub/grub.cfg\n" in store
    # The flag migration_state looks for, spelled once.
    assert _grub.CMDLINE_FLAG in _grub.DEFAULT_CMDLINE.split()


def test_a_logical_volume_s_root_is_named_by_its_mapper_path_and_a_partition_s_by_uuid(monkeypatch, tmp_path):
    (tmp_path / "dm").mkdir()
    (tmp_path / "dm" / "name").write_text("labvg-root\n")
    (tmp_path / "dm" / "uuid").write_text("LVM-" + "a" * 32 + "b" * 32 + "\n")
    monkeypatch.setattr(_grub._devices, "sysfs", lambda path: str(tmp_path) if path == "/dev/dm-0" else "/nonexistent")
    assert _grub.root_spec("/dev/dm-0", "f00d") == "/dev/mapper/labvg-root"
    assert _grub.root_spec("/dev/vda2", "f00d") == "UUID=f00d"
    assert _grub._devices.lv_uuid("/dev/dm-0") == "bbbbbb-bbbb-bbbb-bbbb-bbbb-bbbb-bbbbbb"


def test_root_is_pinned_to_the_uuid():
    config = ("\tlinux\t/boot/vmlinuz-6.1 root=/dev/loop3p1 ro quiet\n"
              "\tlinux\t/boot/vmlinuz-6.1 root=UUID=new ro single\n"
              "\tlinux /inplace/boot/vmlinuz panic=10\n")
    text, changed = _grub.pin_root(config, "UUID=new")
    assert text == config.replace("root=/dev/loop3p1", "root=UUID=new")
    assert changed == ["/dev/loop3p1"]
