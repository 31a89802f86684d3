"""Power supply reading, on a made-up sysfs tree."""

from __future__ import annotations

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.preflight.inspect import on_battery


def supply(root, name, **files):
    directory = root / name
    directory.mkdir()
    for key, value in files.items():
        (directory / key).write_text(value + "\n")


@pytest.mark.parametrize("mains_online, battery_status, expected", [
    ("1", "Charging", False), ("0", "Discharging", True), (None, "Discharging", True), (None, "Full", False)])
def test_on_battery(tmp_path, mains_online, battery_status, expected):
    supply(tmp_path, "BAT0", type="Battery", present="1", status=battery_status)
    if mains_online is not None:
        supply(tmp_path, "AC", type="Mains", online=mains_online)
    assert on_battery(str(tmp_path)) is expected


def test_a_desktop_without_battery_is_on_mains(tmp_path):
    supply(tmp_path, "AC", type="Mains", online="0")
    assert on_battery(str(tmp_path)) is False
