"""Reading inside another root: symlinks resolve within it."""

from __future__ import annotations

import os

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.rootfs import inside


def test_inside_resolves_links_within_the_root(tmp_path):
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "data", "homes"))
    os.symlink("/data/homes", os.path.join(root, "home"))
    os.symlink("../../etc", os.path.join(root, "data", "homes", "up"))
    assert inside(root, "/home/anna") == os.path.join(root, "data", "homes", "anna")
    assert inside(root, "/home/up/passwd") == os.path.join(root, "etc", "passwd")
    assert inside(root, "/../../etc") == os.path.join(root, "etc")
    os.symlink("loop", os.path.join(root, "loop"))
    with pytest.raises(MigrationError, match="too many symbolic links"):
        inside(root, "/loop/x")
