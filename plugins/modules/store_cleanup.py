#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: store_cleanup
short_description: In the new system, zero the migration store, remove it, grow the root back, record completion
version_added: 0.1.0
description:
  - Before anything is destroyed, writes the cleanup record C(/var/lib/inplace-migration/cleanup.json) in the new
    root (atomically, synced), with the store's identity. M(inplace.migration.migration_state) reads it, so a run
    cut off anywhere after this point is taken for the new system with cleanup to finish, never for the old one.
  - Finds the store by the identity M(inplace.migration.image_deploy) recorded for the first-boot hook (PARTUUID,
    filesystem UUID, label and its disk's identity), refusing a device that does not match it; without a recorded
    identity, by its label on the system disk (the disk holding O(root)); a device with the label on another disk
    (a USB stick) is never touched, only returned in RV(ignored_stores), and two on the system disk are an error
    naming both.
  - Unmounts the store and overwrites every block of it with zeros (C(blkdiscard --zeroout); it holds password
    hashes and the profiles), synced before the record says so.
  - With O(mode=delete), deletes the store's partition and grows the partition before it, and its filesystem, over
    the space (as M(inplace.migration.partition_space) with O(inplace.migration.partition_space#module:state=absent)
    does). With O(mode=keep), leaves an empty ext4 filesystem labelled O(data_label) on it.
  - Grows the filesystem of that partition and of the new root when it is smaller than its partition (online when
    mounted).
  - Zeroes and removes the maintenance files left in C(/boot/inplace), and disables the first-boot hook.
  - Writes the completion record C(/etc/inplace-migration/complete.json) last (atomically, synced, once).
  - Every step does only what is left, so running it again after a cut at any point finishes the cleanup.
    Removing the maintenance entry from GRUB's menu is M(inplace.migration.maintenance_boot)'s, before this.
extends_documentation_fragment:
  - inplace.migration.attributes
  - inplace.migration.lock
attributes:
  diff_mode:
    support: partial
    details: With O(mode=delete), shows the partition table before and after, when the cleanup begins.
options:
  root:
    description: The new system's root, where the records are kept and the first-boot hook's configuration is read.
    type: path
    default: /
  mode:
    description: V(delete) the store and grow the partition before it, or V(keep) it as a zeroed data partition.
    type: str
    choices: [delete, keep]
    default: delete
  label:
    description: The store's filesystem label, to find it by when no identity was recorded.
    type: str
    default: INPLACE-STORE
  data_label:
    description: Filesystem label of the kept data partition (O(mode=keep)).
    type: str
    default: INPLACE-DATA
requirements:
  - pyparted (python3-parted), blkdiscard (util-linux), e2fsprogs
notes:
  - The store is zeroed, not encrypted; see docs/architecture.md.
"""

EXAMPLES = r"""
- name: Wipe and remove the store, grow the root back, record completion
  inplace.migration.store_cleanup:
  register: cleanup

- name: Keep the store's space as an empty data partition
  inplace.migration.store_cleanup:
    mode: keep
    data_label: DATA
"""

RETURN = r"""
state:
  description: How far cleanup is, V(wiping), V(wiped), V(released) or V(complete) (in check mode, where it is now).
  returned: always
  type: str
done:
  description: What this run did (would do, in check mode), one sentence each.
  returned: always
  type: list
  elements: str
store:
  description: The store's device when this run found it (V(null) once its partition is gone).
  returned: always
  type: str
grown:
  description: The filesystems grown over their partition, each with C(device), C(how) (V(online) or V(offline)),
    C(size_before) and C(partition) (its size) in bytes.
  returned: always
  type: list
  elements: dict
maintenance_files_removed:
  description: The maintenance files zeroed and removed.
  returned: always
  type: list
  elements: str
record:
  description: The cleanup record as it is now (C(state), C(started), C(mode), C(store), the store's identity, and
    C(grow), the filesystem UUID of the partition that takes its space).
  returned: always
  type: dict
ignored_stores:
  description: Devices on other disks than the system disk that carry the store's label, left alone (looked for only
    when no identity of the store was recorded).
  returned: always
  type: list
  elements: str
layout_after:
  description: The disk after the store was deleted, as M(inplace.migration.partition_space) returns it.
  returned: when this run deleted the store
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner
from ansible_collections.inplace.migration.plugins.module_utils.disk.parted import HAS_PARTED, PARTED_IMPORT_ERROR
from ansible_collections.inplace.migration.plugins.module_utils.state.cleanup import StoreCleanup
from ansible_collections.inplace.migration.plugins.module_utils.state.lock import LOCK_ARGUMENT_SPEC, pc_lock


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", default="/"),
            mode=dict(type="str", choices=["delete", "keep"], default="delete"),
            label=dict(type="str", default="INPLACE-STORE"),
            data_label=dict(type="str", default="INPLACE-DATA"),
            **LOCK_ARGUMENT_SPEC
        ),
        supports_check_mode=True,
    )
    if not HAS_PARTED:
        module.fail_json(msg=missing_required_lib("pyparted (python3-parted)"), exception=PARTED_IMPORT_ERROR)
    params = module.params
    if len(params["data_label"]) > 16:
        module.fail_json(msg="data_label=%s is longer than the 16 characters an ext4 label can hold." % params["data_label"])
    cleanup = StoreCleanup(Runner(module), params["root"], params["mode"], params["label"], params["data_label"],
                           check_mode=module.check_mode)
    try:
        # The store is not mounted during cleanup, so the PC's lock under /run is the one held.
        with pc_lock("cleanup", wait=params["lock_timeout"], check_mode=module.check_mode):
            result = cleanup.run()
    except MigrationError as error:
        module.fail_json(msg=str(error), changed=bool(cleanup.result["done"]), done=cleanup.result["done"],
                         **error.partial)
    diff = result.pop("diff", None)
    if module._diff and diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
