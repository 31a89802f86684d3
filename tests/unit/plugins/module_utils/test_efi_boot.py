"""UEFI boot on the ESP: the stub, the deploy's last step, cleanup; a directory stands in for the mounted ESP."""

from __future__ import annotations

import os

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.boot import efi as _efi
from ansible_collections.inplace.migration.plugins.module_utils.boot import efi_boot as _esp
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from tests.support.efi_samples import ESP_PARTUUID, OVMF_DEBIAN

OLD_UUID = "0b7e3c44-6f1d-4c55-9a0e-4c1b2d3e4f50"
STORE_UUID = "5d2a9c10-3b4e-4f6a-8c7d-1e2f3a4b5c6d"
NEW_UUID = "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"
# What grub-install writes into the ESP for a signed GRUB (Debian 12, / holding /boot).
GRUB_INSTALL_STUB = ("search.fs_uuid %s root hd0,gpt2 \nset prefix=($root)'/boot/grub'\n"
                     "configfile $prefix/grub.cfg\n" % OLD_UUID)


def grub_image(vendor="debian", size=4183488, at=None):
    """A stand-in for a signed grubx64.efi: filler, other strings GRUB has, and the prefix object as
    grub-mkimage lays it out (type 3, size with header and padding, the string, NULs)."""
    text = ("/EFI/%s" % vendor).encode("ascii")
    padded = (len(text) + 1 + 7) // 8 * 8
    prefix = (3).to_bytes(4, "little") + (8 + padded).to_bytes(4, "little") + text + b"\0" * (padded - len(text))
    body = bytearray(b"MZ" + bytes(size - 2))
    body[4096:4096 + 40] = b"/.disk/info\0$cmdpath/grub.cfg\0/boot/grub\0"
    at = size - 4096 if at is None else at
    body[at:at + len(prefix)] = prefix
    return bytes(body)


def image_root(path, vendor="debian", extras=True, grub=None):
    files = {"usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed": grub or grub_image(vendor),
             "usr/lib/shim/shimx64.efi.signed": b"MZ new shim " + bytes(5000)}
    if extras:
        files.update({"usr/lib/shim/mmx64.efi.signed": b"MZ new mokmanager",
                      "usr/lib/shim/fbx64.efi.signed": b"MZ new fallback",
                      "usr/lib/shim/BOOTX64.CSV": "shimx64.efi,debian,,This is the boot entry for debian\n"
                                                  .encode("utf-16-le")})
    for name, data in files.items():
        os.makedirs(str(path / os.path.dirname(name)), exist_ok=True)
        (path / name).write_bytes(data)
    return str(path)


def old_esp(path, vendor="debian"):
    """An ESP as a Debian 12 install leaves it, with another system's directory beside."""
    files = {"EFI/%s/shimx64.efi" % vendor: b"MZ old shim", "EFI/%s/grubx64.efi" % vendor: b"MZ old grub",
             "EFI/%s/mmx64.efi" % vendor: b"MZ old mokmanager", "EFI/%s/BOOTX64.CSV" % vendor: b"old csv",
             "EFI/%s/grub.cfg" % vendor: GRUB_INSTALL_STUB.encode(),
             "EFI/BOOT/BOOTX64.EFI": b"MZ old shim", "EFI/BOOT/grubx64.efi": b"MZ old grub",
             "EFI/BOOT/fbx64.efi": b"MZ old fallback",
             "EFI/Microsoft/Boot/bootmgfw.efi": b"MZ windows"}
    for name, data in files.items():
        os.makedirs(str(path / os.path.dirname(name)), exist_ok=True)
        (path / name).write_bytes(data)
    return str(path)


def tree(root):
    """{relative path: bytes} of every file below ``root``."""
    found = {}
    for base, unused_dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


# The vendor directory ------------------------------------------------------------------------------------

@pytest.mark.parametrize("vendor,at", [("debian", None), ("ubuntu", 0x3FA658),
                                       # Straddling the reader's first chunk boundary.
                                       ("debian", _esp.CHUNK - 10)])
def test_the_vendor_is_the_prefix_compiled_into_grub(tmp_path, vendor, at):
    path = tmp_path / "grubx64.efi"
    path.write_bytes(grub_image(vendor, at=at))
    assert _esp.grub_vendor(str(path)) == vendor


def test_a_bare_efi_string_is_no_prefix_object(tmp_path):
    path = tmp_path / "grubx64.efi"
    path.write_bytes(b"MZ" + bytes(1000) + b"\\EFI\\BOOT\\fbx64.efi\0/EFI/BOOT/\0" + bytes(1000))
    assert _esp.grub_vendor(str(path)) is None
    root = image_root(tmp_path / "root", grub=path.read_bytes())
    with pytest.raises(MigrationError, match=r"^the image's GRUB /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed "
                                             r"has no /EFI/<vendor> prefix compiled in"):
        _esp.image_vendor(root)


def test_an_image_without_signed_grub_names_the_package(tmp_path):
    with pytest.raises(MigrationError, match=r"^the image has no signed GRUB .*grub-efi-amd64-signed.*add that package"):
        _esp.image_vendor(str(tmp_path))


def test_the_esp_s_vendor_is_what_its_grubs_read(tmp_path):
    esp = old_esp(tmp_path / "esp")
    with pytest.raises(MigrationError, match=r"^no GRUB on the EFI system partition \(.*esp\) names the \\EFI "
                                             r"directory it reads"):
        _esp.esp_vendor(esp)
    # Debian's own and the removable-media copy: the same image, one vendor.
    for folder in ("debian", "BOOT"):
        (tmp_path / "esp/EFI" / folder / "grubx64.efi").write_bytes(grub_image("debian", size=70000))
    assert _esp.esp_vendor(esp) == "debian"
    os.makedirs(str(tmp_path / "esp/EFI/ubuntu"))
    (tmp_path / "esp/EFI/ubuntu/grubx64.efi").write_bytes(grub_image("ubuntu", size=70000))
    with pytest.raises(MigrationError) as refused:
        _esp.esp_vendor(esp)
    assert str(refused.value) == (
        "the GRUBs on the EFI system partition read different \\EFI directories (debian: \\EFI\\BOOT\\grubx64.efi, "
        "\\EFI\\debian\\grubx64.efi; ubuntu: \\EFI\\ubuntu\\grubx64.efi), so no one stub decides what this PC "
        "boots; remove the loaders of the system that is gone.")


# The stub --------------------------------------------------------------------------------------------------

def test_the_stub_reads_back_in_our_form_and_grub_install_s():
    assert _esp.parse_stub(_esp.stub_text(STORE_UUID.upper(), "/boot/grub")) == {
        "uuid": STORE_UUID, "directory": "/boot/grub"}
    assert _esp.parse_stub(GRUB_INSTALL_STUB) == {"uuid": OLD_UUID, "directory": "/boot/grub"}
    assert _esp.parse_stub("configfile (hd0,gpt2)/boot/grub/grub.cfg\n") is None


def test_switching_keeps_the_first_stub_only_and_restoring_puts_it_back(tmp_path):
    esp = old_esp(tmp_path)
    stub = tmp_path / "EFI/debian/grub.cfg"
    kept = tmp_path / "EFI/debian/grub.cfg.inplace-old"
    others = {name: data for name, data in tree(esp).items() if not name.startswith("EFI/debian/grub.cfg")}

    done = _esp.switch_stub(esp, "debian", STORE_UUID, "/boot/grub")
    assert (done["changed"], done["kept"]) == (True, True)
    assert done["before"] == {"uuid": OLD_UUID, "directory": "/boot/grub"}
    assert _esp.read_stub(esp, "debian") == {"uuid": STORE_UUID, "directory": "/boot/grub"}
    assert kept.read_bytes() == GRUB_INSTALL_STUB.encode()
    assert not list(tmp_path.glob("EFI/debian/*.inplace-new"))

    again = _esp.switch_stub(esp, "debian", STORE_UUID, "/boot/grub")
    assert again["changed"] is False

    # A separate /boot: its partition's /grub. The old system's stub stays the one kept.
    later = _esp.switch_stub(esp, "debian", NEW_UUID, "/grub")
    assert (later["changed"], later["kept"]) == (True, False)
    assert _esp.read_stub(esp, "debian") == {"uuid": NEW_UUID, "directory": "/grub"}
    assert kept.read_bytes() == GRUB_INSTALL_STUB.encode()

    restored = _esp.restore_stub(esp, "debian")
    assert restored == {"changed": True, "path": str(stub), "restored": {"uuid": OLD_UUID, "directory": "/boot/grub"}}
    assert stub.read_bytes() == GRUB_INSTALL_STUB.encode() and not kept.exists()
    assert _esp.restore_stub(esp, "debian")["changed"] is False
    assert {name: data for name, data in tree(esp).items() if not name.startswith("EFI/debian/grub.cfg")} == others


def test_check_mode_says_what_a_switch_would_do_and_writes_nothing(tmp_path):
    esp = old_esp(tmp_path)
    before = tree(esp)
    done = _esp.switch_stub(esp, "debian", STORE_UUID, "/boot/grub", check_mode=True)
    assert (done["changed"], done["kept"]) == (True, True)
    assert tree(esp) == before


def test_a_stub_where_there_was_none_keeps_nothing(tmp_path):
    done = _esp.switch_stub(str(tmp_path), "debian", STORE_UUID, "/boot/grub")
    assert (done["changed"], done["kept"], done["before"]) == (True, False, None)
    assert sorted(tree(str(tmp_path))) == ["EFI/debian/grub.cfg"]
    assert _esp.restore_stub(str(tmp_path), "debian")["changed"] is False


# The deploy's last step --------------------------------------------------------------------------------------

def test_the_last_step_writes_loaders_then_the_stub_then_nvram_then_the_fallback_path(tmp_path):
    esp = old_esp(tmp_path / "esp")
    root = image_root(tmp_path / "root")
    _esp.switch_stub(esp, "debian", STORE_UUID, "/boot/grub")
    seen = {}

    def nvram():
        # Between the stub and \EFI\BOOT: the stub already points at the new system, \EFI\BOOT is still old.
        seen["stub"] = _esp.read_stub(esp, "debian")
        seen["fallback"] = (tmp_path / "esp/EFI/BOOT/BOOTX64.EFI").read_bytes()
        return [["efibootmgr", "--bootorder", "0004,0001"]]

    done = _esp.deploy(esp, root, NEW_UUID, "/boot/grub", nvram=nvram)
    assert seen == {"stub": {"uuid": NEW_UUID, "directory": "/boot/grub"}, "fallback": b"MZ old shim"}
    written = [os.path.relpath(step["write"], esp) for step in done["steps"]]
    assert written == ["EFI/debian/grubx64.efi", "EFI/debian/shimx64.efi", "EFI/debian/mmx64.efi",
                       "EFI/debian/fbx64.efi", "EFI/debian/BOOTX64.CSV", "EFI/debian/grub.cfg",
                       "EFI/BOOT/grubx64.efi", "EFI/BOOT/BOOTX64.EFI"]
    assert done["steps"][0]["from"] == "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
    assert (done["vendor"], done["changed"]) == ("debian", True)
    assert done["nvram"] == [["efibootmgr", "--bootorder", "0004,0001"]]
    image = tree(root)
    esp_now = tree(esp)
    for name, source in [("EFI/debian/grubx64.efi", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"),
                         ("EFI/debian/shimx64.efi", "usr/lib/shim/shimx64.efi.signed"),
                         ("EFI/debian/mmx64.efi", "usr/lib/shim/mmx64.efi.signed"),
                         ("EFI/debian/fbx64.efi", "usr/lib/shim/fbx64.efi.signed"),
                         ("EFI/debian/BOOTX64.CSV", "usr/lib/shim/BOOTX64.CSV"),
                         ("EFI/BOOT/grubx64.efi", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"),
                         ("EFI/BOOT/BOOTX64.EFI", "usr/lib/shim/shimx64.efi.signed")]:
        assert esp_now[name] == image[source], name
    # The old system's stub stays kept for cleanup; what is not ours is left as found.
    assert esp_now["EFI/debian/grub.cfg.inplace-old"] == GRUB_INSTALL_STUB.encode()
    assert esp_now["EFI/BOOT/fbx64.efi"] == b"MZ old fallback"
    assert esp_now["EFI/Microsoft/Boot/bootmgfw.efi"] == b"MZ windows"
    assert not [name for name in esp_now if name.endswith(_esp.NEW_SUFFIX)]

    rerun = _esp.deploy(esp, root, NEW_UUID, "/boot/grub", nvram=lambda: [])
    assert (rerun["steps"], rerun["changed"]) == ([], False)
    assert tree(esp) == esp_now


def test_a_rerun_after_a_cut_writes_what_is_left(tmp_path):
    esp = old_esp(tmp_path / "esp")
    root = image_root(tmp_path / "root", extras=False)
    # Cut after GRUB was renamed into place, with a half-written shim beside its target.
    new_grub = (tmp_path / "root/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed").read_bytes()
    (tmp_path / "esp/EFI/debian/grubx64.efi").write_bytes(new_grub)
    (tmp_path / "esp/EFI/debian/shimx64.efi.inplace-new").write_bytes(b"MZ new sh")
    done = _esp.deploy(esp, root, NEW_UUID, "/boot/grub")
    assert [os.path.relpath(step["write"], esp) for step in done["steps"]] == [
        "EFI/debian/shimx64.efi", "EFI/debian/grub.cfg", "EFI/BOOT/grubx64.efi", "EFI/BOOT/BOOTX64.EFI"]
    now = tree(esp)
    assert now["EFI/debian/shimx64.efi"] == (tmp_path / "root/usr/lib/shim/shimx64.efi.signed").read_bytes()
    assert "EFI/debian/shimx64.efi.inplace-new" not in now
    # Without them in the image, the ESP's MokManager and CSV are left as found.
    assert (now["EFI/debian/mmx64.efi"], now["EFI/debian/BOOTX64.CSV"]) == (b"MZ old mokmanager", b"old csv")


def test_check_mode_plans_the_last_step_and_writes_nothing(tmp_path):
    esp = old_esp(tmp_path / "esp")
    root = image_root(tmp_path / "root")
    before = tree(esp)
    done = _esp.deploy(esp, root, NEW_UUID, "/boot/grub", check_mode=True)
    assert len(done["steps"]) == 8 and done["changed"] is True
    assert tree(esp) == before


def test_the_last_step_goes_to_the_directory_the_new_grub_reads(tmp_path):
    esp = old_esp(tmp_path / "esp")
    root = image_root(tmp_path / "root", vendor="ubuntu")
    _esp.deploy(esp, root, NEW_UUID, "/boot/grub")
    assert _esp.read_stub(esp, "ubuntu") == {"uuid": NEW_UUID, "directory": "/boot/grub"}
    assert _esp.read_stub(esp, "debian") == {"uuid": OLD_UUID, "directory": "/boot/grub"}


def test_an_image_without_shim_is_refused_before_the_esp_is_touched(tmp_path):
    esp = old_esp(tmp_path / "esp")
    root = image_root(tmp_path / "root")
    os.unlink(str(tmp_path / "root/usr/lib/shim/shimx64.efi.signed"))
    before = tree(esp)
    with pytest.raises(MigrationError, match=r"^the image lacks /usr/lib/shim/shimx64.efi.signed, which the ESP needs"):
        _esp.deploy(esp, root, NEW_UUID, "/boot/grub")
    assert tree(esp) == before


# NVRAM ---------------------------------------------------------------------------------------------------------

def test_the_nvram_plan_makes_the_entry_then_puts_it_first(tmp_path):
    missing = _efi.parse_efibootmgr(OVMF_DEBIAN.replace("Boot0004* debian", "Boot0004* other")
                                    .replace("\\EFI\\debian\\shimx64.efi", "\\EFI\\other\\shimx64.efi"))
    assert _esp.nvram_commands(missing, "/dev/vda", 1, ESP_PARTUUID, "debian") == [
        ["efibootmgr", "--create-only", "--disk", "/dev/vda", "--part", "1",
         "--loader", "\\EFI\\debian\\shimx64.efi", "--label", "debian"]]
    # What efibootmgr shows after --create-only: the new entry, last in BootOrder.
    made = _efi.parse_efibootmgr(
        OVMF_DEBIAN.replace("BootOrder: 0004,0001,0000,0002,0003", "BootOrder: 0001,0000,0002,0003,0005")
        + "Boot0005* debian\tHD(1,GPT,%s,0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi)\n" % ESP_PARTUUID)
    assert _esp.nvram_commands(made, "/dev/vda", 1, ESP_PARTUUID, "debian") == [
        ["efibootmgr", "--bootorder", "0005,0001,0000,0002,0003"]]
    assert _esp.nvram_commands(_efi.parse_efibootmgr(OVMF_DEBIAN), "/dev/vda", 1, ESP_PARTUUID, "debian") == []
    # An entry for the same loader on another disk's ESP (a stick) is not the system's.
    assert _esp.nvram_commands(made, "/dev/vda", 1, "11111111-2222-3333-4444-555555555555", "debian")[0][1] == \
        "--create-only"
    # Found inactive: made active as well as first.
    inactive = _efi.parse_efibootmgr(OVMF_DEBIAN.replace("Boot0004* debian", "Boot0004  debian")
                                     .replace("BootOrder: 0004,0001", "BootOrder: 0001,0004"))
    assert _esp.nvram_commands(inactive, "/dev/vda", 1, ESP_PARTUUID, "debian") == [
        ["efibootmgr", "--bootnum", "0004", "--active"], ["efibootmgr", "--bootorder", "0004,0001,0000,0002,0003"]]
    # The entry the deploy makes is the new system's, not ours: cleanup leaves it.
    assert _efi.cleanup_commands(made) == []


# Cleanup ---------------------------------------------------------------------------------------------------------

def test_cleanup_removes_the_kept_stub_and_leftovers_and_leaves_the_rest(tmp_path):
    esp = old_esp(tmp_path / "esp")
    root = image_root(tmp_path / "root")
    _esp.switch_stub(esp, "debian", STORE_UUID, "/boot/grub")
    _esp.deploy(esp, root, NEW_UUID, "/boot/grub")
    (tmp_path / "esp/EFI/BOOT/BOOTX64.EFI.inplace-new").write_bytes(b"MZ cut")
    before = tree(esp)
    state = _efi.parse_efibootmgr(OVMF_DEBIAN + "Boot0007* inplace.migration maintenance\tHD(1,GPT,%s,0x800,0x100000)"
                                  "/File(\\EFI\\debian\\shimx64.efi)\n" % ESP_PARTUUID)

    planned = _esp.cleanup(esp, state, check_mode=True)
    assert tree(esp) == before
    done = _esp.cleanup(esp, state)
    assert planned == done
    assert sorted(os.path.relpath(path, esp) for path in done["removed"]) == [
        "EFI/BOOT/BOOTX64.EFI.inplace-new", "EFI/debian/grub.cfg.inplace-old"]
    assert done["nvram"] == [["efibootmgr", "--bootnum", "0007", "--delete-bootnum"]]
    assert tree(esp) == {name: data for name, data in before.items()
                         if name not in ("EFI/BOOT/BOOTX64.EFI.inplace-new", "EFI/debian/grub.cfg.inplace-old")}
    assert _esp.read_stub(esp, "debian") == {"uuid": NEW_UUID, "directory": "/boot/grub"}
    assert _esp.cleanup(esp, _efi.parse_efibootmgr(OVMF_DEBIAN)) == {"changed": False, "removed": [], "nvram": []}
    assert _esp.cleanup(str(tmp_path / "empty"))["changed"] is False
