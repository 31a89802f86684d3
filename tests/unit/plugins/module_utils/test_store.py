"""The store's journal and atomic files, on a temporary directory."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.state.files import atomic_write_json, read_json
from ansible_collections.inplace.migration.plugins.module_utils.state.store import Store


def test_journal_records_survive_a_reload_and_are_root_only(tmp_path):
    store = Store(str(tmp_path))
    store.journal.put("image_deploy", {"offset": 4096})
    store.journal.update("image_deploy", state="writing")
    assert Store(str(tmp_path)).journal.get("image_deploy") == {"offset": 4096, "state": "writing"}
    assert stat.S_IMODE(os.stat(tmp_path / "inplace").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "inplace" / "journal.json").st_mode) == 0o600
    assert json.loads((tmp_path / "inplace" / "journal.json").read_text())["version"] == 1


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "manifest.json"
    atomic_write_json(str(target), {"a": 1})
    atomic_write_json(str(target), {"a": 2})
    assert read_json(str(target)) == {"a": 2}
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_a_damaged_journal_is_reported_not_ignored(tmp_path):
    (tmp_path / "inplace").mkdir()
    (tmp_path / "inplace" / "journal.json").write_text('{"version": 1, "rec')
    with pytest.raises(MigrationError, match="is damaged"):
        Store(str(tmp_path)).journal.get("x")


def test_missing_store_is_refused(tmp_path):
    with pytest.raises(MigrationError, match="does not exist"):
        Store(str(tmp_path / "nope")).check()
