#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_deploy
short_description: Write a verified OS image onto the system partition and make it boot
version_added: 0.2.0
description:
  - Writes the image O(src) onto the partition O(dest), then fixes up the new system so that it keeps the old
    one's identity and access, and hands booting over to it with GRUB as the very last step.
  - Refuses, before writing anything and with one sentence saying why, a O(dest) that is mounted or in use, a whole
    disk, the EFI system partition, the partition holding O(store), a partition named in O(protect), a partition
    smaller than the image's filesystem, an image of unknown format, a missing source, (for a local file) a checksum
    that does not match, and (with O(require_capture)) a store without a complete, verified profile capture.
  - Raw images are streamed through the system's own decompressor with bounded memory, in large aligned writes
    (C(O_DIRECT) where the device takes it), with runs of zeros turned into C(BLKZEROOUT) requests instead of
    writes, and C(fsync) at the end. qcow2 images are written by C(qemu-img convert). Root-filesystem archives get a
    fresh O(fstype) filesystem and are extracted with owners, modes, ACLs and extended attributes.
  - The journal on the store records each step. A raw write that was interrupted resumes from its last checkpoint
    when the module runs again with the same image and O(dest) (the image is still read, and hashed, from its start);
    an archive restarts from mkfs; a finished write continues with its fix-ups; a completed deploy of the same image
    is V(changed=false).
  - Before the first write, what the fix-ups need of the old system on O(dest) (hostname, SSH host keys, machine-id,
    fstab, the accounts in O(carry_accounts)) is copied into the store under C(inplace/carry/), so a rerun after an
    interruption still has it. Each fix-up is an option and is reported in RV(fixups).
requirements:
  - util-linux, e2fsprogs; zstd, gzip or xz-utils for compressed images; qemu-utils for qcow2; GNU tar for archives
  - btrfs-progs or xfsprogs for those filesystems; sudo (visudo) to check carried sudo rules
  - In the image, for O(bootloader=grub-bios), grub-pc; for O(bootloader=grub-efi), shim-signed,
    grub-efi-amd64-signed and grub2-common; for O(firstboot=true), python3
  - For O(bootloader=grub-efi), efibootmgr and vfat in the environment the module runs in
extends_documentation_fragment:
  - inplace.migration.attributes
  - inplace.migration.lock
attributes:
  check_mode:
    details: Makes every refusal and verifies a local image's checksum, but writes nothing.
options:
  store:
    description:
      - Mount point of the migration store. It holds the journal and the carried data, and its partition is never
        written.
    type: path
    required: true
  src:
    description:
      - The image, as a local file (usually staged on the store) or an V(http://) or V(https://) URL, which is
        streamed and hashed while it is read.
    type: str
    required: true
  checksum:
    description:
      - The image's sha256, as V(sha256:<64 hex digits>), or the path or URL of a checksum file in C(sha256sum)
        format (the line for the image's file name, or its only line).
      - A local image is verified before the first byte is written. A streamed one is hashed while it is written;
        a mismatch fails the run and the journal records that the partition holds no valid system.
    type: str
    required: true
  dest:
    description:
      - The partition to write, by device path, V(PARTUUID=...), V(LABEL=...), V(UUID=...) or V(PARTLABEL=...); or
        the logical volume of a root on LVM, by its path (V(/dev/mapper/vg0-root)) or V(LVUUID=...).
      - It is resolved once to its PARTUUID (a logical volume's LV UUID), which the journal records, since a label
        vanishes when the partition is overwritten; a rerun finds the partition by that PARTUUID.
      - For a logical volume the new system's kernel command line names the root by its V(/dev/mapper) path, which
        the initramfs of an image with lvm2 activates.
      - A spec (or the recorded PARTUUID) that two devices carry is refused, naming both, on the first run and on
        every rerun.
    type: str
    required: true
  format:
    description:
      - The image's format. V(auto) detects it from its magic bytes (zstd, gzip, xz, qcow2, a tar header, or an
        ext, btrfs or xfs superblock once decompressed), not from its name.
      - V(raw), V(raw.zst), V(raw.gz), V(raw.xz) and V(qcow2) are written byte for byte; V(tar), V(tar.zst),
        V(tar.gz) and V(tar.xz) are root-filesystem archives extracted onto a fresh O(fstype) filesystem.
    type: str
    choices: [auto, raw, raw.zst, raw.gz, raw.xz, qcow2, tar, tar.zst, tar.gz, tar.xz]
    default: auto
  require_capture:
    description:
      - Before the first byte is written, check that the store holds the complete and verified manifest
        M(inplace.migration.profile_capture) writes (C(inplace/profiles/manifest.json)), with every archive it
        records, and refuse otherwise.
      - A rerun after the write started (the journal records it for this O(dest)) is not held back, so an
        interrupted deploy always finishes.
      - V(false) for a PC whose profiles are not kept.
    type: bool
    default: true
  protect:
    description:
      - Partitions (by path, V(PARTUUID=), V(LABEL=) or V(UUID=)) or whole disks that must never be written.
    type: list
    elements: str
    default: []
  fstype:
    description:
      - Filesystem made for an archive format.
    type: str
    choices: [ext4, ext3, ext2, btrfs, xfs]
    default: ext4
  label:
    description:
      - Filesystem label for the filesystem made for an archive format.
    type: str
  grow:
    description:
      - Grow the written filesystem to fill the partition (raw formats; an archive's filesystem already does).
    type: bool
    default: true
  restore_options:
    description:
      - Options for the restore the new system's first-boot hook runs from the store (C(conflict), C(settings),
        C(users), C(accounts), as M(inplace.migration.profile_restore) takes them), left on the store as
        C(inplace/restore-options.json), written whole and synced before anything else.
    type: dict
  checkpoint:
    description:
      - How much of a raw image is written between two journal records of the offset reached (each made durable
        first), as bytes or with a unit.
    type: str
    default: 256MiB
  fstab:
    description:
      - Write the new system's C(/etc/fstab) with its root by the new filesystem UUID, its own entries whose devices
        exist here, and the old system's entries for partitions that survive (such as swap or a separate /home).
        Never an entry for the store or the old root.
    type: bool
    default: true
  hostname:
    description:
      - Carry the old system's hostname into C(/etc/hostname) and the 127.0.1.1 line of C(/etc/hosts).
    type: bool
    default: true
  ssh_host_keys:
    description:
      - Carry the old system's SSH host keys (and remove the image's own), so the controller reconnects with the
        same host key.
    type: bool
    default: true
  carry_accounts:
    description:
      - Accounts to carry from the old system so the controller can connect before profiles are restored (usually
        the account Ansible connects with) with their passwd, shadow and group entries and their groups, the same UID and GID
        when free in the new system, C(~/.ssh/authorized_keys) with the right owner and modes, and the drop-ins in
        C(/etc/sudoers.d) that name them (checked with C(visudo -c) when it is installed).
    type: list
    elements: str
    default: []
  machine_id:
    description:
      - V(keep) carries the old system's machine-id; V(regenerate) leaves C(/etc/machine-id) empty so systemd makes
        a new one at the first boot.
    type: str
    choices: [keep, regenerate]
    default: keep
  firstboot:
    description:
      - Install a run-once systemd unit, C(inplace-firstboot.service), and its self-contained Python program in the
        new system. At the first boot it finds the store by the identity recorded now (its PARTUUID, filesystem
        UUID and label, and its disk's identity) and refuses a device that no longer matches it; it takes the
        PC's lock (as a restore), records the confirmation in the journal, makes the new system GRUB's default, runs the store's
        C(inplace/bin/inplace-restore) when there is one whose restore is not complete, and disables itself on
        success.
      - With V(true) GRUB boots the new system once and keeps maintenance as its default until that first boot
        confirms itself, so a new system that fails to boot falls back into maintenance. With V(false) the new
        system is GRUB's default at once.
    type: bool
    default: true
  bootloader:
    description:
      - V(grub-bios) installs GRUB for BIOS (msdos, or GPT with a BIOS boot partition) to the disk holding O(dest),
        from a chroot of the new system, with a menu whose root is the new filesystem's UUID and which keeps an
        entry for the maintenance environment on the store. This is the very last step.
      - When the new system's fstab mounts a partition at C(/boot) (the old system's separate C(/boot), carried),
        that partition is given the image's C(/boot) first (the old kernels and GRUB files removed, the maintenance
        files in C(inplace/) kept for M(inplace.migration.store_cleanup)) and bound at C(/boot) in the chroot, so
        GRUB's core image, C(grub.cfg) and C(grubenv) are on it.
      - V(grub-efi), for a UEFI PC, makes the same menu in the chroot (no C(grub-install)), then on the EFI system
        partition (O(esp)) writes the image's signed GRUB and shim into C(\EFI\<vendor>\), last there the stub
        C(grub.cfg) pointing at the new C(/boot/grub), then makes the vendor's NVRAM entry first in C(BootOrder)
        (efibootmgr), then the removable-media path C(\EFI\BOOT\BOOTX64.EFI). Each file is written beside its
        target and renamed over it, only when its bytes differ.
      - V(none) leaves booting as it is.
    type: str
    choices: [grub-bios, grub-efi, none]
    default: grub-bios
  esp:
    description:
      - For O(bootloader=grub-efi), the EFI system partition (a path or a C(PARTUUID=) spec), which must be on the
        disk holding O(dest). By default the one ESP on that disk; the module fails when there are several.
    type: str
  disk_identity:
    description:
      - The identity recorded for the disk holding O(dest) when the migration was planned (preflight's
        C(disk_identity), with C(ptuuid), C(wwn), C(serial); the deploy role passes the host record's). When given,
        that disk must have it, or the module refuses with one sentence naming what differs, before any byte is
        written (in check mode too) and again right before the new system's GRUB is installed on it.
      - A WWN or serial number that cannot be read now is not a difference; the partition table UUID must match.
    type: dict
  store_label:
    description:
      - The label the first-boot hook looks for when the store's filesystem has none of its own and no identity
        could be recorded for it (a store that is not on a block device); two devices with it are refused.
    type: str
    default: INPLACE-STORE
  maintenance_cmdline:
    description:
      - The maintenance kernel's command line in the new system's GRUB entry for the maintenance environment
        on the store (C(vmlinuz), C(initrd.img) and C(overlay.img) in the store's C(inplace/boot)).
      - It must carry the flag C(inplace.maintenance), by which M(inplace.migration.migration_state) knows the
        maintenance environment.
    type: str
    default: console=tty0 console=ttyS0,115200 inplace.maintenance panic=10
notes:
  - Run it from the maintenance environment, with the old system not mounted.
  - Growing an ext filesystem is done offline (C(e2fsck -f), then C(resize2fs)).
  - The restore program the first-boot hook runs is started while the hook holds the PC's lock, with
    E(INPLACE_STORE_LOCKED_BY=first-boot) in its environment; it must not take the lock itself.
seealso:
  - module: inplace.migration.partition_space
"""

EXAMPLES = r"""
- name: Deploy the staged Debian 13 image onto the system partition
  inplace.migration.image_deploy:
    store: /mnt/store
    src: /mnt/store/inplace/images/debian13.raw.zst
    checksum: /mnt/store/inplace/images/debian13.raw.zst.sha256
    dest: PARTUUID=6c3d1c4a-01
    carry_accounts: [ansible]

- name: Stream a root-filesystem archive from a web server onto a fresh ext4
  inplace.migration.image_deploy:
    store: /mnt/store
    src: https://images.example.org/lab/debian13-root.tar.zst
    checksum: https://images.example.org/lab/SHA256SUMS
    dest: /dev/sda1
    format: tar.zst
    label: system
    machine_id: regenerate

- name: Check everything that would refuse the deploy, and verify the image, without writing
  inplace.migration.image_deploy:
    store: /mnt/store
    src: /mnt/store/inplace/images/lab.qcow2
    checksum: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    dest: LABEL=system
    protect: [/dev/sdb]
  check_mode: true
"""

RETURN = r"""
state:
  description: The journal's state for this deploy at the end of the run (V(planned) in check mode).
  returned: always
  type: str
  sample: complete
dest:
  description: The partition written.
  returned: when dest was resolved
  type: dict
  contains:
    device:
      description: Its device node.
      type: str
      sample: /dev/sda1
    partuuid:
      description: Its PARTUUID, as the journal records it.
      type: str
      sample: 6c3d1c4a-01
    spec:
      description: O(dest) as given.
      type: str
format:
  description: The image's format, as given or detected.
  returned: when the image was inspected
  type: str
  sample: raw.zst
image_bytes:
  description: Length of the raw image written (in check mode, the bytes the partition must hold, when known).
  returned: when a raw image was written or planned
  type: int
written_bytes:
  description: Bytes written as data by this run.
  returned: when a raw image was written
  type: int
zeroed_bytes:
  description: Bytes made zero by C(BLKZEROOUT) (or zero writes where the device cannot) instead of written.
  returned: when a raw image was written
  type: int
resumed_from:
  description: The offset a raw write resumed from (V(0) for a fresh write), or where a rerun continued.
  returned: when something was written
  type: raw
filesystem:
  description: The new filesystem's C(type), C(uuid) and C(size) in bytes.
  returned: when written
  type: dict
grow:
  description: Whether the filesystem was grown, and its size before and after, and the partition's size.
  returned: when written
  type: dict
carry:
  description: Where the carried data came from (the old system on dest, or the store's copy) and which accounts.
  returned: when written
  type: dict
fixups:
  description: One report per fix-up (C(fstab), C(hostname), C(ssh_host_keys), C(accounts), C(machine_id),
    C(firstboot)), each with a C(status) of V(done), V(skipped) (with a C(reason)) or V(off); and C(boot) when a
    C(/boot) partition was given the image's C(/boot) (its C(device), C(spec), what was C(removed) and C(copied)).
  returned: when written
  type: dict
bootloader:
  description: The disk GRUB was installed to, the new system's default entry, the maintenance entry, the GRUB
    environment block as written and the C(/boot) partition holding them (C(boot), null when C(/boot) is on the
    root); or C(status=off). With O(bootloader=grub-efi), instead of the disk, C(esp_device), C(vendor) and C(esp)
    (the files written in order, where the stub points, the efibootmgr commands run).
  returned: when written
  type: dict
timings:
  description: Seconds spent in each step (C(verify), C(carry), C(write), C(grow), C(fixups), C(bootloader)).
  returned: always
  type: dict
peak_rss:
  description: Peak resident memory in bytes of the module's process (C(module)) and of the largest tool it ran
    and waited for (C(largest_child), such as zstd or tar).
  returned: when the deploy completed in this run
  type: dict
first_boot_rearmed:
  description: The new system's GRUB entry armed again as the next boot, because the deploy was complete but the
    new system never confirmed its first boot (a cut during it, or a system that failed); after three such boots
    the module fails instead.
  returned: when the one-shot boot was armed again
  type: str
  sample: gnulinux-simple-1b2c3d4e
message:
  description: Why nothing was done, when nothing was.
  returned: when the same image was already deployed
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.image.deploy import Deploy
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.boot.grub import CMDLINE_FLAG, DEFAULT_CMDLINE
from ansible_collections.inplace.migration.plugins.module_utils.image.formats import FORMATS
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner
from ansible_collections.inplace.migration.plugins.module_utils.common.units import parse_size
from ansible_collections.inplace.migration.plugins.module_utils.state.lock import LOCK_ARGUMENT_SPEC, pc_lock
from ansible_collections.inplace.migration.plugins.module_utils.state.store import Store


def main():
    module = AnsibleModule(
        argument_spec=dict(
            store=dict(type="path", required=True),
            src=dict(type="str", required=True),
            checksum=dict(type="str", required=True),
            dest=dict(type="str", required=True),
            format=dict(type="str", choices=["auto"] + list(FORMATS), default="auto"),
            require_capture=dict(type="bool", default=True),
            protect=dict(type="list", elements="str", default=[]),
            fstype=dict(type="str", choices=["ext4", "ext3", "ext2", "btrfs", "xfs"], default="ext4"),
            label=dict(type="str"),
            grow=dict(type="bool", default=True),
            checkpoint=dict(type="str", default="256MiB"),
            fstab=dict(type="bool", default=True),
            hostname=dict(type="bool", default=True),
            ssh_host_keys=dict(type="bool", default=True),
            carry_accounts=dict(type="list", elements="str", default=[]),
            machine_id=dict(type="str", choices=["keep", "regenerate"], default="keep"),
            firstboot=dict(type="bool", default=True),
            bootloader=dict(type="str", choices=["grub-bios", "grub-efi", "none"], default="grub-bios"),
            esp=dict(type="str"),
            disk_identity=dict(type="dict"),
            store_label=dict(type="str", default="INPLACE-STORE"),
            maintenance_cmdline=dict(type="str", default=DEFAULT_CMDLINE),
            restore_options=dict(type="dict"),
            **LOCK_ARGUMENT_SPEC
        ),
        supports_check_mode=True,
    )
    params = dict(module.params)
    try:
        params["checkpoint"] = parse_size(params["checkpoint"], "checkpoint")
        if CMDLINE_FLAG not in params["maintenance_cmdline"].split():
            raise MigrationError("maintenance_cmdline=%r lacks the flag %s, by which migration_state knows the "
                                 "maintenance environment; add it." % (params["maintenance_cmdline"], CMDLINE_FLAG))
        with pc_lock("deploy", Store(params["store"]), wait=params["lock_timeout"], check_mode=module.check_mode):
            result = Deploy(Runner(module), params, module.check_mode).run()
    except MigrationError as error:
        partial = dict(error.partial)
        changed = bool(partial.pop("changed", False))
        module.fail_json(msg=str(error), changed=changed, **partial)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
