"""profile_capture's main() on a small made-up system in tmp_path, with the real tar and zstd."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest

from ansible_collections.inplace.migration.plugins.modules import profile_capture

from .conftest import HOME_FILES, tree_state

pytestmark = pytest.mark.skipif(not (shutil.which("tar") and shutil.which("zstd")), reason="needs GNU tar and zstd")
MiB = 1024 * 1024


def archive_names(path):
    listing = subprocess.run(["tar", "--zstd", "-tf", str(path)], capture_output=True, check=True).stdout
    return sorted(name for name in listing.decode().splitlines())


@pytest.mark.parametrize("args, message", [
    ({"compression": 25}, "compression=25 is not a zstd level; use 1 to 19."),
    ({"max_file_size": "huge"}, "max_file_size='huge' is not a size: write bytes or a number with a unit such as "
                                "512MiB or 12GiB."),
    ({"exclude_users": ["mallory"]}, "exclude_users names mallory, which is not an account on {root}; correct or remove the "
                                     "name."),
    ({"settings": ["wallpaper"]}, "value of settings must be one or more of: hostname, network, ssh_host_keys, "
                                  "machine_id, timezone, locale, crontabs, printers. Got no match for: wallpaper"),
], ids=["compression", "max_file_size", "exclude_users", "settings"])
def test_bad_options_are_refused_and_nothing_is_written(run_module, old_system, tmp_path, args, message):
    store = tmp_path / "store"
    store.mkdir()
    result = run_module(profile_capture, dict(args, root=str(old_system), store=str(store)))
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == message.format(root=old_system)
    assert os.listdir(store) == []


def test_a_store_that_is_not_there_is_refused(run_module, old_system, tmp_path):
    result = run_module(profile_capture, {"root": str(old_system), "store": str(tmp_path / "store")})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == ("the store %s does not exist or is not a directory; mount the store there first." %
                             (tmp_path / "store"))
    assert not (tmp_path / "store").exists()


def test_a_root_without_accounts_is_refused(run_module, tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "empty-root").mkdir()
    result = run_module(profile_capture, {"root": str(tmp_path / "empty-root"), "store": str(tmp_path / "store")})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == ("root %s is not readable or holds no etc/passwd; mount the old system there first." %
                             (tmp_path / "empty-root"))
    assert os.listdir(tmp_path / "store") == []


def test_check_mode_estimates_without_a_store(run_module, old_system, tmp_path):
    before = tree_state(str(old_system))
    result = run_module(profile_capture, {"root": str(old_system), "store": str(tmp_path / "store")},
                        check_mode=True)
    assert not result.get("failed") and result["changed"] is True
    [alice] = result["users"]
    kept = {k: v for k, v in HOME_FILES.items() if not k.startswith(".cache/")}
    assert alice["name"] == "alice" and alice["source"] == "local"
    assert alice["bytes"] == sum(len(v) for v in kept.values())
    assert alice["excluded"] == {".cache": {"files": 3, "bytes": len(HOME_FILES[".cache/thumbnails/t.png"])}}
    assert result["store_bytes_needed"] >= 64 * MiB + result["estimated_archive_bytes"]
    assert 0 < result["compression_ratio"] <= 1.5
    assert not (tmp_path / "store").exists()
    assert tree_state(str(old_system)) == before


def test_capture_writes_verified_archives_and_a_manifest_once(run_module, old_system, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    args = {"root": str(old_system), "store": str(store)}
    result = run_module(profile_capture, args)
    assert not result.get("failed") and result["changed"] is True
    profiles = store / "inplace" / "profiles"
    assert result["manifest"] == str(profiles / "manifest.json")
    manifest = json.loads((profiles / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["verified"] is True
    [alice] = manifest["users"]
    archive = profiles / alice["archive"]
    assert alice["name"] == "alice" and alice["uid"] == os.getuid()
    assert alice["password_hash"] == "$6$salt$alice"
    assert alice["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert result["archive_bytes"] == alice["bytes"] == archive.stat().st_size
    names = archive_names(archive)
    for relative in ("Documents/notes.txt", "Documents/report.odt", ".bashrc", "notes", "empty"):
        assert "./" + relative in names or "./" + relative + "/" in names, names
    assert not [n for n in names if n.startswith("./.cache")]
    assert oct(os.stat(store / "inplace").st_mode & 0o777) == "0o700"

    again = run_module(profile_capture, args)
    assert again["changed"] is False and again["manifest"] == result["manifest"]
    assert json.loads((profiles / "manifest.json").read_text())["created"] == manifest["created"]

    forced = run_module(profile_capture, dict(args, force=True))
    assert forced["changed"] is True
