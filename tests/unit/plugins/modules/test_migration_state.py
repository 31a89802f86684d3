"""migration_state's main(): the real detect, reading a made-up PC's files, and the real findmnt."""

from __future__ import annotations

import functools
import json

import pytest

from ansible_collections.inplace.migration.plugins.modules import migration_state
from ansible_collections.inplace.migration.plugins.module_utils.state import locate
from ansible_collections.inplace.migration.plugins.module_utils.state.store import Store

DEVICE = "/dev/sdz3"
HOST = {"disk": "/dev/sda", "root_partuuid": "0b4e1c2a-01"}
SYSTEM_DISK = {"device": "/dev/sdz", "root": "PARTUUID=0b4e1c2a-01", "identity": {"ptuuid": "0b4e1c2a"}}


@pytest.fixture
def pc(tmp_path, monkeypatch):
    """A PC in the maintenance environment whose store (a directory here) holds a deploy under way."""
    (tmp_path / "cmdline").write_text("console=ttyS0,115200 inplace.maintenance panic=10\n")
    (tmp_path / "host.json").write_text(json.dumps(HOST))
    store = tmp_path / "store"
    store.mkdir()
    Store(str(store)).journal.put("image_deploy", {"state": "writing", "offset": 268435456})
    labels, roots = [], []

    def find_store(runner, label, root):
        labels.append(label)
        roots.append(root)
        return {"store": {"device": DEVICE, "mounted_at": str(store)}, "system_disk": SYSTEM_DISK,
                "ignored_stores": ["/dev/sdy1"]}

    monkeypatch.setattr(migration_state, "detect", functools.partial(
        locate.detect, cmdline=str(tmp_path / "cmdline"), marker=str(tmp_path / "no-marker"),
        completion_record=str(tmp_path / "no-completion"), host_record=str(tmp_path / "host.json"),
        find_store=find_store))
    return {"store": store, "labels": labels, "roots": roots}


def test_an_unknown_option_is_refused_with_the_right_name(run_module, pc):
    result = run_module(migration_state, {"store_lable": "X"})
    assert result["failed"] and not result.get("changed")
    assert "Unsupported parameters for (" in result["msg"] and "store_lable" in result["msg"]
    assert "Supported parameters include: root_partuuid, store_label." in result["msg"]
    assert pc["labels"] == []


def test_the_pc_s_state_is_reported_and_nothing_changed(run_module, pc):
    before = (pc["store"] / "inplace" / "journal.json").read_bytes()
    result = run_module(migration_state, {"store_label": "MIGRATION"})
    assert not result.get("failed") and result["changed"] is False
    assert pc["labels"] == ["MIGRATION"]
    assert result["environment"] == "maintenance" and result["completed"] is False
    assert result["host"] == HOST
    assert pc["roots"] == ["PARTUUID=0b4e1c2a-01"]
    assert result["store"] == {"device": DEVICE, "mounted_at": str(pc["store"])}
    assert result["system_disk"] == SYSTEM_DISK and result["ignored_stores"] == ["/dev/sdy1"]
    assert result["journal"] == {"image_deploy": {"state": "writing", "offset": 268435456}}
    assert result["manifest"] == {"exists": False, "complete": False, "users": []}
    assert set(result["root"]) == {"device", "uuid", "fstype"} and result["root"]["fstype"]
    assert (pc["store"] / "inplace" / "journal.json").read_bytes() == before


def test_check_mode_reports_the_same(run_module, pc):
    normal = run_module(migration_state, {})
    checked = run_module(migration_state, {}, check_mode=True)
    for result in (normal, checked):
        result.pop("invocation")
    assert checked == normal and checked["changed"] is False
    assert pc["labels"] == ["INPLACE-STORE", "INPLACE-STORE"]


def test_a_damaged_journal_fails_with_a_sentence(run_module, pc):
    (pc["store"] / "inplace" / "journal.json").write_text('{"records": ')
    result = run_module(migration_state, {})
    assert result["failed"] and not result.get("changed")
    assert result["msg"].startswith(str(pc["store"] / "inplace" / "journal.json") + " is damaged (")
    assert result["msg"].endswith("it was not written by this collection or was cut short.")


def test_root_partuuid_names_the_system_disk_s_root_over_the_host_record(run_module, pc):
    result = run_module(migration_state, {"root_partuuid": "feedbeef-02"})
    assert not result.get("failed") and pc["roots"] == ["PARTUUID=feedbeef-02"]
