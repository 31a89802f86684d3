"""UEFI lab machines: OVMF firmware (from Debian's ``ovmf`` package), with and without Secure Boot,
a writable variable store per machine, and disks whose EFI system partition is filled with mtools
(the controller cannot mount vfat).

A UEFI machine is a ``machines.qemu_command`` with ``firmware_args`` added: QEMU's q35 machine,
OVMF's code read-only and the machine's own copy of the variables. With Secure Boot the firmware
is the build with Microsoft's keys enrolled (``.ms.fd``), which needs SMM and a secure flash, as on
a PC where the variables can only be changed through the firmware.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.lab import cache
from tests.lab.machines import LabError

OVMF_DIR = "/usr/share/OVMF"
# (code, variables template) per Secure Boot setting; the 4 MiB builds, which hold Microsoft's keys.
FIRMWARE = {False: ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"), True: ("OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd")}
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
MiB = 1024 * 1024
SIGNED_PACKAGES = ["shim-signed", "grub-efi-amd64-signed", "linux-image-cloud-amd64"]
# What is kept of them, at the paths an image root has them (boot.efi.signed_boot_chain reads them there).
SIGNED_FILES = ["usr/lib/shim/shimx64.efi.signed", "usr/lib/shim/mmx64.efi.signed", "usr/lib/shim/fbx64.efi.signed",
                "usr/lib/shim/BOOTX64.CSV", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"]


def firmware_files(secure_boot, ovmf_dir=OVMF_DIR):
    code, variables = (os.path.join(ovmf_dir, name) for name in FIRMWARE[bool(secure_boot)])
    missing = [path for path in (code, variables) if not os.path.isfile(path)]
    if missing:
        raise LabError("OVMF is missing (%s); install Debian's ovmf package (./dev setup does)" % ", ".join(missing))
    return code, variables


def machine_vars(directory, name, secure_boot, ovmf_dir=OVMF_DIR):
    """The machine's own variable store, copied from OVMF's template once and kept: NVRAM survives
    its reboots and power cuts as a PC's does, and machines never share boot entries."""
    unused_code, template = firmware_files(secure_boot, ovmf_dir)
    path = os.path.join(directory, "%s.vars%s.fd" % (name, ".ms" if secure_boot else ""))
    if not os.path.exists(path):
        shutil.copyfile(template, path + ".tmp")
        os.replace(path + ".tmp", path)
    return path


def firmware_args(directory, name, secure_boot, ovmf_dir=OVMF_DIR):
    code, unused_template = firmware_files(secure_boot, ovmf_dir)
    variables = machine_vars(directory, name, secure_boot, ovmf_dir)
    args = ["-machine", "q35,smm=on" if secure_boot else "q35"]
    if secure_boot:
        args += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return args + ["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
                   "-drive", "if=pflash,format=raw,unit=1,file=" + variables]


def uefi_command(command, directory, name, secure_boot, ovmf_dir=OVMF_DIR):
    """A lab machine's QEMU command (``machines.qemu_command``) booting through OVMF."""
    return list(command) + firmware_args(directory, name, secure_boot, ovmf_dir)


def _run(args):
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode != 0:
        raise LabError("%s failed: %s" % (" ".join(args), proc.stdout.strip()))
    return proc.stdout


def fill_fat(target, files):
    """Copy ``files`` (a dict: path on the FAT, e.g. ``EFI/BOOT/BOOTX64.EFI`` -> file on the controller)
    into the FAT filesystem ``target`` (an mtools image spec, ``disk.img@@1M`` for a partition)."""
    made = set()
    for esp_path in sorted(files):
        parts = esp_path.strip("/").split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                listing = subprocess.run(["mdir", "-i", target, "-b", "::/" + directory], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, check=False)
                if listing.returncode != 0:
                    _run(["mmd", "-i", target, "::/" + directory])
                made.add(directory)
        _run(["mcopy", "-o", "-i", target, files[esp_path], "::/" + "/".join(parts)])


def esp_disk(path, size_mib, files, esp_mib=64, rest_type=None):
    """A raw GPT disk image with an ESP from 1 MiB (FAT, label ESP) holding ``files``; with
    ``rest_type`` (a partition type GUID) a second partition takes the rest. Returns the mtools spec
    of the ESP, for ``fill_fat`` and ``fat_listing``."""
    with open(path, "wb") as handle:
        handle.truncate(size_mib * MiB)
    table = "label: gpt\n1MiB,%dMiB,%s,\n" % (esp_mib, ESP_TYPE)
    if rest_type:
        table += ",,%s,\n" % rest_type
    proc = subprocess.run(["sfdisk", "--quiet", path], input=table, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    if proc.returncode != 0:
        raise LabError("sfdisk could not write the table of %s: %s" % (path, proc.stdout.strip()))
    return format_esp(path, 1, esp_mib, files)


def format_esp(path, start_mib, size_mib, files, serial=None):
    """A FAT32 filesystem labelled ESP (volume serial ``serial``, 8 hex digits, if given) on the partition of the raw
    disk image ``path`` that starts ``start_mib`` MiB in and is ``size_mib`` long, holding ``files``; returns its
    mtools spec."""
    target = "%s@@%dM" % (path, start_mib)
    # mformat takes the geometry from the size given; -F makes FAT32, as the UEFI spec asks of an ESP.
    command = ["mformat", "-i", target, "-T", str(size_mib * MiB // 512), "-h", "64", "-s", "32", "-F", "-v", "ESP"]
    if serial:
        command += ["-N", serial]
    _run(command + ["::"])
    fill_fat(target, files)
    return target


def fat_listing(target):
    """Every file on a FAT filesystem (mtools spec), as ``::/EFI/BOOT/BOOTX64.EFI`` paths."""
    out = _run(["mdir", "-i", target, "-/", "-b", "::"])
    return sorted(line.strip() for line in out.splitlines() if line.strip() and not line.strip().endswith("/"))


def _extract_signed(suite, work):
    extracted = os.path.join(work, ".extract")
    # extract: the packages and their dependencies unpacked, no maintainer script run (shim-signed's would
    # try grub-install).
    _run(["mmdebstrap", "--quiet", "--variant=extract", "--include=" + ",".join(SIGNED_PACKAGES), suite, extracted])
    kernels = sorted(name for name in os.listdir(os.path.join(extracted, "boot")) if name.startswith("vmlinuz-"))
    for relative in SIGNED_FILES + ["boot/" + name for name in kernels]:
        os.makedirs(os.path.dirname(os.path.join(work, relative)), exist_ok=True)
        shutil.copy2(os.path.join(extracted, relative), os.path.join(work, relative))
    shutil.rmtree(extracted)


def signed_boot_files(suite="bookworm"):
    """Debian's signed shim, GRUB and kernel of ``suite`` (cached), as a directory laid out like an image root."""
    inputs = {"suite": suite, "packages": SIGNED_PACKAGES, "files": SIGNED_FILES}
    return cache.cached("signed-boot-" + suite, cache.key(inputs), lambda work: _extract_signed(suite, work))
