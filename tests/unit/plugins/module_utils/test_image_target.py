"""image_deploy's dest: what is refused before anything is written (the checks that need no device)."""

from __future__ import annotations

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.boot import efi as _efi
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.image import target as _target


@pytest.mark.parametrize("parttype", [_efi.ESP_TYPE.upper(), "0xef"])
def test_the_esp_is_refused_as_dest(parttype):
    scan = _devices.Scan(None, [])
    scan.devices["/dev/nvme9n1p1"] = {"PART_ENTRY_TYPE": parttype, "TYPE": "vfat"}
    with pytest.raises(MigrationError, match=r"^dest=PARTLABEL=EFI \(/dev/nvme9n1p1\) is the EFI system partition "
                                             r"\(type %s\), which the image never overwrites; name the system "
                                             r"partition instead\.$" % parttype.lower()):
        _target.refuse(scan, "/dev/nvme9n1p1", "PARTLABEL=EFI", "/nonexistent-store", [])


def test_a_linux_partition_is_no_esp():
    assert _target.esp_refusal("/dev/vda2", "/dev/vda2", {"PART_ENTRY_TYPE": "0fc63daf-8483-4772-8e79-3d69d8477de4"}) \
        is None
    assert _target.esp_refusal("/dev/vda2", "/dev/vda2", {"PART_ENTRY_TYPE": "0x83"}) is None
    assert _target.esp_refusal("/dev/vda2", "/dev/vda2", {}) is None
