#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: preflight_facts
short_description: Check that the running (old) system can be migrated in place, and plan the migration
version_added: 0.1.0
description:
  - Does preflight's whole inspection in one call and changes nothing. It finds the root filesystem, the disk it is
    on, C(/boot), the memory and the power supply; estimates the profiles as M(inplace.migration.profile_capture)
    does in check mode (O(profiles)); sizes the store once and plans it as M(inplace.migration.partition_space)
    does in check mode with C(plan_offline) (O(store)); and judges what the controller found about the image
    (O(image)).
  - Inhibitors are a root on LVM, LUKS or md RAID (or anything but a plain partition), a root filesystem that
    is not ext2/3/4, btrfs or xfs, a UEFI PC whose EFI system partition is missing, not mounted at C(/boot/efi) or
    without Debian's signed GRUB, Secure Boot on with an image whose signed boot chain is not whole (or was not
    checked, see O(image.boot_chain)), a BIOS PC without GRUB for BIOS, a separate C(/boot) on another
    disk than the root or not ext2/3/4, too little free space in C(/boot) for the maintenance environment, less
    RAM than the RAM-only maintenance environment needs, running on battery, an image this PC cannot reach or
    whose checksum is wrong, and no room for the store (saying how much is missing). An xfs root cannot shrink,
    so its store comes from unallocated space or another partition (such as an ext4 C(/home)), and without either
    the sentence says so.
    A probe that fails becomes one more inhibitor sentence.
  - The module itself does not fail on inhibitors; the preflight role fails the PC with all of them. When there are
    none, RV(plan) holds what the later phases need.
extends_documentation_fragment:
  - inplace.migration.attributes
options:
  min_ram_mib:
    description: RAM the maintenance environment needs.
    type: int
    default: 768
  maintenance_bytes:
    description:
      - Space the maintenance kernel and initramfs need, free in C(/boot) and added to the store (bytes or with a
        unit, see O(store.margin)).
    type: str
    default: "0"
    aliases: [boot_bytes_needed]
  profiles:
    description:
      - Which profiles to estimate (see M(inplace.migration.profile_capture)). Without it nothing is estimated.
    type: dict
    suboptions:
      users:
        description: As O(inplace.migration.profile_capture#module:users).
        type: list
        elements: str
        default: [auto]
      exclude_users:
        description: As O(inplace.migration.profile_capture#module:exclude_users).
        type: list
        elements: str
        default: []
      exclude:
        description: As O(inplace.migration.profile_capture#module:exclude).
        type: list
        elements: str
        default: [.cache, .local/share/Trash, .thumbnails]
  store:
    description:
      - How to plan the store. Without it no store is planned and RV(plan) stays V(null).
      - The store must hold the profiles' estimate, the image, the maintenance files and O(store.margin).
    type: dict
    suboptions:
      label:
        description: Filesystem label of the store.
        type: str
        default: INPLACE-STORE
      shrink:
        description: Which partition may be shrunk (V(auto), V(none) or a partition), as for partition_space.
        type: str
        default: auto
      margin:
        description:
          - Added to the store beyond profiles, image and maintenance files; bytes or with a unit.
          - K, M, G (and KiB, MiB, GiB) are powers of 1024; KB, MB, GB are powers of 1000.
        type: str
        default: 256M
  image:
    description:
      - What the playbook found out about the image before this module ran; without it the image is not judged.
    type: dict
    suboptions:
      src:
        description: The image, a URL or a path on the controller, as asked for.
        type: str
        required: true
      checksum:
        description: C(sha256:<hex>) of the image, as asked for.
        type: str
        required: true
      url_status:
        description: HTTP status of this PC's HEAD request for a URL O(image.src) (anything but 200 is an inhibitor).
        type: int
      url_error:
        description: The message of a HEAD request that failed.
        type: str
      url_bytes:
        description: The image's size as the HEAD request's Content-Length gave it.
        type: int
      file:
        description:
          - The controller's M(ansible.builtin.stat) result (its C(stat) dictionary, with a sha256 C(checksum)) for
            the local copy of the image, when it checked one. A missing file or another checksum is an inhibitor.
        type: dict
      boot_chain:
        description:
          - What M(inplace.migration.image_boot_chain) found in the image (C(checked), C(missing)). On a UEFI PC with
            Secure Boot on, an image whose chain is not whole, or was not checked, is an inhibitor.
        type: dict
"""

EXAMPLES = r"""
- name: Check this PC and plan its store
  inplace.migration.preflight_facts:
    maintenance_bytes: 128MiB
    profiles:
      users: [auto]
    store:
      margin: 256M
    image:
      src: https://images.example.org/debian13.tar.zst
      checksum: sha256:0c5a...
      url_status: "{{ image_head.status }}"
      url_bytes: "{{ image_head.content_length }}"
  register: preflight

- name: Stop here if anything inhibits the migration
  ansible.builtin.fail:
    msg: "{{ preflight.inhibitors | join(' ') }}"
  when: preflight.inhibitors | length > 0
"""

RETURN = r"""
inhibitors:
  description: What stops the migration of this PC, one sentence each; empty when nothing does.
  returned: always
  type: list
  elements: str
plan:
  description:
    - What the later phases need, V(null) while there are inhibitors (or no O(store) was asked for).
  returned: always
  type: dict
  contains:
    disk:
      description: The whole disk holding the root partition (and the store-to-be), its kernel name now (for people).
      type: str
    disk_identity:
      description: >-
        What identifies that disk later, whatever its kernel name then: C(ptuuid) (partition table UUID), and
        C(wwn) and C(serial) where the disk has them. The maintenance phases find the disk by C(root_partuuid) and
        refuse to change it unless it has this identity.
      type: dict
    root_partuuid:
      description: PARTUUID of the root partition, which the deploy overwrites.
      type: str
    root_uuid:
      description: Filesystem UUID of the root.
      type: str
    store_bytes:
      description: Size of the store partition planned.
      type: int
    store_usable_bytes:
      description: Bytes the store's filesystem must hold (profiles + image + maintenance files + margin).
      type: int
    image_bytes:
      description: Size of the image (0 when unknown).
      type: int
    boot_uuid:
      description: Filesystem UUID of C(/boot) (the root's when C(/boot) is not separate).
      type: str
    boot_separate:
      description: Whether C(/boot) is a filesystem of its own.
      type: bool
    firmware:
      description: How the PC boots, V(bios) or V(uefi); the boot loader's hand-offs differ (docs/architecture.md).
      type: str
    esp_partuuid:
      description: >-
        On a UEFI PC, PARTUUID of the EFI system partition whose GRUB stub the later phases point
        (C(uefi.esp_partuuid)); V(null) on a BIOS PC.
      type: str
root:
  description: The root filesystem's C(device), C(uuid), C(fstype) and C(partuuid).
  returned: always
  type: dict
disk:
  description: The whole disk the root partition is on.
  returned: when found
  type: str
  sample: /dev/sda
disk_bytes:
  description: Size of that disk.
  returned: when found
  type: int
lvm:
  description:
    - When the root is a logical volume, its volume group (C(vg), C(vg_uuid)), the volume (C(lv), C(lv_uuid),
      C(lv_bytes)), the group's C(extent_bytes), C(free_extents) and C(free_bytes), its physical volumes (C(pvs))
      and the C(disks) they are on. Migrating such a PC is not built yet; it is refused.
  returned: when the root is on LVM
  type: dict
boot:
  description: Whether C(/boot) is C(separate), its filesystem C(uuid) and C(free_bytes); when separate also its
    C(device), C(fstype) and C(disk).
  returned: always
  type: dict
uefi:
  description:
    - On a PC that boots through UEFI, the EFI system partitions on the system disk (C(esp), a list), the PARTUUID of
      the one the later phases use (C(esp_partuuid), the one mounted at C(/boot/efi), else the disk's only one,
      V(null) when that does not decide it), C(secure_boot)
      (V(null) when the firmware has no Secure Boot), and C(boot_current) and C(boot_order) as efibootmgr shows
      the entries' numbers, read from efivars; C(esp_mounted) (an ESP is at C(/boot/efi)), and C(vendor), the
      C(\EFI) directory its GRUB reads (C(vendor_error) the sentence when that cannot be told).
  returned: when the PC boots through UEFI
  type: dict
memory_mib:
  description: RAM in MiB.
  returned: always
  type: int
on_battery:
  description: Whether the PC runs on battery.
  returned: always
  type: bool
image:
  description: The image's C(src) and C(bytes) (0 when unknown); V(null) without O(image).
  returned: always
  type: dict
profiles:
  description:
    - The estimate, V(null) without O(profiles) or when it failed. C(users) (each C(name), C(uid), C(files),
      C(bytes), C(estimated_archive_bytes)), C(homes_not_archived), C(compression_ratio), C(compression_estimator)
      (V(zstd), or V(zlib) on a PC without the zstd command), C(estimated_archive_bytes) and C(store_bytes_needed).
  returned: always
  type: dict
store:
  description:
    - The store planned, V(null) without O(store). C(need) (C(profiles), C(image), C(maintenance), C(margin) and
      C(total) bytes) always; when planned also C(partition) (as partition_space's C(store)), C(actions),
      C(notes), C(layout_before) and C(layout_after).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner
from ansible_collections.inplace.migration.plugins.module_utils.preflight.check import preflight, size_or_zero

PROFILES = dict(
    users=dict(type="list", elements="str", default=["auto"]),
    exclude_users=dict(type="list", elements="str", default=[]),
    exclude=dict(type="list", elements="str", default=[".cache", ".local/share/Trash", ".thumbnails"]),
)
STORE = dict(
    label=dict(type="str", default="INPLACE-STORE"),
    shrink=dict(type="str", default="auto"),
    margin=dict(type="str", default="256M"),
)
IMAGE = dict(
    src=dict(type="str", required=True),
    checksum=dict(type="str", required=True),
    url_status=dict(type="int"),
    url_error=dict(type="str"),
    url_bytes=dict(type="int"),
    file=dict(type="dict"),
    boot_chain=dict(type="dict"),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            min_ram_mib=dict(type="int", default=768),
            maintenance_bytes=dict(type="str", default="0", aliases=["boot_bytes_needed"]),
            profiles=dict(type="dict", options=PROFILES),
            store=dict(type="dict", options=STORE),
            image=dict(type="dict", options=IMAGE),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = preflight(Runner(module), size_or_zero(params["maintenance_bytes"], "maintenance_bytes"),
                           params["min_ram_mib"], params["profiles"], params["store"], params["image"])
    except MigrationError as error:
        module.fail_json(msg=str(error), **error.partial)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
