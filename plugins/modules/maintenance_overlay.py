#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: maintenance_overlay
short_description: Build this PC's overlay for the maintenance environment, on the PC itself
version_added: 0.1.0
description:
  - Writes a small cpio (newc) archive that the kernel unpacks over the shared maintenance initramfs at boot
    (GRUB loads it as a second initrd). It carries this PC's own SSH host keys, so Ansible reconnects to the same
    host with the same host key; the account Ansible connects as (UID, GID, password hash, authorized keys,
    passwordless sudo); the hostname; and a host record (C(/etc/inplace/host.json)) with what the maintenance
    phases need to know about the old system, such as its disk and root partition.
  - The archive holds private keys, so it is built here rather than on the controller, written root-only (0600)
    and never leaves the PC.
  - Unchanged content is not rewritten.
extends_documentation_fragment:
  - inplace.migration.attributes
options:
  dest:
    description: Where to write the overlay.
    type: path
    required: true
  admin:
    description: The account Ansible connects as, taken from this system's passwd, shadow and C(~/.ssh/authorized_keys).
    type: str
    required: true
  host_record:
    description: Facts for the maintenance phases, written as C(/etc/inplace/host.json) in the overlay.
    type: dict
    default: {}
  network:
    description:
      - Text of a systemd-networkd C(.network) file for the maintenance environment. Without it the maintenance
        environment uses DHCP on every wired interface.
    type: str
"""

EXAMPLES = r"""
- name: Build the overlay
  inplace.migration.maintenance_overlay:
    dest: /boot/inplace/overlay.img
    admin: "{{ ansible_user }}"
    host_record:
      disk: /dev/sda
      root_partuuid: 0b4e1c2a-01
"""

RETURN = r"""
dest:
  description: The overlay written.
  returned: always
  type: str
bytes:
  description: Its size.
  returned: always
  type: int
host_key_types:
  description: The SSH host key types carried.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.boot.overlay import build_overlay


def main():
    module = AnsibleModule(
        argument_spec=dict(dest=dict(type="path", required=True), admin=dict(type="str", required=True),
                           host_record=dict(type="dict", default={}), network=dict(type="str")),
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = build_overlay(params["dest"], params["admin"], params["host_record"], params["network"],
                               module.check_mode)
    except MigrationError as error:
        module.fail_json(msg=str(error), **error.partial)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
