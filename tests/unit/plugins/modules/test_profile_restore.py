"""profile_restore's main(): a capture made by profile_capture in tmp_path, restored into a new root there.

alice is this process's own uid and exists in the new system, so no account is made and no root is needed;
accounts are created by useradd in the integration tests.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from ansible_collections.inplace.migration.plugins.modules import profile_capture, profile_restore

from .conftest import HOME_FILES, tree_state, write_accounts

pytestmark = pytest.mark.skipif(not (shutil.which("tar") and shutil.which("zstd")), reason="needs GNU tar and zstd")


@pytest.fixture
def captured(run_module, old_system, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    result = run_module(profile_capture, {"root": str(old_system), "store": str(store)})
    assert result["changed"] and not result.get("failed")
    new = tmp_path / "new"
    write_accounts(str(new), {"alice": os.getuid()})
    (new / "home").mkdir()
    return {"store": store, "new": new, "old": old_system}


def test_a_store_without_a_capture_is_refused(run_module, tmp_path):
    (tmp_path / "store").mkdir()
    result = run_module(profile_restore, {"store": str(tmp_path / "store"), "root": str(tmp_path)})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == ("the store %s holds no profile manifest at inplace/profiles/manifest.json; run "
                             "profile_capture first." % (tmp_path / "store"))
    assert os.listdir(tmp_path / "store") == []


@pytest.mark.parametrize("args, message", [
    ({"users": ["bob"]}, "bob is not captured on this store (captured: alice); name only captured users in users."),
    ({"settings": ["network"]}, "settings network were not captured (captured: none); leave them out of settings."),
    ({"lock_timeout": "soon"}, "argument 'lock_timeout' is of type str and we were unable to convert to int: "),
], ids=["user", "settings", "lock_timeout"])
def test_what_was_not_captured_is_refused_and_nothing_is_written(run_module, captured, args, message):
    before = tree_state(str(captured["new"])), tree_state(str(captured["store"]))
    result = run_module(profile_restore, dict(args, store=str(captured["store"]), root=str(captured["new"])))
    assert result["failed"] and not result.get("changed")
    assert result["msg"].startswith(message)
    assert (tree_state(str(captured["new"])), tree_state(str(captured["store"]))) == before


def test_accounts_require_names_the_missing_account(run_module, captured):
    write_accounts(str(captured["new"]), {"bob": 4321})
    result = run_module(profile_restore, {"store": str(captured["store"]), "root": str(captured["new"]),
                                          "accounts": "require"})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == "accounts=require, and alice has no account in %s; create the accounts first or use accounts=create." % \
        captured["new"]
    assert os.listdir(captured["new"] / "home") == []


def test_a_damaged_archive_fails_its_user_and_restores_nothing(run_module, captured):
    archive = captured["store"] / "inplace" / "profiles" / "alice.tar.zst"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    result = run_module(profile_restore, {"store": str(captured["store"]), "root": str(captured["new"])})
    assert result["failed"]
    assert result["msg"].startswith("could not restore alice (no user was restored): ")
    assert list(result["failed_users"]) == ["alice"] and result["restored"] == []
    assert os.listdir(captured["new"] / "home") == []
    journal = json.loads((captured["store"] / "inplace" / "journal.json").read_text())
    assert not journal["records"]["profile_restore"]["users"].get("alice")


def test_check_mode_names_the_work_and_extracts_nothing(run_module, captured):
    before = tree_state(str(captured["store"]))
    result = run_module(profile_restore, {"store": str(captured["store"]), "root": str(captured["new"])},
                        check_mode=True)
    assert not result.get("failed") and result["changed"] is True
    assert result["restored"] == [] and result["accounts_kept"] == ["alice"] and result["accounts_created"] == []
    assert os.listdir(captured["new"] / "home") == []
    assert tree_state(str(captured["store"])) == before


def test_the_home_comes_back_as_it_was_and_only_once(run_module, captured):
    args = {"store": str(captured["store"]), "root": str(captured["new"])}
    result = run_module(profile_restore, args)
    assert not result.get("failed") and result["changed"] is True
    assert result["restored"] == ["alice"] and result["failed_users"] == {}
    assert result["accounts_kept"] == ["alice"] and result["remapped_users"] == {}
    old_home, new_home = captured["old"] / "home" / "alice", captured["new"] / "home" / "alice"
    for relative, data in HOME_FILES.items():
        if relative.startswith(".cache/"):
            assert not (new_home / relative).exists()
        else:
            assert (new_home / relative).read_bytes() == data
            assert (new_home / relative).stat().st_mtime_ns == (old_home / relative).stat().st_mtime_ns
    assert stat.S_IMODE((new_home / ".bashrc").stat().st_mode) == 0o600
    assert os.readlink(new_home / "notes") == "Documents/notes.txt"
    assert (new_home / "empty").is_dir()
    assert result["restored_bytes"] == sum(len(v) for k, v in HOME_FILES.items() if not k.startswith(".cache/"))

    again = run_module(profile_restore, args)
    assert again["changed"] is False and again["restored"] == [] and again["already_restored"] == ["alice"]
