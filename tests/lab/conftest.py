"""The lab's tests build images with mmdebstrap and boot them under QEMU: root and those tools only."""

from __future__ import annotations

import os
import shutil

import pytest

NEEDED = ("mmdebstrap", "qemu-system-x86_64", "qemu-img", "cpio", "zstd", "ssh")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "long: a lab test of many boots (over five minutes under TCG); ./dev test leaves it to ./dev e2e")


def pytest_collection_modifyitems(config, items):
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    reason = None
    if os.geteuid() != 0:
        reason = "the lab needs root (mmdebstrap, loop devices)"
    elif missing:
        reason = "the lab needs %s" % ", ".join(missing)
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items if reason else ():
        if str(item.path).startswith(here + os.sep):
            item.add_marker(pytest.mark.skip(reason=reason))
