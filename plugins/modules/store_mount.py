#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: store_mount
short_description: Mount or unmount the migration store (or another filesystem) by label or device
version_added: 0.1.0
description:
  - Mounts the filesystem labelled O(label) (or O(device)) at O(path), creating the directory root-only, or
    unmounts it. Idempotent; nothing is written to fstab, since the store and the old root are only mounted
    for the phases that need them.
  - A store already mounted elsewhere is reported, not mounted twice.
  - A label or C(UUID=)/C(PARTUUID=)/C(LABEL=)/C(PARTLABEL=) spec is matched against the devices as they are now
    (C(blkid -p), not blkid's cache); when it names two or more devices the module fails and names them.
  - With O(disk_of), only a device on the system disk is taken; one elsewhere (a USB stick carrying the store's
    label) is left alone and returned in RV(ignored).
extends_documentation_fragment:
  - inplace.migration.attributes
options:
  label:
    description: Filesystem label to mount. One of O(label) and O(device) is required.
    type: str
  device:
    description: Block device (or C(UUID=), C(PARTUUID=), C(LABEL=), C(PARTLABEL=)) to mount.
    type: str
  path:
    description: Mount point.
    type: path
    required: true
  state:
    description: V(mounted) or V(unmounted).
    type: str
    choices: [mounted, unmounted]
    default: mounted
  disk_of:
    description:
      - Take O(label) (or O(device)) only on the disk holding this device, a path or a C(PARTUUID=)/C(UUID=) spec,
        or holding the filesystem mounted at this directory (V(/) in a running system).
      - The roles give the old system's root partition (V(PARTUUID=...)) in the maintenance environment and V(/)
        in the new system, so the store is only ever looked for on the system disk.
    type: str
  readonly:
    description: Mount read-only (a journal a crash left behind is still replayed, so the files read are whole).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Mount the store
  inplace.migration.store_mount:
    label: INPLACE-STORE
    path: /run/inplace/store
    disk_of: PARTUUID=0b4e1c2a-01

- name: Mount the old system's root read-only
  inplace.migration.store_mount:
    device: PARTUUID=0b4e1c2a-01
    path: /run/inplace/old
    readonly: true
"""

RETURN = r"""
device:
  description: The device mounted (or unmounted).
  returned: when found
  type: str
path:
  description: Where it is mounted now (V(null) when unmounted).
  returned: always
  type: str
ignored:
  description: Devices O(label) (or O(device)) names on other disks than the one O(disk_of) is on, left alone.
  returned: with O(disk_of)
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.disk.mount import mount, unmount
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner


def main():
    module = AnsibleModule(
        argument_spec=dict(label=dict(type="str"), device=dict(type="str"), path=dict(type="path", required=True),
                           state=dict(type="str", choices=["mounted", "unmounted"], default="mounted"),
                           readonly=dict(type="bool", default=False), disk_of=dict(type="str")),
        required_if=[("state", "mounted", ("label", "device"), True)],
        mutually_exclusive=[("label", "device")],
        supports_check_mode=True,
    )
    params = module.params
    runner = Runner(module)
    try:
        if params["state"] == "mounted":
            source = "LABEL=%s" % params["label"] if params["label"] else params["device"]
            result = mount(runner, source, params["path"], params["readonly"], module.check_mode, params["disk_of"])
        else:
            result = unmount(runner, params["path"], module.check_mode)
    except MigrationError as error:
        module.fail_json(msg=str(error), **error.partial)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
