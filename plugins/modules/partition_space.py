#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: partition_space
short_description: Make room for a migration store partition on a disk, or remove it again
version_added: 0.1.0
description:
  - Reads the partition table of O(disk) (its own bytes, no library needed) and plans the smallest change that
    gives a partition labelled O(label) holding at least O(size) bytes of data; pyparted writes the changes.
  - With O(state=present) it uses unallocated space when that suffices. Otherwise it shrinks one partition
    (O(shrink)) and its filesystem by what is missing, keeping O(min_free) headroom in that filesystem,
    creates the store in the space freed behind it, aligned to 1 MiB, and formats it.
  - On an msdos label the store is a primary partition while a slot is free, else a logical partition after
    the last one in the extended partition (grown into unallocated space behind it when needed). On a GPT
    label it is a new partition named O(label).
  - ext2, ext3 and ext4 filesystems are shrunk offline only (C(e2fsck -f), then C(resize2fs)); run the module
    from the maintenance environment for those. btrfs is shrunk mounted, or mounted on a private directory for
    the time it takes. xfs cannot be shrunk.
  - With O(state=absent) it deletes the store (and an extended partition left empty), then grows the partition
    before it, and its filesystem, to the end of the freed space, so no gap is left.
  - After every step the table is read again and compared with the plan, and the filesystem that changed is
    checked; a filesystem is never left larger than its partition.
  - The module refuses, before changing anything, what it cannot do safely, with one sentence saying why.
requirements:
  - pyparted (C(python3-parted)) on the managed host, to change the table (the maintenance environment has it)
  - parted, e2fsprogs, util-linux; btrfs-progs for btrfs; xfsprogs to grow xfs
extends_documentation_fragment:
  - inplace.migration.attributes
  - inplace.migration.lock
attributes:
  check_mode:
    details: Plans only; returns the planned layout and V(changed) as it would be.
  diff_mode:
    support: full
    details: Shows the partition layout before and after.
options:
  disk:
    description:
      - The whole disk to work on, for example V(/dev/sda) or V(/dev/nvme0n1).
    type: path
    required: true
  state:
    description:
      - V(present) makes sure the store exists with at least O(size) usable bytes.
      - V(absent) removes the store and grows the partition before it into the freed space.
    type: str
    choices: [present, absent]
    default: present
  size:
    description:
      - Bytes the store's filesystem must hold for data, as bytes or with a unit, for example V(12GiB) or V(500MB).
      - KiB, MiB, GiB, TiB (and K, M, G, T) are powers of 1024; KB, MB, GB, TB are powers of 1000.
      - The partition is made larger by what the filesystem needs for itself, measured with the host's own mkfs.
      - Required with O(state=present).
    type: str
  shrink:
    description:
      - Which partition may be shrunk when unallocated space does not suffice.
      - V(auto) picks the partition whose filesystem can give the most; V(none) uses unallocated space only.
      - Otherwise a partition number (V(2)) or device path (V(/dev/sda2)).
    type: str
    default: auto
  min_free:
    description:
      - Free space to keep in a shrunk filesystem beyond its minimum size, as bytes or with a unit.
      - Defaults to 10 % of the space used in that filesystem, and at least 256 MiB.
    type: str
  fstype:
    description:
      - Filesystem for the store; formatted with no blocks reserved for root.
    type: str
    choices: [ext4, ext3, ext2]
    default: ext4
  plan_offline:
    description:
      - Plan as the maintenance environment will run it, treating filesystems mounted now as unmounted, so the
        old system can check that the store will fit before it reboots. Only with check mode.
    type: bool
    default: false
  label:
    description:
      - Filesystem label of the store (and its GPT partition name); also how an existing store is found.
      - At most 16 characters (an ext limit).
    type: str
    default: INPLACE-STORE
  disk_identity:
    description:
      - The identity recorded for O(disk) when the migration was planned (preflight's C(disk_identity), with C(ptuuid),
        C(wwn), C(serial)). When given, the module refuses, in check mode too and before any shrink or table write,
        a disk that does not have it, with one sentence naming what differs.
      - A WWN or serial number that cannot be read now is not a difference; the partition table UUID must match.
    type: dict
notes:
  - Growing a mounted ext4 filesystem needs a kernel that allows online resize (CAP_SYS_RESOURCE in containers).
  - On an msdos label a new logical partition is only ever added after the last one, so existing logical
    partitions keep their numbers.
seealso:
  - module: community.general.parted
  - module: community.general.filesystem
"""

EXAMPLES = r"""
- name: Make a 20 GiB store, shrinking whichever partition can give most
  inplace.migration.partition_space:
    disk: /dev/sda
    size: 20GiB

- name: Make the store only on the disk preflight recorded
  inplace.migration.partition_space:
    disk: "{{ migration.system_disk.device }}"
    disk_identity: "{{ migration.host.disk_identity }}"
    size: "{{ migration.host.store_usable_bytes }}"

- name: Plan only, and show the layout before and after
  inplace.migration.partition_space:
    disk: /dev/nvme0n1
    size: "{{ store_bytes_needed }}"
    shrink: /dev/nvme0n1p2
  check_mode: true
  diff: true
  register: store_plan

- name: Use unallocated space only, keeping 2 GiB free in any shrunk filesystem
  inplace.migration.partition_space:
    disk: /dev/vda
    size: 8GiB
    shrink: none
    label: MIGRATION

- name: Remove the store and grow the partition before it back
  inplace.migration.partition_space:
    disk: /dev/sda
    state: absent
"""

RETURN = r"""
store:
  description: The store partition (planned, in check mode). V(null) with O(state=absent).
  returned: always
  type: dict
  contains:
    device:
      description: Device node of the store.
      type: str
      sample: /dev/sda2
    number:
      description: Partition number.
      type: int
      sample: 2
    kind:
      description: V(primary) or V(logical).
      type: str
      sample: primary
    start:
      description: Start of the partition in bytes from the start of the disk.
      type: int
      sample: 21475885056
    size:
      description: Size of the partition in bytes.
      type: int
      sample: 21990232064
    fstype:
      description: Filesystem type of the store.
      type: str
      sample: ext4
    label:
      description: Filesystem label of the store.
      type: str
      sample: INPLACE-STORE
    uuid:
      description: Filesystem UUID of the store (V(null) while only planned).
      type: str
      sample: 0f3c6b1e-3a1f-4b5e-9a55-2d1f3c1b9e8a
    usable_bytes:
      description: Bytes the new filesystem holds for data, measured after formatting it (V(null) if not formatted now).
      type: int
      sample: 21474836480
actions:
  description: The steps taken (or, in check mode, planned), in order.
  returned: always
  type: list
  elements: str
  sample:
    - shrink the ext4 filesystem on /dev/sda1 from 100.0 GiB to 79.0 GiB
    - shrink partition /dev/sda1 (primary) from 100.0 GiB to 79.0 GiB
    - create primary partition /dev/sda2 of 21.0 GiB at 79.0 GiB
    - format /dev/sda2 as ext4 labelled INPLACE-STORE
notes:
  description: Remarks on the plan, such as space left unallocated.
  returned: always
  type: list
  elements: str
layout_before:
  description: The disk before the change; see RV(layout_after) for the fields.
  returned: always
  type: dict
layout_after:
  description: The disk after the change (planned, in check mode).
  returned: always
  type: dict
  contains:
    device:
      description: The disk.
      type: str
    table:
      description: Partition table type, V(msdos) or V(gpt).
      type: str
    size:
      description: Disk size in bytes.
      type: int
    sector_size:
      description: Logical sector size in bytes.
      type: int
    partitions:
      description: Partitions in disk order, with C(number), C(device), C(kind), C(start), C(end), C(size), C(name),
        C(fstype), C(fs_label), C(fs_uuid), C(fs_size) and C(mountpoint).
      type: list
      elements: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.disk.parted import HAS_PARTED, PARTED_IMPORT_ERROR
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner
from ansible_collections.inplace.migration.plugins.module_utils.disk.space import PartitionSpace
from ansible_collections.inplace.migration.plugins.module_utils.common.units import parse_size
from ansible_collections.inplace.migration.plugins.module_utils.state.lock import LOCK_ARGUMENT_SPEC, pc_lock


def main():
    module = AnsibleModule(
        argument_spec=dict(
            disk=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            size=dict(type="str"),
            shrink=dict(type="str", default="auto"),
            min_free=dict(type="str"),
            fstype=dict(type="str", choices=["ext4", "ext3", "ext2"], default="ext4"),
            label=dict(type="str", default="INPLACE-STORE"),
            plan_offline=dict(type="bool", default=False),
            disk_identity=dict(type="dict"),
            **LOCK_ARGUMENT_SPEC
        ),
        required_if=[("state", "present", ["size"])],
        supports_check_mode=True,
    )
    if not HAS_PARTED:
        module.fail_json(msg=missing_required_lib("pyparted (python3-parted)"), exception=PARTED_IMPORT_ERROR)
    params = module.params
    if params["plan_offline"] and not module.check_mode:
        module.fail_json(msg="plan_offline only plans; run it in check mode.")
    if len(params["label"]) > 16:
        module.fail_json(msg="label=%s is longer than the 16 characters an ext filesystem label can hold; choose a "
                             "shorter one." % params["label"])

    space = PartitionSpace(Runner(module), params["disk"], params["label"], params["disk_identity"])
    step = "store" if params["state"] == "present" else "cleanup"
    try:
        with pc_lock(step, wait=params["lock_timeout"], check_mode=module.check_mode):
            if params["state"] == "present":
                size = parse_size(params["size"], "size")
                min_free = parse_size(params["min_free"], "min_free") if params["min_free"] else None
                result = space.present(size, params["shrink"], min_free, params["fstype"], module.check_mode,
                                       plan_offline=params["plan_offline"])
            else:
                result = space.absent(module.check_mode)
    except MigrationError as error:
        module.fail_json(msg=str(error), changed=bool(error.partial.get("actions_done")), **error.partial)
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
