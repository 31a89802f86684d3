#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: esp_stub
short_description: Point a UEFI PC's GRUB at another /boot/grub through the stub on its EFI system partition
version_added: 0.1.0
description:
  - On a UEFI PC, Debian's signed GRUB reads C(\EFI\<vendor>\grub.cfg) on the EFI system partition (ESP), a stub that
    names the filesystem holding C(/boot/grub) by UUID; every path the firmware takes to GRUB (its NVRAM entry, the
    removable-media path C(\EFI\BOOT\BOOTX64.EFI)) reads that one stub. This module rewrites it, which is what
    C(grub-install) onto the disk does on a BIOS PC.
  - With O(state=present) the stub points at O(directory) on the filesystem O(uuid) (or the one mounted at
    O(filesystem)). The stub found there the first time is kept beside it as C(grub.cfg.inplace-old).
  - With O(state=restored) the kept stub is put back.
  - With O(state=cleaned) (once the migration is complete) the kept stub and any C(*.inplace-new) a power cut left
    are removed from every C(\EFI\) directory; the rest of the ESP stays as it is.
  - The ESP is FAT, which journals nothing, so the stub is written beside its target, synced and renamed over it; a
    power cut leaves the old stub or the new one.
  - The ESP must be mounted; the module reads and writes only C(\EFI\<vendor>\) there.
extends_documentation_fragment:
  - inplace.migration.attributes
attributes:
  diff_mode:
    support: full
    details: Shows the stub's text before and after.
options:
  esp:
    description: Where the ESP is mounted.
    type: path
    required: true
  vendor:
    description:
      - The C(\EFI) directory whose stub is rewritten, as compiled into the signed GRUB (V(debian)).
      - By default the one every C(grubx64.efi) on the ESP names; the module fails when they name none or several.
    type: str
  uuid:
    description: The filesystem UUID the stub names, for O(state=present). Mutually exclusive with O(filesystem).
    type: str
  filesystem:
    description: A mount point whose filesystem the stub names (its UUID is read), for O(state=present).
    type: path
  directory:
    description: GRUB's directory on that filesystem, as GRUB sees it (V(/grub) on a C(/boot) partition of its own).
    type: str
    default: /boot/grub
  state:
    description: V(present) points the stub at the filesystem; V(restored) puts the stub that was there first back;
      V(cleaned) removes the kept stub.
    type: str
    choices: [present, restored, cleaned]
    default: present
seealso:
  - module: inplace.migration.maintenance_boot
"""

EXAMPLES = r"""
- name: Boot the maintenance environment from the store, whichever way the firmware comes to GRUB
  inplace.migration.esp_stub:
    esp: /run/inplace/esp
    filesystem: /run/inplace/store

- name: Forget the old system's stub once the new system boots for good
  inplace.migration.esp_stub:
    esp: /boot/efi
    state: cleaned

- name: Let GRUB read the old system's menu again
  inplace.migration.esp_stub:
    esp: /run/inplace/esp
    state: restored
"""

RETURN = r"""
removed:
  description: The files removed (or, in check mode, to remove).
  returned: with O(state=cleaned)
  type: list
  elements: str
path:
  description: The stub.
  returned: with O(state=present) or O(state=restored)
  type: str
  sample: /run/inplace/esp/EFI/debian/grub.cfg
vendor:
  description: The C(\EFI) directory of the stub.
  returned: with O(state=present) or O(state=restored)
  type: str
  sample: debian
before:
  description: Where the stub pointed before (C(uuid), C(directory)); V(null) when there was none or it named no UUID.
  returned: with O(state=present)
  type: dict
after:
  description: Where the stub points now.
  returned: with O(state=present)
  type: dict
  sample: {"uuid": "5d2a9c10-3b4e-4f6a-8c7d-1e2f3a4b5c6d", "directory": "/boot/grub"}
kept:
  description: Whether this run kept the stub it found as C(grub.cfg.inplace-old).
  returned: with O(state=present)
  type: bool
restored:
  description: Where the stub put back points; V(null) when none was kept.
  returned: with O(state=restored)
  type: dict
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.boot import efi_boot as _esp
from ansible_collections.inplace.migration.plugins.module_utils.boot import grub as _grub
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner

# It goes into a GRUB script: anything but a UUID or a plain path would break the stub or add to it.
FS_UUID = re.compile(r"^[0-9A-Fa-f]{4,}(-[0-9A-Fa-f]{4,})*$")
GRUB_DIRECTORY = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")
VENDOR = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _text(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def main():
    module = AnsibleModule(
        argument_spec=dict(esp=dict(type="path", required=True), vendor=dict(type="str"), uuid=dict(type="str"),
                           filesystem=dict(type="path"), directory=dict(type="str", default="/boot/grub"),
                           state=dict(type="str", choices=["present", "restored", "cleaned"], default="present")),
        mutually_exclusive=[("uuid", "filesystem")],
        required_if=[("state", "present", ("uuid", "filesystem"), True)],
        supports_check_mode=True,
    )
    params = module.params
    try:
        if not os.path.isdir(os.path.join(params["esp"], "EFI")):
            raise MigrationError("%s holds no EFI directory; mount the EFI system partition there first." %
                                 params["esp"])
        if params["state"] == "cleaned":
            result = _esp.cleanup(params["esp"], check_mode=module.check_mode)
            result.pop("nvram")
            module.exit_json(**result)
        vendor = params["vendor"] or _esp.esp_vendor(params["esp"])
        if not VENDOR.match(vendor):
            raise MigrationError("vendor=%r is not a directory name under \\EFI; give one such as debian." % vendor)
        path = os.path.join(_esp.vendor_directory(params["esp"], vendor), _esp.STUB)
        before = _text(path)
        if params["state"] == "restored":
            kept = _text(os.path.join(os.path.dirname(path), _esp.KEPT))
            result = _esp.restore_stub(params["esp"], vendor, module.check_mode)
            after = kept if result["changed"] else before
        else:
            if not GRUB_DIRECTORY.match(params["directory"]):
                raise MigrationError("directory=%r is not an absolute path of plain names; give GRUB's directory as "
                                     "GRUB sees it, such as /boot/grub." % params["directory"])
            uuid = params["uuid"] or _grub.mounted_uuid(Runner(module), params["filesystem"])
            if not FS_UUID.match(uuid):
                raise MigrationError("uuid=%r is not a filesystem UUID; give the UUID blkid shows for that "
                                     "filesystem." % uuid)
            result = _esp.switch_stub(params["esp"], vendor, uuid, params["directory"], module.check_mode)
            after = _esp.stub_text(uuid, params["directory"])
    except MigrationError as error:
        module.fail_json(msg=str(error), **error.partial)
    result["vendor"] = vendor
    if module._diff:
        result["diff"] = {"before": before, "after": after, "before_header": path, "after_header": path}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
