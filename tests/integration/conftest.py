"""Fixtures for tests that need root: loop disks that are always detached again."""

from __future__ import annotations

import contextlib
import os

import pytest

from tests.support import loopdisk


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="integration tests attach loop devices and need root")
        for item in items:
            item.add_marker(skip)


@pytest.fixture
def make_disk(tmp_path):
    """make_disk(size, sfdisk_script) -> LoopDisk; every disk made is detached after the test, pass or fail."""
    with contextlib.ExitStack() as stack:
        def factory(size, script=None):
            return stack.enter_context(loopdisk.loop_disk(size, script, directory=str(tmp_path)))
        yield factory
