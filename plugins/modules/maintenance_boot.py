#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: maintenance_boot
short_description: Offer the maintenance environment in GRUB's menu, from the system or from the store
version_added: 0.1.0
description:
  - Writes the GRUB menu entry that boots the RAM-only maintenance environment, as the collection defines it once
    (the same entry the new system's menu gets from M(inplace.migration.image_deploy)).
  - With O(target=system) it writes C(/etc/grub.d/45_inplace_maintenance), through which C(update-grub) adds the
    entry to the running system's menu; the kernel, initramfs and overlay are in C(/boot/inplace) (C(/inplace) on a
    separate C(/boot)). Run C(update-grub) when it changed.
  - With O(target=store) it writes the store's own C(boot/grub/grub.cfg) for a GRUB installed with its boot directory
    on the store; it boots maintenance from the store's C(inplace/boot) by default and still offers the old
    system's menu while that is there.
  - With O(state=absent) the file is removed (for O(target=system), when the migration is finished).
  - Files are replaced atomically and only when their content or mode differs.
extends_documentation_fragment:
  - inplace.migration.attributes
attributes:
  diff_mode:
    support: full
    details: Shows the file's text before and after.
options:
  target:
    description: Where the entry goes, V(system) (the running system's C(/etc/grub.d)) or V(store).
    type: str
    choices: [system, store]
    required: true
  state:
    description: V(present) writes the file, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  boot_uuid:
    description:
      - Filesystem UUID of the old system's C(/boot) (its root's when C(/boot) is not separate), where the
        maintenance files are for O(target=system) and the old system's menu is for O(target=store).
      - Required with O(state=present).
    type: str
  boot_separate:
    description: Whether the old system's C(/boot) is a filesystem of its own.
    type: bool
    default: false
  store:
    description: Mount point of the store; required with O(target=store).
    type: path
  store_uuid:
    description: Filesystem UUID of the store; by default that of the filesystem mounted at O(store).
    type: str
  cmdline:
    description:
      - The maintenance kernel's command line. It must carry the flag C(inplace.maintenance), by which
        M(inplace.migration.migration_state) knows the maintenance environment.
    type: str
    default: console=tty0 console=ttyS0,115200 inplace.maintenance panic=10
seealso:
  - module: inplace.migration.image_deploy
  - module: inplace.migration.maintenance_overlay
"""

EXAMPLES = r"""
- name: Offer the maintenance environment in the old system's menu
  inplace.migration.maintenance_boot:
    target: system
    boot_uuid: "{{ plan.boot_uuid }}"
    boot_separate: "{{ plan.boot_separate }}"
  register: entry

- name: Write GRUB's menu
  ansible.builtin.command:
    cmd: update-grub
  when: entry.changed
  changed_when: true

- name: Boot maintenance from the store by default
  inplace.migration.maintenance_boot:
    target: store
    store: /run/inplace/store
    boot_uuid: "{{ plan.boot_uuid }}"

- name: Stop offering the maintenance environment
  inplace.migration.maintenance_boot:
    target: system
    state: absent
"""

RETURN = r"""
path:
  description: The file written or removed.
  returned: always
  type: str
  sample: /etc/grub.d/45_inplace_maintenance
entry:
  description: The menu entry's id, for C(grub-reboot).
  returned: always
  type: str
  sample: inplace-maintenance
"""

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.boot import grub as _grub
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner

# ext and xfs (8-4-4-4-12), btrfs alike, vfat (XXXX-XXXX), NTFS (16 digits)
FS_UUID = re.compile(r"^[0-9A-Fa-f]{4,}(-[0-9A-Fa-f]{4,})*$")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            target=dict(type="str", choices=["system", "store"], required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            boot_uuid=dict(type="str"),
            boot_separate=dict(type="bool", default=False),
            store=dict(type="path"),
            store_uuid=dict(type="str"),
            cmdline=dict(type="str", default=_grub.DEFAULT_CMDLINE),
        ),
        required_if=[("target", "store", ["store"]), ("state", "present", ["boot_uuid"])],
        supports_check_mode=True,
    )
    params = module.params
    try:
        if _grub.CMDLINE_FLAG not in params["cmdline"].split():
            raise MigrationError("cmdline=%r lacks the flag %s, by which migration_state knows the maintenance "
                                 "environment; add it." % (params["cmdline"], _grub.CMDLINE_FLAG))
        for option in ("boot_uuid", "store_uuid"):
            # It goes into a GRUB script: anything but a filesystem UUID would break the menu or add to it.
            if params[option] and not FS_UUID.match(params[option]):
                raise MigrationError("%s=%r is not a filesystem UUID; give the UUID blkid shows for that filesystem." % (
                    option, params[option]))
        store_uuid = params["store_uuid"]
        if params["target"] == "store" and params["state"] == "present" and not store_uuid:
            store_uuid = _grub.mounted_uuid(Runner(module), params["store"])
        path, text, mode = _grub.maintenance_boot_file(params["target"], params["boot_uuid"], params["boot_separate"],
                                                       params["cmdline"], store=params["store"], store_uuid=store_uuid)
        result = _grub.put_file(path, text, mode, params["state"], module.check_mode)
    except MigrationError as error:
        module.fail_json(msg=str(error), **error.partial)
    if not module._diff:
        result.pop("diff")
    module.exit_json(entry=_grub.MAINTENANCE_ENTRY, **result)


if __name__ == "__main__":
    main()
