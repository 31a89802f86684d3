"""preflight_facts' main() on this machine: it reads, reports inhibitors, and never fails on them."""

from __future__ import annotations

import os

from ansible_collections.inplace.migration.plugins.modules import preflight_facts


def memory_mib():
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def test_a_size_that_is_not_one_is_refused(run_module):
    result = run_module(preflight_facts, {"maintenance_bytes": "a lot"})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == ("maintenance_bytes='a lot' is not a size: write bytes or a number with a unit such as "
                             "512MiB or 12GiB.")


def test_a_ram_figure_that_is_not_a_number_is_refused(run_module):
    result = run_module(preflight_facts, {"min_ram_mib": "plenty"})
    assert result["failed"] and not result.get("changed")
    assert result["msg"].startswith("argument 'min_ram_mib' is of type str and we were unable to convert to int")


def test_too_little_ram_and_boot_space_are_inhibitors_not_failures(run_module):
    statvfs = os.statvfs("/boot")
    free = statvfs.f_bavail * statvfs.f_frsize
    memory = memory_mib()
    result = run_module(preflight_facts, {"min_ram_mib": memory + 1, "boot_bytes_needed": str(free + 2 ** 40)})
    assert not result.get("failed") and result["changed"] is False
    assert result["memory_mib"] == memory
    assert ("the PC has %d MiB of RAM and the RAM-only maintenance environment needs %d MiB." % (memory, memory + 1)
            in result["inhibitors"])
    boot = [i for i in result["inhibitors"] if i.startswith("/boot has ")]
    assert len(boot) == 1 and boot[0].endswith("free some space.")
    assert set(result["root"]) == {"device", "uuid", "fstype", "partuuid"}


def test_enough_ram_and_no_boot_need_are_not_inhibitors(run_module):
    result = run_module(preflight_facts, {"min_ram_mib": 1})
    assert not result.get("failed") and result["changed"] is False
    assert not [i for i in result["inhibitors"] if "RAM" in i or i.startswith("/boot has ")]
    assert all(i.endswith(".") for i in result["inhibitors"])


def test_check_mode_reports_the_same_inhibitors(run_module):
    args = {"min_ram_mib": memory_mib() + 1}
    normal = run_module(preflight_facts, args)
    checked = run_module(preflight_facts, args, check_mode=True)
    assert checked["changed"] is False and checked["inhibitors"] == normal["inhibitors"]
    assert checked["root"] == normal["root"]
