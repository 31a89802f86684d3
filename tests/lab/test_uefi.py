"""UEFI lab groundwork: OVMF with and without Secure Boot, a variable store per machine, ESPs filled
with mtools, and Debian's signed chain booted from such an ESP."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import time

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.boot import efi, grub
from tests.lab import machines, uefi
from tests.lab.machines import LabError
from tests.support import adhoc

BOOT_SECONDS = 180
GRUB_CFG = """echo "inplace: grub.cfg read, prefix ${prefix}"
load_env -f ${prefix}/grubenv
echo "inplace: next_entry=${next_entry}"
set next_entry=
save_env -f ${prefix}/grubenv next_entry
if linux /unsigned-vmlinuz console=ttyS0,115200 panic=-1; then
  echo "inplace: unsigned kernel loaded"
else
  echo "inplace: unsigned kernel refused"
  linux /vmlinuz console=ttyS0,115200 panic=-1
fi
boot
"""
# Without Secure Boot the unsigned kernel is booted: GRUB 2.06 (bookworm, EFI) hung when a second `linux`
# replaced a kernel already loaded.


def test_an_esp_disk_holds_its_files_on_a_fat_esp_of_a_gpt(tmp_path):
    (tmp_path / "loader").write_bytes(os.urandom(70000))
    (tmp_path / "grub.cfg").write_text("configfile /boot/grub/grub.cfg\n")
    disk = str(tmp_path / "disk.img")
    target = uefi.esp_disk(disk, 160, {"EFI/BOOT/BOOTX64.EFI": str(tmp_path / "loader"),
                                       "EFI/debian/grub.cfg": str(tmp_path / "grub.cfg")},
                           rest_type=uefi.LINUX_TYPE)
    table = subprocess.run(["sfdisk", "--json", disk], stdout=subprocess.PIPE, text=True, check=True).stdout
    assert '"type": "%s"' % uefi.ESP_TYPE in table and '"start": 2048' in table and uefi.LINUX_TYPE in table
    probe = subprocess.run(["blkid", "-p", "-o", "export", "-O", str(1024 * 1024), disk], stdout=subprocess.PIPE,
                           text=True, check=True).stdout.split()
    assert "TYPE=vfat" in probe and "LABEL=ESP" in probe and "VERSION=FAT32" in probe
    assert uefi.fat_listing(target) == ["::/EFI/BOOT/BOOTX64.EFI", "::/EFI/debian/grub.cfg"]
    copied = tmp_path / "back"
    subprocess.run(["mcopy", "-i", target, "::/EFI/BOOT/BOOTX64.EFI", str(copied)], check=True)
    assert copied.read_bytes() == (tmp_path / "loader").read_bytes()


@pytest.mark.parametrize("secure_boot", [False, True], ids=["plain", "secure-boot"])
def test_each_machine_has_a_variable_store_of_its_own_kept_across_starts(tmp_path, secure_boot):
    unused_code, template = uefi.firmware_files(secure_boot)
    first = uefi.machine_vars(str(tmp_path), "pc1", secure_boot)
    second = uefi.machine_vars(str(tmp_path), "pc2", secure_boot)
    assert first != second
    with open(template, "rb") as handle:
        assert open(first, "rb").read() == handle.read()
    with open(first, "r+b") as handle:
        handle.write(b"written by the firmware")
    assert uefi.machine_vars(str(tmp_path), "pc1", secure_boot) == first
    assert open(first, "rb").read(23) == b"written by the firmware"


def test_firmware_arguments(tmp_path):
    plain = uefi.firmware_args(str(tmp_path), "pc1", False)
    assert plain[:2] == ["-machine", "q35"] and "-global" not in plain
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd" in plain
    assert "if=pflash,format=raw,unit=1,file=%s/pc1.vars.fd" % tmp_path in plain
    secure = uefi.firmware_args(str(tmp_path), "pc1", True)
    assert secure[:4] == ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.ms.fd" in secure
    assert "if=pflash,format=raw,unit=1,file=%s/pc1.vars.ms.fd" % tmp_path in secure
    assert uefi.uefi_command(["qemu-system-x86_64", "-m", "512"], str(tmp_path), "pc1", False) == [
        "qemu-system-x86_64", "-m", "512"] + plain


def test_missing_ovmf_is_named(tmp_path):
    with pytest.raises(LabError, match="install Debian's ovmf package"):
        uefi.firmware_args(str(tmp_path), "pc1", True, ovmf_dir=str(tmp_path / "none"))


def strip_signature(source, destination):
    """A copy of a signed PE kernel whose certificate table entry is zero: unsigned to a verifier."""
    with open(source, "rb") as handle:
        data = bytearray(handle.read())
    optional = struct.unpack_from("<I", data, 0x3C)[0] + 24
    struct.pack_into("<II", data, optional + 108 + 4 + 8 * 4, 0, 0)
    with open(destination, "wb") as handle:
        handle.write(data)


def test_debian_s_signed_packages_are_a_whole_signed_chain():
    chain = efi.signed_boot_chain(uefi.signed_boot_files())
    assert chain["missing"] == [] and chain["shim"] and chain["grub"] and chain["kernels"]


@pytest.mark.parametrize("secure_boot", [False, True], ids=["plain", "secure-boot"])
def test_ovmf_boots_the_signed_chain_from_the_esp(tmp_path, secure_boot):
    """shim as the removable-media loader, Debian's signed GRUB reading \\EFI\\debian\\grub.cfg (its compiled-in
    prefix), its one-shot saved; with Secure Boot an unsigned kernel is refused and the signed one booted,
    without it the unsigned one is booted."""
    signed = uefi.signed_boot_files()
    kernel = os.path.join(signed, "boot", sorted(os.listdir(os.path.join(signed, "boot")))[0])
    strip_signature(kernel, str(tmp_path / "unsigned-vmlinuz"))
    assert not efi.authenticode_signed(str(tmp_path / "unsigned-vmlinuz"))
    (tmp_path / "grub.cfg").write_text(GRUB_CFG)
    grub.write_grubenv(str(tmp_path / "grubenv"), {"saved_entry": grub.MAINTENANCE_ENTRY, "next_entry": "new"})
    disk = str(tmp_path / "disk.img")
    target = uefi.esp_disk(disk, 160, {
        "EFI/BOOT/BOOTX64.EFI": os.path.join(signed, "usr/lib/shim/shimx64.efi.signed"),
        "EFI/BOOT/grubx64.efi": os.path.join(signed, "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"),
        "EFI/debian/grub.cfg": str(tmp_path / "grub.cfg"), "EFI/debian/grubenv": str(tmp_path / "grubenv"),
        "vmlinuz": kernel, "unsigned-vmlinuz": str(tmp_path / "unsigned-vmlinuz")}, esp_mib=128)
    log = tmp_path / "serial.log"
    command = ["qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", "512", "-display", "none", "-nic", "none",
               "-no-reboot", "-serial", "file:%s" % log, "-drive", "file=%s,if=virtio,format=raw" % disk]
    started = time.monotonic()
    qemu = subprocess.Popen(uefi.uefi_command(command, str(tmp_path), "pc1", secure_boot),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The kernel finds no root, panics and, with panic=-1 and -no-reboot, ends QEMU.
        qemu.wait(timeout=BOOT_SECONDS)
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    seconds = time.monotonic() - started
    text = log.read_bytes().decode("utf-8", "replace").replace("\r", "")
    assert "inplace: grub.cfg read, prefix (hd0,gpt1)/EFI/debian" in text, text[-2000:]
    assert "inplace: next_entry=new" in text
    back = tmp_path / "grubenv.after"
    subprocess.run(["mcopy", "-i", target, "::/EFI/debian/grubenv", str(back)], check=True)
    assert grub.read_grubenv(str(back)) == {"saved_entry": grub.MAINTENANCE_ENTRY, "next_entry": ""}
    if secure_boot:
        assert "bad shim signature" in text and "inplace: unsigned kernel refused" in text
        assert "BOOT_IMAGE=/vmlinuz " in text
        assert "Kernel is locked down from EFI Secure Boot" in text and "Secure boot enabled" in text
    else:
        assert "inplace: unsigned kernel loaded" in text and "BOOT_IMAGE=/unsigned-vmlinuz " in text
        assert "Secure boot disabled" in text
    assert "Linux version" in text and "Kernel panic" in text, "%.0f s: %s" % (seconds, text[-2000:])
    print("OVMF%s to a kernel panic: %.0f s" % (" with Secure Boot" if secure_boot else "", seconds))


SECURE_BOOT_VARIABLE = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
MAINTENANCE_ONCE = """\
- hosts: lab-pcs
  gather_facts: false
  become: true
  tasks:
    - name: What preflight learns of the PC (it still refuses UEFI; its facts and store plan make the host record)
      inplace.migration.preflight_facts:
        maintenance_bytes: 128M
        store: {margin: 64M}
      register: facts

    - name: The host record preflight's plan would be
      ansible.builtin.set_fact:
        record:
          disk: "{{ facts.disk }}"
          root_partuuid: "{{ facts.root.partuuid }}"
          root_uuid: "{{ facts.root.uuid }}"
          boot_separate: "{{ facts.boot.separate }}"
          boot_uuid: "{{ facts.boot.uuid }}"
          store_bytes: "{{ facts.store.partition.size }}"
          store_usable_bytes: "{{ facts.store.need.total }}"
          image_bytes: 0
          firmware: uefi
          esp_partuuid: "{{ facts.uefi.esp_partuuid }}"

    - name: Keep it for the store's run
      ansible.builtin.copy:
        content: "{{ record | to_json }}"
        dest: "{{ record_file }}"
        mode: "0600"
      delegate_to: localhost
      become: false

    - name: Stage the maintenance environment and boot it once through the old system's GRUB
      ansible.builtin.include_role:
        name: inplace.migration.maintenance_env
      vars:
        maintenance_env_host_record: "{{ record }}"
        maintenance_env_reboot_timeout: 900
"""
STORE_ONCE = """\
- hosts: lab-pcs
  gather_facts: false
  become: true
  vars:
    record: "{{ lookup('ansible.builtin.file', record_file) | from_json }}"
  tasks:
    - name: Make the store and boot maintenance from it from now on (the ESP's stub pointed at the store)
      ansible.builtin.include_role:
        name: inplace.migration.store
      vars:
        store_host_record: "{{ record }}"

    - name: Reboot, into maintenance from the store's menu
      ansible.builtin.include_role:
        name: inplace.migration.common
        tasks_from: reboot
      vars:
        common_reboot_into: maintenance
        common_reboot_timeout: 900
"""


@pytest.mark.long
def test_a_uefi_lab_pc_with_secure_boot_boots_maintenance_once_then_from_the_store(tmp_path):
    """The lab's UEFI PC (layout gpt-uefi): Debian 12 from Debian's signed shim, GRUB and kernel with Secure Boot
    on, its ESP at /boot/efi, and shim's fallback made the "debian" boot entry, first in BootOrder, as after an
    install whose NVRAM entry was lost. Then the UEFI design (docs/architecture.md, "Booting: UEFI") up to the
    store: the maintenance_env role, as on a BIOS PC, puts Debian's signed kernel and the initramfs in
    /boot/inplace and arms GRUB's one-shot; the firmware boots the "debian" entry, the signed GRUB reads that menu,
    has shim verify the kernel, and the maintenance environment comes up with Secure Boot on. The store role makes
    the store and points the ESP's stub at the store's menu, and the next boot is maintenance from the store,
    through the same entry, with Secure Boot on."""
    lab = machines.Lab(str(tmp_path / "lab"))
    try:
        (name,) = lab.add(1, ["gpt-uefi"])
        seconds = lab.start(timeout=900)[name]

        def on_pc(command):
            return subprocess.run(lab.ssh_command(name, "sudo", "sh", "-c", "'%s'" % command), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, check=True).stdout.strip()

        def playbook(text, name):
            book = tmp_path / name
            book.write_text(text)
            started = time.monotonic()
            proc = subprocess.run(["ansible-playbook", "-i", lab.inventory, "-e", "record_file=%s" % record_file,
                                   str(book)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=adhoc.environment(), check=False, timeout=1800)
            assert proc.returncode == 0, proc.stdout[-6000:]
            return time.monotonic() - started

        def secure_boot_enabled():
            # The variable's four attribute bytes, then its one byte of value.
            return on_pc("od -An -t u1 %s" % SECURE_BOOT_VARIABLE).split()[-1] == "1" and \
                "Secure boot enabled" in on_pc("dmesg")

        def boot_current():
            return [line.split()[1] for line in on_pc("efibootmgr").splitlines() if line.startswith("BootCurrent:")]

        record_file = tmp_path / "record.json"
        assert secure_boot_enabled()
        assert on_pc("findmnt -n -o SOURCE,FSTYPE /") == "/dev/vda2 ext4"
        assert on_pc("findmnt -n -o SOURCE,FSTYPE /boot/efi") == "/dev/vda1 vfat"
        esp = ["BOOTX64.CSV", "grub.cfg", "grubx64.efi", "mmx64.efi", "shimx64.efi"]
        assert on_pc("ls /boot/efi/EFI/debian").split() == esp
        old_stub = on_pc("cat /boot/efi/EFI/debian/grub.cfg")
        assert on_pc("findmnt -n -o UUID /") in old_stub
        # The firmware booted the removable-media path (the disk itself, no entry of Debian's yet); shim found its
        # fallback there, which made the "debian" entry from BOOTX64.CSV, first in BootOrder, and booted on.
        entries = on_pc("efibootmgr -v").splitlines()
        order = [line.split()[1].split(",") for line in entries if line.startswith("BootOrder:")][0]
        first = [line for line in entries if line.startswith("Boot%s" % order[0])][0]
        partuuid = on_pc("blkid -s PARTUUID -o value /dev/vda1")
        assert re.search(r"\* debian\s+HD\(1,GPT,%s,0x800,0x40000\)/File\(\\EFI\\debian\\shimx64\.efi\)" % partuuid,
                         first), entries

        maintenance_seconds = playbook(MAINTENANCE_ONCE, "maintenance-once.yml")
        assert json.loads(record_file.read_text())["esp_partuuid"] == partuuid
        assert on_pc("test -f /etc/inplace-maintenance && grep -ow inplace.maintenance /proc/cmdline") == \
            "inplace.maintenance"
        # The old system's menu: the files in its /boot/inplace.
        assert "BOOT_IMAGE=/boot/inplace/vmlinuz " in on_pc("cat /proc/cmdline")
        assert on_pc("findmnt -n -o FSTYPE /") in ("rootfs", "tmpfs")
        assert secure_boot_enabled()
        # From the second boot on, the firmware boots the entry the fallback made.
        assert boot_current() == [order[0]]

        store_seconds = playbook(STORE_ONCE, "store-once.yml")
        # The store's menu, read through the stub by the same signed GRUB: the files on the store.
        assert "BOOT_IMAGE=/inplace/boot/vmlinuz " in on_pc("cat /proc/cmdline")
        assert on_pc("test -f /etc/inplace-maintenance && echo yes") == "yes"
        assert secure_boot_enabled() and boot_current() == [order[0]]
        store_uuid = on_pc("blkid -t LABEL=INPLACE-STORE -s UUID -o value")
        on_pc("mkdir -p /run/esp && mount -o ro PARTUUID=%s /run/esp" % partuuid)
        try:
            assert on_pc("ls /run/esp/EFI/debian").split() == sorted(esp + ["grub.cfg.inplace-old"])
            assert on_pc("cat /run/esp/EFI/debian/grub.cfg.inplace-old") == old_stub
            assert on_pc("cat /run/esp/EFI/debian/grub.cfg") == (
                "# Written by inplace.migration: the GRUB directory this PC boots from.\n"
                "search --no-floppy --fs-uuid --set=root %s\n"
                "set prefix=($root)'/boot/grub'\n"
                "configfile $prefix/grub.cfg" % store_uuid)
        finally:
            on_pc("umount /run/esp")
        print("UEFI lab PC with Secure Boot to SSH: %.0f s; into maintenance through the role: %.0f s; store made and "
              "maintenance booted from it: %.0f s" % (seconds, maintenance_seconds, store_seconds))
    finally:
        lab.stop(timeout=90)
