"""Where a PC is (state.locate.detect), for every situation a migration passes through.

Each row of the table is a PC's situation: which marker or kernel flag it booted with, the
root filesystem findmnt reports, the completion and host records on its root, and what its
store holds (none; a journal; a manifest). The store is a real directory written through the
store's own Journal, found by a stand-in for the store's look-up and "mounted" where it lies.
"""

from __future__ import annotations

import inspect
import json

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.state.files import atomic_write_json
from ansible_collections.inplace.migration.plugins.module_utils.state.locate import detect
from ansible_collections.inplace.migration.plugins.module_utils.state.store import MANIFEST, Store

LABEL = "INPLACE-STORE"
STORE_DEVICE = "/dev/sdz3"
OLD_UUID = "11111111-1111-4111-8111-111111111111"
NEW_UUID = "22222222-2222-4222-8222-222222222222"
CMDLINE = "BOOT_IMAGE=/vmlinuz root=UUID=%s ro quiet" % OLD_UUID
MAINTENANCE_CMDLINE = "console=tty0 console=ttyS0,115200 inplace.maintenance panic=10"
COMPLETION = {"completed": "2025-01-01T10:00:00Z", "image": "sha256:" + "a" * 64}
HOST = {"disk": "/dev/sda", "root_partuuid": "0b4e1c2a-01"}


class FindmntRunner:
    """Answers findmnt for / as the PC's root would; any other command is a test failure."""

    def __init__(self, uuid):
        self.uuid = uuid
        self.commands = []

    def run(self, args, ok=(0,), data=None):
        self.commands.append(args)
        if args[0] != "findmnt" or args[-1] != "/":
            raise AssertionError("detect ran %r" % (args,))
        if self.uuid is None:
            return 1, "", "findmnt: can't read /proc/self/mountinfo"
        return 0, 'SOURCE="/dev/sda1" UUID="%s" FSTYPE="ext4"\n' % self.uuid, ""


def deployed(uuid, state="complete"):
    return {"image_deploy": {"state": state, "partuuid": "0b4e1c2a-01", "checksum": "sha256:" + "b" * 64,
                             "filesystem": {"type": "ext4", "uuid": uuid, "size": 4 << 30}}}


def manifest(complete=True, verified=True):
    return {"format": 1, "complete": complete, "verified": verified,
            "users": [{"name": "alice", "uid": 1000}, {"name": "bob", "uid": 1001}]}


NO_MANIFEST = {"exists": False, "complete": False, "users": []}
COMPLETE_MANIFEST = {"exists": True, "complete": True, "users": ["alice", "bob"]}


def situation(marker=False, cmdline=CMDLINE, root_uuid=OLD_UUID, completion=None, host=None, store=False,
              journal=None, manifest=None):
    return dict(marker=marker, cmdline=cmdline, root_uuid=root_uuid, completion=completion, host=host, store=store,
                journal=journal, manifest=manifest)


def expect(environment, completed=False, manifest=None, host=None):
    return dict(environment=environment, completed=completed, manifest=manifest or NO_MANIFEST, host=host)


TABLE = [
    # The old system, before anything was done.
    pytest.param(situation(), expect("old"), id="old: no store yet"),
    pytest.param(situation(host=HOST), expect("old"), id="old: a host record on the old root is not read"),
    pytest.param(situation(store=True), expect("old"), id="old: empty store made"),
    pytest.param(situation(store=True, manifest=manifest(complete=False, verified=False)),
                 expect("old", manifest=dict(COMPLETE_MANIFEST, complete=False)),
                 id="old: capture cut short"),
    pytest.param(situation(store=True, manifest=manifest(verified=False)),
                 expect("old", manifest=dict(COMPLETE_MANIFEST, complete=False)),
                 id="old: capture complete but not verified"),
    pytest.param(situation(store=True, manifest=manifest()), expect("old", manifest=COMPLETE_MANIFEST),
                 id="old: capture complete and verified"),
    # The maintenance environment: by its marker file or by the kernel flag.
    pytest.param(situation(marker=True), expect("maintenance"), id="maintenance by marker, no store"),
    pytest.param(situation(cmdline=MAINTENANCE_CMDLINE, root_uuid=None), expect("maintenance"),
                 id="maintenance by cmdline flag, RAM root without UUID"),
    pytest.param(situation(cmdline="quiet inplace.maintenance.off xinplace.maintenance"), expect("old"),
                 id="a flag that only contains the word is not the flag"),
    pytest.param(situation(marker=True, host=HOST, store=True, manifest=manifest()),
                 expect("maintenance", manifest=COMPLETE_MANIFEST, host=HOST), id="maintenance: host record read"),
    pytest.param(situation(cmdline=MAINTENANCE_CMDLINE, store=True, manifest=manifest(),
                           journal=deployed(NEW_UUID, state="writing")),
                 expect("maintenance", manifest=COMPLETE_MANIFEST), id="maintenance: deploy under way"),
    pytest.param(situation(marker=True, store=True, manifest=manifest(), journal=deployed(OLD_UUID)),
                 expect("maintenance", manifest=COMPLETE_MANIFEST),
                 id="maintenance wins over a deploy whose UUID matches"),
    pytest.param(situation(marker=True, completion=COMPLETION), expect("maintenance"),
                 id="maintenance: a completion record is not read"),
    # The new system: known by the deploy's root UUID, or by its completion record.
    pytest.param(situation(root_uuid=NEW_UUID, store=True, manifest=manifest(), journal=deployed(NEW_UUID)),
                 expect("new", manifest=COMPLETE_MANIFEST), id="new: first boot, deploy complete, UUID matches"),
    pytest.param(situation(root_uuid=OLD_UUID, store=True, manifest=manifest(), journal=deployed(NEW_UUID)),
                 expect("old", manifest=COMPLETE_MANIFEST),
                 id="old: deploy complete but the old root still boots (UUID differs)"),
    pytest.param(situation(root_uuid=NEW_UUID, store=True, manifest=manifest(),
                           journal=deployed(NEW_UUID, state="fixups")),
                 expect("old", manifest=COMPLETE_MANIFEST), id="deploy not complete: not yet the new system"),
    pytest.param(situation(root_uuid=None, store=True, journal=deployed(None)), expect("old"),
                 id="no root UUID on either side is no match"),
    pytest.param(situation(root_uuid=NEW_UUID, completion=COMPLETION), expect("new", completed=True),
                 id="new: completed, store removed"),
    pytest.param(situation(root_uuid=NEW_UUID, completion=COMPLETION, store=True, manifest=manifest(),
                           journal=deployed(NEW_UUID)),
                 expect("new", completed=True, manifest=COMPLETE_MANIFEST), id="new: completed, store not yet removed"),
    pytest.param(situation(root_uuid=OLD_UUID, completion=COMPLETION), expect("new", completed=True),
                 id="completion record alone means new"),
]


@pytest.mark.parametrize("pc, expected", TABLE)
def test_detect(tmp_path, pc, expected):
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cmdline").write_text(pc["cmdline"] + "\n")
    marker = root / "etc" / "inplace-maintenance"
    completion_record = root / "etc" / "inplace-migration" / "complete.json"
    host_record = root / "etc" / "inplace" / "host.json"
    if pc["marker"]:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("")
    for path, value in ((completion_record, pc["completion"]), (host_record, pc["host"])):
        if value is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
    store_dir = tmp_path / "store"
    if pc["store"]:
        store_dir.mkdir()
        store = Store(str(store_dir))
        for key, record in (pc["journal"] or {}).items():
            store.journal.put(key, record)
        if pc["manifest"] is not None:
            store.ensure_dir("inplace/profiles")
            atomic_write_json(store.path(MANIFEST), pc["manifest"])

    looked_up = []

    def find_store(runner, label):
        looked_up.append(label)
        if not pc["store"]:
            return {"device": None, "mounted_at": None}
        return {"device": STORE_DEVICE, "mounted_at": str(store_dir)}

    runner = FindmntRunner(pc["root_uuid"])
    found = detect(runner, LABEL, cmdline=str(root / "proc" / "cmdline"), marker=str(marker),
                   completion_record=str(completion_record), host_record=str(host_record), find_store=find_store)

    assert looked_up == [LABEL]
    assert {k: found[k] for k in expected} == expected
    assert found["completion"] == (COMPLETION if expected["completed"] else None)
    assert found["root"] == {"device": "/dev/sda1" if pc["root_uuid"] else None, "uuid": pc["root_uuid"],
                             "fstype": "ext4" if pc["root_uuid"] else None}
    if pc["store"]:
        assert found["store"] == {"device": STORE_DEVICE, "mounted_at": str(store_dir)}
        assert found["journal"] == (pc["journal"] or {})
    else:
        assert found["store"] == {"device": None, "mounted_at": None}
        assert found["journal"] == {}


def test_a_damaged_journal_is_a_sentence_not_a_traceback(tmp_path):
    store = tmp_path / "store"
    (store / "inplace").mkdir(parents=True)
    (store / "inplace" / "journal.json").write_text('{"records": {"image_deploy": ')
    with pytest.raises(MigrationError, match=r"journal\.json is damaged .*cut short\.$"):
        detect(FindmntRunner(OLD_UUID), LABEL, cmdline=str(tmp_path / "absent"), marker=str(tmp_path / "absent"),
               completion_record=str(tmp_path / "absent"), host_record=str(tmp_path / "absent"),
               find_store=lambda runner, label: {"device": STORE_DEVICE, "mounted_at": str(store)})


def test_without_stand_ins_detect_reads_the_machine_s_own_files():
    defaults = {name: p.default for name, p in inspect.signature(detect).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults == {"cmdline": "/proc/cmdline", "marker": "/etc/inplace-maintenance",
                        "completion_record": "/etc/inplace-migration/complete.json",
                        "host_record": "/etc/inplace/host.json", "find_store": None,
                        "cleanup_record": "/var/lib/inplace-migration/cleanup.json"}


CLEANUP = {"state": "wiped", "started": "2025-01-01T10:00:00Z", "mode": "delete",
           "store": {"partuuid": "0b4e1c2a-02", "uuid": "33333333-3333-4333-8333-333333333333"}, "grow": OLD_UUID}


@pytest.mark.parametrize("store", ["gone", "half zeroed"])
def test_a_cleanup_cut_off_after_the_store_was_zeroed_is_resumed_in_the_new_system(tmp_path, store):
    """The journal that said "new" is zeroed with the store; the cleanup record in the root says it instead."""
    store_dir = tmp_path / "store"
    (store_dir / "inplace").mkdir(parents=True)
    # What a half-zeroed store reads back as: a journal cut anywhere.
    (store_dir / "inplace" / "journal.json").write_bytes(b'{"records": {"image_deploy"' + bytes(64))
    record = tmp_path / "var" / "lib" / "inplace-migration" / "cleanup.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(CLEANUP))

    def find_store(runner, label):
        if store == "gone":
            return {"device": None, "mounted_at": None}
        return {"device": STORE_DEVICE, "mounted_at": str(store_dir)}

    found = detect(FindmntRunner(NEW_UUID), LABEL, cmdline=str(tmp_path / "cmdline"), marker=str(tmp_path / "absent"),
                   completion_record=str(tmp_path / "absent"), host_record=str(tmp_path / "absent"),
                   find_store=find_store, cleanup_record=str(record))

    assert found["environment"] == "new"
    assert found["completed"] is False
    assert found["resume"] == "cleanup"
    assert found["cleanup"] == CLEANUP
    assert found["journal"] == {}


def test_a_finished_cleanup_is_completed_with_nothing_to_resume(tmp_path):
    record, completion = tmp_path / "cleanup.json", tmp_path / "complete.json"
    record.write_text(json.dumps(dict(CLEANUP, state="complete")))
    completion.write_text(json.dumps(COMPLETION))
    found = detect(FindmntRunner(NEW_UUID), LABEL, cmdline=str(tmp_path / "cmdline"), marker=str(tmp_path / "absent"),
                   completion_record=str(completion), host_record=str(tmp_path / "absent"),
                   find_store=lambda runner, label: {"device": None, "mounted_at": None}, cleanup_record=str(record))
    assert (found["environment"], found["completed"], found["resume"]) == ("new", True, None)


def test_the_maintenance_environment_does_not_read_the_old_root_s_cleanup_record(tmp_path):
    marker, record = tmp_path / "inplace-maintenance", tmp_path / "cleanup.json"
    marker.write_text("")
    record.write_text(json.dumps(CLEANUP))
    found = detect(FindmntRunner(None), LABEL, cmdline=str(tmp_path / "cmdline"), marker=str(marker),
                   completion_record=str(tmp_path / "absent"), host_record=str(tmp_path / "absent"),
                   find_store=lambda runner, label: {"device": None, "mounted_at": None}, cleanup_record=str(record))
    assert (found["environment"], found["cleanup"], found["resume"]) == ("maintenance", None, None)
