"""The new system's boot loader on a UEFI PC (image_deploy bootloader=grub-efi): the menu and its one-shot in the
root first, then the ESP (loaders, the stub last there, NVRAM, the removable-media path); the ESP found on the
migrated disk only; the NVRAM entry made first. grub-mkconfig and efibootmgr are played by a runner that keeps
the order of events; the image root and the ESP are real directories."""

from __future__ import annotations

import os

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.boot import efi as _efi
from ansible_collections.inplace.migration.plugins.module_utils.boot import grub as _grub
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.image.handover import HandOver
from tests.support.efi_samples import ESP_PARTUUID, OVMF_DEBIAN
from tests.unit.plugins.module_utils.test_efi_boot import NEW_UUID, STORE_UUID, image_root, old_esp, tree

MENU = """set default="${saved_entry}"
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-%(uuid)s' {
\tlinux /boot/vmlinuz-6.12.0-1-amd64 root=UUID=%(uuid)s ro quiet
}
menuentry 'inplace.migration maintenance' --id inplace-maintenance {
\tlinux /inplace/boot/vmlinuz inplace.maintenance
}
""" % {"uuid": NEW_UUID}


class MkconfigRunner:
    """Bind mounts and umounts are noted; ``chroot ROOT update-grub`` writes MENU, as grub-mkconfig would."""

    def __init__(self, root, events):
        self.root, self.events = root, events

    def run(self, args, ok=(0,)):
        if args[0] == "chroot":
            assert args[1:] == [self.root, "/usr/sbin/update-grub"]
            assert open(os.path.join(self.root, "etc/grub.d/45_inplace_maintenance")).read().startswith("#!/bin/sh")
            with open(os.path.join(self.root, "boot/grub/grub.cfg"), "w") as handle:
                handle.write(MENU)
            self.events.append("grub-mkconfig")
        else:
            assert args[0] in ("mount", "umount"), args
        return 0, "", ""


def new_root(tmp_path):
    root = image_root(tmp_path / "root")
    for path in ("usr/sbin/update-grub", "etc/default/grub"):
        os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
        with open(os.path.join(root, path), "w") as handle:
            handle.write("GRUB_DEFAULT=0\n" if path.endswith("grub") else "#!/bin/sh\n")
    return root


def test_the_menu_and_one_shot_come_first_then_the_esp_with_the_stub_last_there_then_nvram(tmp_path, monkeypatch):
    monkeypatch.setattr(_grub, "chroot_mounts", lambda *args: _no_mounts())
    root, esp = new_root(tmp_path), old_esp(tmp_path / "esp")
    events = []

    def nvram():
        events.append("nvram")
        assert _grub.read_grubenv(os.path.join(root, "boot/grub/grubenv"))["next_entry"] == "gnulinux-simple-" + NEW_UUID
        assert open(os.path.join(esp, "EFI/debian/grub.cfg")).read().count(NEW_UUID) == 1
        assert open(os.path.join(esp, "EFI/BOOT/BOOTX64.EFI"), "rb").read() == b"MZ old shim"
        return [["efibootmgr", "--bootorder", "0004,0001"]]

    result = _grub.install_grub_efi(MkconfigRunner(root, events), root, "/dev/vda2", NEW_UUID, STORE_UUID,
                                    "console=ttyS0 inplace.maintenance", one_shot=True, esp=esp, nvram=nvram)
    assert events == ["grub-mkconfig", "nvram"]
    assert result["vendor"] == "debian" and result["default_entry"] == "gnulinux-simple-" + NEW_UUID
    assert result["grubenv"] == {"saved_entry": "inplace-maintenance", "next_entry": "gnulinux-simple-" + NEW_UUID}
    assert result["esp"]["stub"] == {"uuid": NEW_UUID, "directory": "/boot/grub"}
    assert result["esp"]["nvram"] == [["efibootmgr", "--bootorder", "0004,0001"]]
    written = [os.path.relpath(step["write"], esp) for step in result["esp"]["steps"]]
    assert written == ["EFI/debian/grubx64.efi", "EFI/debian/shimx64.efi", "EFI/debian/mmx64.efi",
                       "EFI/debian/fbx64.efi", "EFI/debian/BOOTX64.CSV", "EFI/debian/grub.cfg",
                       "EFI/BOOT/grubx64.efi", "EFI/BOOT/BOOTX64.EFI"]
    assert tree(esp)["EFI/BOOT/BOOTX64.EFI"] == tree(root)["usr/lib/shim/shimx64.efi.signed"]
    assert "GRUB_DEFAULT=saved\n" in open(os.path.join(root, "etc/default/grub")).read()
    assert "--set=root %s" % STORE_UUID in open(os.path.join(root, "etc/grub.d/45_inplace_maintenance")).read()


def test_a_separate_boot_partition_is_where_the_stub_points(tmp_path, monkeypatch):
    monkeypatch.setattr(_grub, "chroot_mounts", lambda *args: _no_mounts())
    root, esp = new_root(tmp_path), old_esp(tmp_path / "esp")
    boot_uuid = "0c0ffee0-1111-4222-8333-444455556666"
    result = _grub.install_grub_efi(MkconfigRunner(root, []), root, "/dev/vda3", NEW_UUID, STORE_UUID,
                                    "inplace.maintenance", one_shot=False, esp=esp, boot=str(tmp_path / "bootpart"),
                                    boot_uuid=boot_uuid)
    assert result["esp"]["stub"] == {"uuid": boot_uuid, "directory": "/grub"}
    assert result["grubenv"] == {"saved_entry": "gnulinux-simple-" + NEW_UUID}


def test_an_image_without_the_signed_chain_is_refused_before_the_menu_or_the_esp(tmp_path, monkeypatch):
    monkeypatch.setattr(_grub, "chroot_mounts", lambda *args: _no_mounts())
    root, esp = new_root(tmp_path), old_esp(tmp_path / "esp")
    os.unlink(os.path.join(root, "usr/lib/shim/shimx64.efi.signed"))
    before = tree(esp)
    events = []
    with pytest.raises(MigrationError, match=r"^the image lacks /usr/lib/shim/shimx64.efi.signed, which the ESP needs"):
        _grub.install_grub_efi(MkconfigRunner(root, events), root, "/dev/vda2", NEW_UUID, STORE_UUID,
                               "inplace.maintenance", one_shot=True, esp=esp)
    assert events == [] and tree(esp) == before
    assert not os.path.exists(os.path.join(root, "etc/grub.d/45_inplace_maintenance"))


class _no_mounts:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# -- the hand-over's ESP and NVRAM -----------------------------------------------------------------------------

ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"


class FakeScan:
    def __init__(self, devices):
        self.devices = devices

    def values(self, path):
        return self.devices[path]

    def find(self, spec, what=None):
        found = [path for path, values in self.devices.items() if spec in (path, "PARTUUID=" + values.get(
            "PART_ENTRY_UUID", ""))]
        assert len(found) == 1, spec
        return found[0]


@pytest.fixture(autouse=True)
def disks_by_name(monkeypatch):
    """The devices here are made up, so sysfs cannot say which disk holds them: their names do."""
    monkeypatch.setattr(_devices, "parent_disk", lambda path: path.rstrip("0123456789"))


def hand_over(params, runner=None):
    done = HandOver()
    done.params, done.runner = params, runner
    return done


SCAN = FakeScan({
    "/dev/vda1": {"PART_ENTRY_TYPE": ESP_TYPE, "PART_ENTRY_UUID": ESP_PARTUUID, "PART_ENTRY_NUMBER": "1"},
    "/dev/vda2": {"PART_ENTRY_TYPE": "0fc63daf-8483-4772-8e79-3d69d8477de4", "PART_ENTRY_NUMBER": "2"},
    "/dev/sda1": {"PART_ENTRY_TYPE": ESP_TYPE, "PART_ENTRY_UUID": "5a5a5a5a-0000-4000-8000-000000000001",
                  "PART_ENTRY_NUMBER": "1"},
})


def test_the_esp_is_the_one_on_the_migrated_disk_never_a_stick_s():
    assert hand_over({}).esp_device(SCAN, "/dev/vda2") == "/dev/vda1"
    assert hand_over({"esp": "PARTUUID=" + ESP_PARTUUID}).esp_device(SCAN, "/dev/vda2") == "/dev/vda1"
    with pytest.raises(MigrationError) as refused:
        hand_over({"esp": "PARTUUID=5a5a5a5a-0000-4000-8000-000000000001"}).esp_device(SCAN, "/dev/vda2")
    assert str(refused.value) == ("esp=PARTUUID=5a5a5a5a-0000-4000-8000-000000000001 (/dev/sda1) is not an EFI "
                                  "system partition on /dev/vda, the disk being migrated; name that disk's ESP.")
    two = FakeScan(dict(SCAN.devices, **{"/dev/vda3": dict(SCAN.devices["/dev/vda1"], PART_ENTRY_UUID="x")}))
    with pytest.raises(MigrationError, match=r"^/dev/vda has EFI system partitions /dev/vda1, /dev/vda3; name the "
                                             r"one this PC boots from with esp=PARTUUID="):
        hand_over({}).esp_device(two, "/dev/vda2")
    none = FakeScan({"/dev/vda2": SCAN.devices["/dev/vda2"]})
    with pytest.raises(MigrationError, match=r"^/dev/vda has no EFI system partition; "):
        hand_over({}).esp_device(none, "/dev/vda2")


class EfibootmgrRunner:
    """efibootmgr -v answers from a state that the commands run change, as the firmware's NVRAM would."""

    def __init__(self, text, keeps_order=True):
        self.text, self.keeps_order, self.ran = text, keeps_order, []

    def output(self, args):
        assert args == ["efibootmgr", "-v"]
        return self.text

    def run(self, args, ok=(0,)):
        self.ran.append(args)
        if "--create-only" in args:
            self.text += "Boot0007* debian\tHD(1,GPT,%s,0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi)\n" % \
                ESP_PARTUUID
        elif "--bootorder" in args and self.keeps_order:
            lines = [line for line in self.text.splitlines() if not line.startswith("BootOrder:")]
            self.text = "\n".join(["BootOrder: " + args[-1]] + lines) + "\n"
        return 0, "", ""


def test_the_nvram_entry_is_made_then_put_first_reading_efibootmgr_again_after_each_change():
    without = "\n".join(line for line in OVMF_DEBIAN.splitlines() if not line.startswith("Boot0004")) + "\n"
    without = without.replace("BootOrder: 0004,0001,0000,0002,0003", "BootOrder: 0001,0000,0002,0003")
    runner = EfibootmgrRunner(without)
    ran = hand_over({}, runner).boot_entry_first(SCAN, "/dev/vda1", "debian")
    assert ran == runner.ran == [
        ["efibootmgr", "--create-only", "--disk", "/dev/vda", "--part", "1", "--loader", "\\EFI\\debian\\shimx64.efi",
         "--label", "debian"],
        ["efibootmgr", "--bootorder", "0007,0001,0000,0002,0003"]]
    state = _efi.parse_efibootmgr(runner.text)
    assert state["order"][0] == "0007"
    # Already first: nothing is written.
    again = EfibootmgrRunner(OVMF_DEBIAN)
    assert hand_over({}, again).boot_entry_first(SCAN, "/dev/vda1", "debian") == [] and again.ran == []


def test_firmware_that_does_not_keep_the_order_is_named_after_three_tries():
    runner = EfibootmgrRunner(OVMF_DEBIAN.replace("BootOrder: 0004,", "BootOrder: ").replace(
        "0003\n", "0003,0004\n", 1), keeps_order=False)
    with pytest.raises(MigrationError) as refused:
        hand_over({}, runner).boot_entry_first(SCAN, "/dev/vda1", "debian")
    assert len(runner.ran) == 3
    assert str(refused.value).startswith("the firmware did not keep the boot entry for \\EFI\\debian\\shimx64.efi "
                                         "first in BootOrder (efibootmgr ran: efibootmgr --bootorder 0004,")
