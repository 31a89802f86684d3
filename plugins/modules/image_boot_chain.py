#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_boot_chain
short_description: Find out whether an OS image carries a signed boot chain for Secure Boot
version_added: 0.1.0
description:
  - Reads a root-filesystem archive (C(.tar), C(.tar.zst), C(.tar.gz), C(.tar.xz)) once, as a stream, and extracts
    only shim (C(/usr/lib/shim/shimx64.efi.signed)), the signed GRUB
    (C(/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed)) and the kernels (C(/boot/vmlinuz-*)) into a scratch
    directory that is removed afterwards. A kernel counts as signed when its PE header carries a certificate table.
  - Also says whether the image has LVM's tool (C(/usr/sbin/lvm), from lvm2), which a new system whose root is a
    logical volume needs in its initramfs.
  - Meant to run on the controller, once for the fleet, before M(inplace.migration.preflight_facts) judges each
    PC. A UEFI PC with Secure Boot on is refused unless its image's chain is whole, a PC whose root is on LVM
    unless the image has lvm2.
  - A raw image is not looked into; RV(checked) is V(false) and RV(reason) says why.
  - Changes nothing.
extends_documentation_fragment:
  - inplace.migration.attributes
attributes:
  diff_mode:
    support: none
options:
  path:
    description: The image, a file on the host the module runs on.
    type: path
    required: true
requirements:
  - GNU tar; zstd, gzip or xz for compressed archives
seealso:
  - module: inplace.migration.preflight_facts
"""

EXAMPLES = r"""
- name: Look for the image's signed boot chain, once, on the controller
  inplace.migration.image_boot_chain:
    path: /srv/images/debian13.tar.zst
  delegate_to: localhost
  run_once: true
  register: boot_chain
"""

RETURN = r"""
checked:
  description: Whether the image was looked into.
  returned: always
  type: bool
reason:
  description: Why it was not.
  returned: when not checked
  type: str
shim:
  description: The shim found, or V(null).
  returned: when checked
  type: str
grub:
  description: The signed GRUB found, or V(null).
  returned: when checked
  type: str
kernels:
  description: The kernels carrying a signature.
  returned: when checked
  type: list
  elements: str
unsigned_kernels:
  description: The kernels without one.
  returned: when checked
  type: list
  elements: str
missing:
  description: What the chain lacks, one phrase each; empty when it is whole.
  returned: when checked
  type: list
  elements: str
lvm:
  description: Whether the image has LVM's tool (lvm2).
  returned: when checked
  type: bool
"""

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.image.boot_chain import image_boot_chain


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True)), supports_check_mode=True)
    path = module.params["path"]
    if not os.path.isfile(path):
        module.fail_json(msg="the image %s is not a file on this host; give the path of the local copy." % path)
    scratch = tempfile.mkdtemp(prefix="inplace-boot-chain-")
    try:
        result = image_boot_chain(path, scratch)
    except MigrationError as error:
        module.fail_json(msg=str(error), **error.partial)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
