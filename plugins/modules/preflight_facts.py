#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: preflight_facts
short_description: Check that the running (old) system can be migrated in place
version_added: 0.1.0
description:
  - Finds the root filesystem, the disk it is on, C(/boot), the memory and the power supply, and lists every
    inhibitor, each as one sentence; nothing is changed.
  - Inhibitors are a root on LVM, LUKS or md RAID (or anything but a plain partition), a root filesystem that
    is not ext2/3/4 or btrfs, UEFI booting or no GRUB for BIOS, too little free space in C(/boot) for the
    maintenance environment, less RAM than the RAM-only maintenance environment needs, and running on battery.
  - The module itself does not fail on inhibitors; the preflight role fails the PC with all of them.
extends_documentation_fragment:
  - inplace.migration.attributes
options:
  min_ram_mib:
    description: RAM the maintenance environment needs.
    type: int
    default: 768
  boot_bytes_needed:
    description: Free space C(/boot) must have for the maintenance kernel and initramfs (bytes or with a unit).
    type: str
    default: "0"
"""

EXAMPLES = r"""
- name: Check this PC
  inplace.migration.preflight_facts:
    boot_bytes_needed: 150MiB
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
boot:
  description: Whether C(/boot) is C(separate), its filesystem C(uuid) and C(free_bytes).
  returned: always
  type: dict
memory_mib:
  description: RAM in MiB.
  returned: always
  type: int
on_battery:
  description: Whether the PC runs on battery.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.preflight.inspect import inspect
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner
from ansible_collections.inplace.migration.plugins.module_utils.common.units import parse_size


def main():
    module = AnsibleModule(
        argument_spec=dict(min_ram_mib=dict(type="int", default=768), boot_bytes_needed=dict(type="str", default="0")),
        supports_check_mode=True,
    )
    try:
        needed = parse_size(module.params["boot_bytes_needed"], "boot_bytes_needed") \
            if module.params["boot_bytes_needed"] not in ("0", "") else 0
        facts = inspect(Runner(module), module.params["min_ram_mib"], needed)
    except MigrationError as error:
        module.fail_json(msg=str(error), **error.partial)
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
