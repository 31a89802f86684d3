#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: store_volume
short_description: Make the migration store a logical volume in the root's volume group
version_added: 0.1.0
description:
  - For a PC whose root filesystem is on LVM, what M(inplace.migration.partition_space) is for one on a partition.
    Makes a logical volume named C(inplace-store) holding at least O(size) bytes of data and formats it as ext4
    labelled O(label).
  - The volume group's free extents are used when they suffice. Otherwise the root logical volume O(root_lv) gives
    its end, its ext filesystem shrunk first (offline, C(e2fsck -f) then C(resize2fs)), then the logical volume,
    keeping headroom in the filesystem; run the module from the maintenance environment, where the root is not
    mounted.
  - The store is tagged with the root's size before it, so M(inplace.migration.store_cleanup) grows the root back to
    that size and no further.
  - A store made already is kept; one made by a run cut off before it was formatted is formatted.
  - Activates the volume group first (C(vgchange --activate y)).
requirements:
  - lvm2 and e2fsprogs on the managed host (the maintenance environment has them)
extends_documentation_fragment:
  - inplace.migration.attributes
  - inplace.migration.lock
attributes:
  check_mode:
    details: Plans only; returns the planned steps and V(changed) as it would be.
  diff_mode:
    support: full
    details: Shows the volume group's logical volumes before and after.
options:
  vg:
    description: The volume group holding the root's logical volume.
    type: str
    required: true
  vg_uuid:
    description:
      - The volume group's UUID as preflight recorded it; a group with that name and another UUID is refused before
        anything is changed.
    type: str
  root_lv:
    description: The root's logical volume in O(vg) (its name, for example V(root)).
    type: str
    required: true
  size:
    description:
      - Bytes the store's filesystem must hold for data, as bytes or with a unit, for example V(12GiB).
      - The logical volume is made larger by what ext4 needs for itself, measured with the host's own mkfs.
    type: str
    required: true
  shrink:
    description:
      - V(auto) shrinks the root logical volume when the free extents do not suffice; V(none) uses free extents only.
    type: str
    choices: [auto, none]
    default: auto
  min_free:
    description:
      - Free space to keep in the shrunk root filesystem beyond its minimum size, as bytes or with a unit.
      - Defaults to 10 % of the space used in it, and at least 256 MiB.
    type: str
  label:
    description: Filesystem label of the store, at most 16 characters.
    type: str
    default: INPLACE-STORE
seealso:
  - module: inplace.migration.partition_space
  - module: community.general.lvol
"""

EXAMPLES = r"""
- name: Make the store in the root's volume group, as preflight planned it
  inplace.migration.store_volume:
    vg: "{{ migration.host.lvm.vg }}"
    vg_uuid: "{{ migration.host.lvm.vg_uuid }}"
    root_lv: "{{ migration.host.lvm.root_lv }}"
    size: "{{ migration.host.store_usable_bytes }}"

- name: Plan only, from free extents alone
  inplace.migration.store_volume:
    vg: vg0
    root_lv: root
    size: 8GiB
    shrink: none
  check_mode: true
  diff: true
"""

RETURN = r"""
store:
  description: The store's logical volume (planned, in check mode).
  returned: always
  type: dict
  contains:
    device:
      description: The logical volume's device node (V(null) while only planned).
      type: str
      sample: /dev/dm-1
    path:
      description: The logical volume's path.
      type: str
      sample: /dev/vg0/inplace-store
    lv_uuid:
      description: The logical volume's UUID (V(null) while only planned).
      type: str
    size:
      description: Size of the logical volume in bytes.
      type: int
      sample: 4294967296
    label:
      description: Filesystem label of the store.
      type: str
      sample: INPLACE-STORE
    uuid:
      description: Filesystem UUID of the store (V(null) while only planned).
      type: str
actions:
  description: The steps taken (or, in check mode, planned), in order.
  returned: always
  type: list
  elements: str
  sample:
    - shrink the filesystem on /dev/vg0/root to 3.0 GiB
    - reduce the logical volume vg0/root from 5.0 GiB to 3.0 GiB
    - create the logical volume vg0/inplace-store of 2.0 GiB and format it
layout_after:
  description: The volume group after the change (planned, in check mode), as C(vg), C(extent_bytes), C(free_bytes)
    and C(volumes) (C(name), C(size)).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner
from ansible_collections.inplace.migration.plugins.module_utils.common.units import parse_size
from ansible_collections.inplace.migration.plugins.module_utils.disk import lvm as _lvm
from ansible_collections.inplace.migration.plugins.module_utils.state.lock import LOCK_ARGUMENT_SPEC, pc_lock


def main():
    module = AnsibleModule(
        argument_spec=dict(
            vg=dict(type="str", required=True),
            vg_uuid=dict(type="str"),
            root_lv=dict(type="str", required=True),
            size=dict(type="str", required=True),
            shrink=dict(type="str", choices=["auto", "none"], default="auto"),
            min_free=dict(type="str"),
            label=dict(type="str", default="INPLACE-STORE"),
            **LOCK_ARGUMENT_SPEC
        ),
        supports_check_mode=True,
    )
    params = module.params
    if len(params["label"]) > 16:
        module.fail_json(msg="label=%s is longer than the 16 characters an ext filesystem label can hold; choose a "
                             "shorter one." % params["label"])
    runner = Runner(module)
    try:
        size = parse_size(params["size"], "size")
        min_free = parse_size(params["min_free"], "min_free") if params["min_free"] else None
        with pc_lock("store", wait=params["lock_timeout"], check_mode=module.check_mode):
            result = _lvm.store_volume(runner, params["vg"], params["root_lv"], size, params["label"],
                                       vg_uuid=params["vg_uuid"], shrink=params["shrink"] == "auto",
                                       min_free=min_free, check_mode=module.check_mode)
    except MigrationError as error:
        module.fail_json(msg=str(error), changed=bool(error.partial.get("actions_done")), **error.partial)
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
