#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: migration_state
short_description: Tell where a PC is in its in-place migration
version_added: 0.1.0
description:
  - Reports which system is running (the old one, the RAM-only maintenance environment, or the new one),
    whether the migration store exists and what its journal and manifest record, and whether the migration
    was completed on this PC.
  - The playbook asks this first on every run and after every reboot, so a rerun after any interruption
    continues from the PC's real state.
  - The store is the one device on the system disk whose filesystem label is O(store_label), read from the devices
    as they are now (C(blkid -p), not blkid's cache). The system disk is the disk holding the root partition, the one
    mounted at C(/) in the old and the new system, the one whose PARTUUID the host record names
    (C(root_partuuid)) in the maintenance environment. A device with that label on another disk (a USB stick) is
    never taken, only returned in RV(ignored_stores); two on the system disk make the module fail naming both.
  - In the maintenance environment the system disk must have the identity preflight recorded in the host record
    (C(disk_identity), its partition table UUID, WWN and serial number), or the module fails saying what differs.
  - Read-only. A store that is not mounted is mounted read-only (replaying a journal a crash left) on a private
    directory while its journal is read.
extends_documentation_fragment:
  - inplace.migration.attributes
options:
  store_label:
    description: Filesystem label of the store.
    type: str
    default: INPLACE-STORE
  root_partuuid:
    description:
      - PARTUUID of the partition whose disk is the system disk, where the store is looked for.
      - By default the host record's C(root_partuuid) in the maintenance environment, else the partition mounted at
        C(/).
    type: str
seealso:
  - module: inplace.migration.partition_space
"""

EXAMPLES = r"""
- name: Find where this PC is
  inplace.migration.migration_state:
  register: migration

- name: Nothing to do on a PC that finished
  ansible.builtin.meta: end_host
  when: migration.completed
"""

RETURN = r"""
environment:
  description: V(old) (the system being replaced), V(maintenance) (the RAM-only environment) or V(new).
  returned: always
  type: str
  sample: maintenance
completed:
  description: Whether this PC recorded a finished migration (C(/etc/inplace-migration/complete.json)).
  returned: always
  type: bool
completion:
  description: The completion record, when there is one.
  returned: always
  type: dict
cleanup:
  description: >-
    The cleanup record M(inplace.migration.store_cleanup) writes in the new root before it zeroes the store
    (C(/var/lib/inplace-migration/cleanup.json)), when there is one; it makes the environment V(new), and the store
    is not read any more.
  returned: always
  type: dict
resume:
  description: V(cleanup) when cleanup began and did not complete (it is all that is left to do), else V(null).
  returned: always
  type: str
root:
  description: The running root filesystem, as C(device), C(uuid) and C(fstype).
  returned: always
  type: dict
store:
  description: >-
    The store's C(device) (V(null) when there is none), the whole C(disk) holding it, and where it is mounted
    (C(mounted_at)).
  returned: always
  type: dict
system_disk:
  description: >-
    The system disk: its C(device) (kernel name now), the C(root) partition it was found by (a path or a
    C(PARTUUID=) spec) and its C(identity) (C(wwn), C(serial), C(ptuuid) where present).
  returned: always
  type: dict
ignored_stores:
  description: Devices on other disks that carry the store's label, left alone (for the report).
  returned: always
  type: list
  elements: str
manifest:
  description: Whether the store holds a profile manifest (C(exists)), whether it is C(complete), and its C(users).
  returned: always
  type: dict
journal:
  description: The store journal's records, by module.
  returned: always
  type: dict
host:
  description: In the maintenance environment, what the old system recorded about itself before rebooting.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner
from ansible_collections.inplace.migration.plugins.module_utils.state.locate import detect


def main():
    module = AnsibleModule(argument_spec=dict(store_label=dict(type="str", default="INPLACE-STORE"),
                                              root_partuuid=dict(type="str")),
                           supports_check_mode=True)
    try:
        state = detect(Runner(module), module.params["store_label"], root_partuuid=module.params["root_partuuid"])
    except MigrationError as error:
        module.fail_json(msg=str(error), **error.partial)
    module.exit_json(changed=False, **state)


if __name__ == "__main__":
    main()
