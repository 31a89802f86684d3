"""Unit tests never take the PC's real migration lock under /run."""

from __future__ import annotations

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.state import lock


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(lock, "RUN_DIR", str(tmp_path_factory.mktemp("run")))
