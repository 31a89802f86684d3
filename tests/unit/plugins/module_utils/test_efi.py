"""UEFI: efibootmgr's entries and the commands that change them, Secure Boot, the ESP, signed boot chains."""

from __future__ import annotations

import os

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.boot import efi as _efi
from tests.support.efi_samples import EFIVAR38, ESP_PARTUUID, OVMF_DEBIAN, PC_SPACES, pe_header


def test_ovmf_output_with_tabs():
    state = _efi.parse_efibootmgr(OVMF_DEBIAN)
    assert state["current"] == "0004" and state["next"] is None and state["timeout"] == 0
    assert state["order"] == ["0004", "0001", "0000", "0002", "0003"]
    assert list(state["entries"]) == ["0000", "0001", "0002", "0003", "0004"]
    debian = state["entries"]["0004"]
    assert (debian.label, debian.active, debian.partition, debian.partuuid, debian.file) == (
        "debian", True, 1, ESP_PARTUUID, "\\EFI\\debian\\shimx64.efi")
    disk = state["entries"]["0001"]
    assert disk.label == "UEFI QEMU HARDDISK QM00001" and disk.file is None and disk.partuuid is None
    assert disk.device_path.startswith("PciRoot(0x0)/Pci(0x1,0x1)/Ata(0x0)")


def test_pc_output_with_spaces_a_bootnext_and_an_inactive_entry():
    state = _efi.parse_efibootmgr(PC_SPACES)
    assert state["current"] == "0002" and state["next"] == "0005" and state["timeout"] == 1
    entries = state["entries"]
    assert entries["0000"].label == "Windows Boot Manager"
    assert entries["0000"].device_path.startswith("VenHw(99e275e7")
    assert entries["0004"].label == "UEFI : Built-in EFI Shell" and entries["0004"].active is False
    assert entries["0005"].label == "inplace.migration maintenance" and entries["0005"].ours()
    assert not entries["0002"].ours()
    assert [e.number for e in _efi.entries_for(state, "/EFI/debian/shimx64.efi")] == ["0001", "0002", "0005"]
    assert [e.number for e in _efi.entries_for(state, "\\efi\\debian\\SHIMX64.EFI",
                                               "77ED79E1-AE0B-4979-827F-AD7B119D688B")] == ["0001"]


def test_efivar_38_bare_paths_and_dp_lines():
    state = _efi.parse_efibootmgr(EFIVAR38)
    assert list(state["entries"]) == ["0000", "0001", "0003"]
    assert state["entries"]["0001"].file == "\\EFI\\fedora\\shimx64.efi"
    assert state["entries"]["0001"].partuuid == "82f3e1c8-8654-4797-a584-90f373331323"
    # The optional data runs on after the name; only the .efi file is taken.
    assert state["entries"]["0003"].file == "\\EFI\\BOOT\\BOOTX64.EFI"
    assert state["entries"]["0000"].file is None


def test_empty_or_foreign_output_reads_as_no_entries():
    assert _efi.parse_efibootmgr("") == {"current": None, "next": None, "order": [], "timeout": None, "entries": {}}
    assert _efi.parse_efibootmgr("EFI variables are not supported on this system.\n")["entries"] == {}


def test_create_entry_leaves_bootorder_to_a_separate_command():
    assert _efi.create_entry_command("/dev/nvme0n1", 1, "/EFI/debian/shimx64.efi", "debian") == [
        "efibootmgr", "--create-only", "--disk", "/dev/nvme0n1", "--part", "1",
        "--loader", "\\EFI\\debian\\shimx64.efi", "--label", "debian"]


def test_bootnext():
    assert _efi.bootnext_command("5") == ["efibootmgr", "--bootnext", "5"]
    assert _efi.bootnext_command("000a") == ["efibootmgr", "--bootnext", "000A"]


def test_first_in_bootorder_keeps_the_rest_in_order_and_is_nothing_when_already_first():
    state = _efi.parse_efibootmgr(OVMF_DEBIAN)
    assert _efi.first_in_order_command(state, "0002") == ["efibootmgr", "--bootorder", "0002,0004,0001,0000,0003"]
    assert _efi.first_in_order_command(state, "0004") is None
    # An entry missing from BootOrder (made with --create-only) is put in front of it.
    pc = _efi.parse_efibootmgr(PC_SPACES.replace("BootOrder: 0002,0004,0001,0000,0005", "BootOrder: 0002,0004"))
    assert _efi.first_in_order_command(pc, "0005") == ["efibootmgr", "--bootorder", "0005,0002,0004"]
    with pytest.raises(ValueError, match="Boot0009"):
        _efi.first_in_order_command(state, "0009")


def test_cleanup_removes_only_our_entries_and_a_bootnext_to_one():
    assert _efi.cleanup_commands(_efi.parse_efibootmgr(PC_SPACES)) == [
        ["efibootmgr", "--delete-bootnext"], ["efibootmgr", "--bootnum", "0005", "--delete-bootnum"]]
    assert _efi.cleanup_commands(_efi.parse_efibootmgr(OVMF_DEBIAN)) == []
    other_next = _efi.parse_efibootmgr(PC_SPACES.replace("BootNext: 0005", "BootNext: 0001"))
    assert _efi.cleanup_commands(other_next) == [["efibootmgr", "--bootnum", "0005", "--delete-bootnum"]]


def _efivar(root, data, name="SecureBoot"):
    directory = os.path.join(root, "sys/firmware/efi/efivars")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name + "-8be4df61-93ca-11d2-aa0d-00e098032b8c"), "wb") as handle:
        handle.write(data)


def test_secure_boot_state_from_efivars(tmp_path):
    root = str(tmp_path)
    assert _efi.secure_boot(root) is None and not _efi.booted_with_uefi(root)
    _efivar(root, b"\x06\x00\x00\x00\x01")
    assert _efi.secure_boot(root) is True and _efi.booted_with_uefi(root)
    _efivar(root, b"\x06\x00\x00\x00\x00")
    assert _efi.secure_boot(root) is False
    _efivar(root, b"\x06\x00\x00")
    assert _efi.secure_boot(root) is None


def test_boot_order_and_current_from_efivars(tmp_path):
    root = str(tmp_path)
    assert _efi.boot_order(root) == [] and _efi.boot_current(root) is None
    _efivar(root, b"\x07\x00\x00\x00\x04\x00\x01\x00\x00\x00\x0a\x00", "BootOrder")
    _efivar(root, b"\x06\x00\x00\x00\x04\x00", "BootCurrent")
    assert _efi.boot_order(root) == ["0004", "0001", "0000", "000A"]
    assert _efi.boot_current(root) == "0004"


def test_esp_of_a_disk_by_its_partition_type():
    devices = [
        {"path": "/dev/sda1", "parent": "/dev/sda", "parttype": _efi.ESP_TYPE},
        {"path": "/dev/nvme0n1p1", "parent": "/dev/nvme0n1", "parttype": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"},
        {"path": "/dev/nvme0n1p2", "parent": "/dev/nvme0n1", "parttype": "0fc63daf-8483-4772-8e79-3d69d8477de4"},
        {"path": "/dev/nvme0n1", "parent": None, "parttype": None},
        {"path": "/dev/sdb1", "parent": "/dev/sdb", "parttype": "0x83"},
        {"path": "/dev/sdb2", "parent": "/dev/sdb", "parttype": "0xEF"},
    ]
    assert _efi.esp_partitions(devices, "/dev/nvme0n1") == ["/dev/nvme0n1p1"]
    assert _efi.esp_partitions(devices, "/dev/vda") == []
    assert _efi.esp_partitions(devices, "/dev/sdb") == ["/dev/sdb2"]  # an msdos ESP


@pytest.mark.parametrize("header, signed", [
    (pe_header(), True),
    (pe_header(pe32_plus=False), True),
    (pe_header(signed=False), False),
    (pe_header(directories=4), False),
    (pe_header(directories=6, pe_offset=0x40), True),
    (pe_header()[:0x90], False),
    (b"\x7fELF" + bytes(200), False),
    (b"MZ" + bytes(100), False),
    (b"", False),
], ids=["pe32+", "pe32", "unsigned", "no-security-directory", "six-directories", "truncated", "elf", "no-pe",
        "empty"])
def test_authenticode_signature_from_the_pe_headers(tmp_path, header, signed):
    path = tmp_path / "vmlinuz"
    path.write_bytes(header + bytes(64))
    assert _efi.authenticode_signed(str(path)) is signed


def _image(root, shim=True, grub=True, kernel=b"signed"):
    if shim:
        (root / "usr/lib/shim").mkdir(parents=True)
        (root / "usr/lib/shim/shimx64.efi.signed").write_bytes(pe_header())
    if grub:
        (root / "usr/lib/grub/x86_64-efi-signed").mkdir(parents=True)
        (root / "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed").write_bytes(pe_header())
    (root / "boot").mkdir()
    if kernel:
        (root / "boot/vmlinuz-6.12.0-1-amd64").write_bytes(pe_header(signed=kernel == b"signed"))


def test_a_whole_signed_chain(tmp_path):
    _image(tmp_path)
    chain = _efi.signed_boot_chain(str(tmp_path))
    assert chain == {"shim": "/usr/lib/shim/shimx64.efi.signed",
                     "grub": "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
                     "kernels": ["/boot/vmlinuz-6.12.0-1-amd64"], "unsigned_kernels": [], "missing": []}


def test_what_a_chain_lacks_is_named(tmp_path):
    _image(tmp_path, shim=False, kernel=b"unsigned")
    chain = _efi.signed_boot_chain(str(tmp_path))
    assert chain["unsigned_kernels"] == ["/boot/vmlinuz-6.12.0-1-amd64"]
    assert chain["missing"] == ["shim (/usr/lib/shim/shimx64.efi.signed, from shim-signed)",
                                "a signed kernel (none of /boot/vmlinuz-6.12.0-1-amd64 carries a signature)"]


def test_an_image_without_kernel_or_grub(tmp_path):
    _image(tmp_path, grub=False, kernel=None)
    assert _efi.signed_boot_chain(str(tmp_path))["missing"] == [
        "signed GRUB (/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed, from grub-efi-amd64-signed)",
        "a signed kernel (no kernel in /boot)"]


def test_a_kernel_under_usr_lib_modules_counts(tmp_path):
    _image(tmp_path, kernel=None)
    (tmp_path / "usr/lib/modules/6.12.0-1-amd64").mkdir(parents=True)
    (tmp_path / "usr/lib/modules/6.12.0-1-amd64/vmlinuz").write_bytes(pe_header())
    assert _efi.signed_boot_chain(str(tmp_path))["kernels"] == ["/usr/lib/modules/6.12.0-1-amd64/vmlinuz"]
