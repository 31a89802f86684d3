"""store_mount's main(): its refusals, check mode and the unmounted case, without mounting anything."""

from __future__ import annotations

import os

from ansible_collections.inplace.migration.plugins.modules import store_mount


def mounted_at(path):
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == path for line in handle)


def test_mounting_needs_a_label_or_a_device(run_module, tmp_path):
    result = run_module(store_mount, {"path": str(tmp_path / "store")})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == "state is mounted but any of the following are missing: label, device"
    assert not (tmp_path / "store").exists()


def test_a_label_and_a_device_together_are_refused(run_module, tmp_path):
    result = run_module(store_mount, {"path": str(tmp_path / "store"), "label": "INPLACE-STORE",
                                      "device": "/dev/sdz3"})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == "parameters are mutually exclusive: label|device"


def test_a_label_no_filesystem_has_is_named_in_the_failure(run_module, tmp_path):
    result = run_module(store_mount, {"path": str(tmp_path / "store"), "label": "NO-SUCH-STORE-UT"})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == "no device has LABEL=NO-SUCH-STORE-UT on this host; check the name, or make or attach the device first."
    assert not (tmp_path / "store").exists()


def test_a_file_that_is_not_a_block_device_is_refused_also_in_check_mode(run_module, tmp_path):
    image = tmp_path / "store.img"
    image.write_bytes(b"\0" * 4096)
    for check_mode in (True, False):
        result = run_module(store_mount, {"path": str(tmp_path / "store"), "device": str(image)},
                            check_mode=check_mode)
        assert result["failed"] and not result.get("changed")
        assert result["msg"] == "%s is not a block device on this host; give the device's path, such as /dev/sda2, or a UUID=, LABEL= or PARTUUID= " \
                                "spec." % image
        assert not (tmp_path / "store").exists()


def test_check_mode_reports_an_unmount_and_leaves_the_mount(run_module):
    result = run_module(store_mount, {"path": "/proc", "state": "unmounted"}, check_mode=True)
    assert not result.get("failed")
    assert result["changed"] is True and result["device"] == "proc" and result["path"] is None
    assert mounted_at("/proc") and os.path.exists("/proc/self/mountinfo")


def test_unmounting_what_is_not_mounted_changes_nothing(run_module, tmp_path):
    (tmp_path / "store").mkdir()
    result = run_module(store_mount, {"path": str(tmp_path / "store"), "state": "unmounted"})
    assert not result.get("failed")
    assert result["changed"] is False and result["path"] is None
    assert (tmp_path / "store").is_dir()
