# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""image_deploy's hand-over to the new system: its fix-ups, its first-boot hook and GRUB, last; and,
when its first boot never confirmed itself, arming that boot again.

A part of ``image.deploy.Deploy`` (its journal, result and parameters), kept apart so each
file stays readable.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from ansible_collections.inplace.migration.plugins.module_utils.image import fixups as _fixups
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk import mount as _mount
from ansible_collections.inplace.migration.plugins.module_utils.boot import efi as _efi
from ansible_collections.inplace.migration.plugins.module_utils.boot import efi_boot as _efi_boot
from ansible_collections.inplace.migration.plugins.module_utils.boot.grub import install_grub, install_grub_efi
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.rootfs import inside
from ansible_collections.inplace.migration.plugins.module_utils.boot import firstboot as _firstboot
from ansible_collections.inplace.migration.plugins.module_utils.boot.grub import read_grubenv, update_grubenv

# How often a completed deploy arms the new system's one-shot boot before it gives up on a
# first boot that never confirms itself.
FIRST_BOOT_ATTEMPTS = 3


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class HandOver:
    @contextlib.contextmanager
    def boot_directory(self, scan, root, excluded, readonly=False):
        """The new system's /boot as GRUB's core reads it, ``(directory, partition)``: the partition its fstab
        mounts at /boot, mounted apart, or the root's own /boot directory and None."""
        boot = _fixups.boot_partition(root, scan.matching, excluded)
        if boot is None:
            yield os.path.join(root, "boot"), None
            return
        boot["type"] = scan.values(boot["device"]).get("TYPE")
        if boot["type"] not in _fixups.BOOT_FSTYPES:
            raise MigrationError("the new system's /boot partition %s (%s) holds %s, and a separate /boot must be "
                                 "ext2, ext3 or ext4; make it one of those, or correct the fstab line." % (
                                     boot["device"], boot["spec"], boot["type"] or "no filesystem"))
        with _mount.temporary_mount(self.runner, boot["device"], boot["type"], readonly=readonly) as directory:
            yield directory, boot

    def fixups(self, scan, device, disk, fs, store_device):
        params = self.params
        carry = _fixups.load_carry(self.store)
        report = self.result["fixups"]
        store_values = scan.values(store_device) if store_device else {}
        store = scan.identity(store_device) if store_device else {}
        excluded = {os.path.realpath(device): "the partition just written"}
        if store_device:
            excluded[store_device] = "the store"
        store_specs = {prefix + store_values[field] for prefix, field in _devices.SPECS if store_values.get(field)}
        with _mount.temporary_mount(self.runner, device, fs["type"]) as root:
            if not _fixups.looks_like_root(root):
                raise MigrationError("the image written to %s holds no system root (no /etc/passwd or /usr); set the "
                                     "fix-ups and bootloader off for a data image." % device)
            report["fstab"] = _fixups.fix_fstab(root, carry, fs["uuid"], fs["type"], scan.matching, excluded,
                                                store_specs) if params["fstab"] else {"status": "off"}
            report["hostname"] = _fixups.fix_hostname(root, carry) if params["hostname"] else {"status": "off"}
            report["ssh_host_keys"] = (_fixups.fix_ssh_host_keys(root, carry) if params["ssh_host_keys"]
                                       else {"status": "off"})
            report["accounts"] = _fixups.fix_accounts(self.runner, root, carry)
            report["machine_id"] = _fixups.fix_machine_id(root, carry, params["machine_id"])
            if params["firstboot"]:
                if not os.path.exists(inside(root, "/usr/bin/python3")):
                    raise MigrationError("the new system has no /usr/bin/python3, which the first-boot hook needs; "
                                         "add python3 to the image or set firstboot=false.")
                # The hook finds the store by this identity; the label alone could name another device.
                config = {"store_label": store.get("label") or params["store_label"], "store_uuid": store.get("uuid"),
                          "store_partuuid": store.get("partuuid"), "store_identity": store, "deployed": now(),
                          "checksum": "sha256:" + self.expected}
                report["firstboot"] = {"status": "done", "files": _firstboot.install(root, config)}
            else:
                report["firstboot"] = {"status": "off"}
            self.record(state="bootloader")
            if params["bootloader"] == "grub-bios":
                if not store_values.get("UUID"):
                    raise MigrationError("the store %s has no filesystem UUID for GRUB to find it by." %
                                         self.store.root)
                # dest was found by PARTUUID; its disk is held to the recorded one before GRUB goes there.
                self.check_disk(device, "installing the new system's GRUB on it")
                with self.timed("bootloader"), self.boot_directory(scan, root, excluded) as (boot_dir, boot):
                    if boot:
                        report["boot"] = dict(_fixups.fill_boot(self.runner, os.path.join(root, "boot"), boot_dir),
                                              device=boot["device"], spec=boot["spec"])
                    self.result["bootloader"] = install_grub(
                        self.runner, root, disk, device, fs["uuid"], store_values["UUID"], params["maintenance_cmdline"],
                        one_shot=params["firstboot"], boot=boot_dir if boot else None)
                    self.result["bootloader"]["boot"] = boot["device"] if boot else None
            elif params["bootloader"] == "grub-efi":
                if not store_values.get("UUID"):
                    raise MigrationError("the store %s has no filesystem UUID for GRUB to find it by." %
                                         self.store.root)
                self.check_disk(device, "installing the new system's boot loader on its EFI system partition")
                esp = self.esp_device(scan, device)
                with self.timed("bootloader"), self.boot_directory(scan, root, excluded) as (boot_dir, boot), \
                        _mount.temporary_mount(self.runner, esp, "vfat") as esp_dir:
                    if boot:
                        report["boot"] = dict(_fixups.fill_boot(self.runner, os.path.join(root, "boot"), boot_dir),
                                              device=boot["device"], spec=boot["spec"])
                    self.result["bootloader"] = install_grub_efi(
                        self.runner, root, device, fs["uuid"], store_values["UUID"], params["maintenance_cmdline"],
                        one_shot=params["firstboot"], esp=esp_dir, boot=boot_dir if boot else None,
                        boot_uuid=scan.values(boot["device"]).get("UUID") if boot else None,
                        nvram=lambda: self.boot_entry_first(scan, esp, _efi_boot.image_vendor(root)))
                    self.result["bootloader"].update(boot=boot["device"] if boot else None, esp_device=esp)
            else:
                self.result["bootloader"] = {"status": "off"}
            if params["firstboot"] and params["bootloader"] != "none":
                path = os.path.join(root, "etc/inplace-migration/firstboot.json")
                with open(path) as handle:
                    config = json.load(handle)
                config["default_entry"] = self.result["bootloader"]["default_entry"]
                _firstboot.install(root, config)

    def esp_device(self, scan, device):
        """The EFI system partition the new system's loaders go to: the one ``esp`` names, else the only ESP on the
        disk holding ``device``; held to that disk, so a stick's ESP is never written."""
        disk = _devices.parent_disk(device)
        on_disk = [path for path, values in scan.devices.items()
                   if _efi.is_esp_type(values.get("PART_ENTRY_TYPE")) and _devices.parent_disk(path) == disk]
        if self.params.get("esp"):
            esp = scan.find(self.params["esp"], "the EFI system partition")
            if _devices.parent_disk(esp) != disk or esp not in on_disk:
                raise MigrationError("esp=%s (%s) is not an EFI system partition on %s, the disk being migrated; name "
                                     "that disk's ESP." % (self.params["esp"], esp, disk))
            return esp
        if len(on_disk) != 1:
            raise MigrationError("%s has %s; name the one this PC boots from with esp=PARTUUID=...." % (
                disk, "no EFI system partition" if not on_disk else "EFI system partitions %s" % ", ".join(
                    sorted(on_disk))))
        return on_disk[0]

    def boot_entry_first(self, scan, esp, vendor):
        """The new system's NVRAM entry made (when missing), active and first in BootOrder: efibootmgr, read again
        after each change, until nothing is left to do."""
        values = scan.values(esp)
        done = []
        for unused_attempt in range(3):
            state = _efi.parse_efibootmgr(self.runner.output(["efibootmgr", "-v"]))
            commands = _efi_boot.nvram_commands(state, _devices.parent_disk(esp), values.get("PART_ENTRY_NUMBER"),
                                                values.get("PART_ENTRY_UUID"), vendor)
            if not commands:
                return done
            for command in commands:
                self.runner.run(command)
                done.append(command)
        raise MigrationError("the firmware did not keep the boot entry for %s first in BootOrder (efibootmgr ran: %s); "
                             "put it first in the firmware's setup, or check that its NVRAM is not full." % (
                                 _efi_boot.loader_path(vendor), "; ".join(" ".join(c) for c in done)))

    def rearm_first_boot(self, scan, device, record):
        """Boot the new system once more when its first boot never confirmed itself.

        GRUB consumes the one-shot entry as it boots it; a cut during that first boot (or a
        new system that fails) brings the PC back to maintenance, GRUB's saved default. The
        deploy is complete then, but the hook's confirmation is missing from the journal:
        arm the one-shot again, a few times, rather than reboot into maintenance forever.
        """
        params = self.params
        if not params["firstboot"] or params["bootloader"] == "none" or \
                (self.journal.get(_firstboot.JOURNAL_KEY) or {}).get("confirmed"):
            return self.result
        fstype = (record.get("filesystem") or {}).get("type") or "ext4"
        excluded = {os.path.realpath(device): "the partition just written"}
        with _mount.temporary_mount(self.runner, device, fstype, readonly=self.check_mode) as root, \
                self.boot_directory(scan, root, excluded, readonly=self.check_mode) as (boot_dir, unused_boot):
            grubenv = os.path.join(boot_dir, "grub", "grubenv")
            entry = (_firstboot.read_config(root) or {}).get("default_entry")
            if not entry or read_grubenv(grubenv).get("next_entry") == entry:
                return self.result
            attempts = record.get("first_boot_attempts", 1)
            if attempts >= FIRST_BOOT_ATTEMPTS:
                raise MigrationError(
                    "the new system on %s was booted %d times and never confirmed its first boot; look at its console "
                    "(or boot it from GRUB's menu) to see why, fix the image, and deploy again." % (device, attempts))
            self.result.update(changed=True, first_boot_rearmed=entry)
            if not self.check_mode:
                update_grubenv(grubenv, next_entry=entry)
                self.record(first_boot_attempts=attempts + 1)
        return self.result
