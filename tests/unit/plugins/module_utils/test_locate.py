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
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.state.files import atomic_write_json
from ansible_collections.inplace.migration.plugins.module_utils.state.locate import detect, store_on_system_disk
from ansible_collections.inplace.migration.plugins.module_utils.state.store import MANIFEST, Store

LABEL = "INPLACE-STORE"
STORE_DEVICE = "/dev/sdz3"
OLD_UUID = "11111111-1111-4111-8111-111111111111"
NEW_UUID = "22222222-2222-4222-8222-222222222222"
CMDLINE = "BOOT_IMAGE=/vmlinuz root=UUID=%s ro quiet" % OLD_UUID
MAINTENANCE_CMDLINE = "console=tty0 console=ttyS0,115200 inplace.maintenance panic=10"
COMPLETION = {"completed": "2025-01-01T10:00:00Z", "image": "sha256:" + "a" * 64}
ROOT_PARTUUID = "0b4e1c2a-01"
DISK_IDENTITY = {"device": "/dev/sda", "serial": "S1", "ptuuid": "0b4e1c2a"}
HOST = {"disk": "/dev/sda", "root_partuuid": ROOT_PARTUUID, "disk_identity": DISK_IDENTITY}
SYSTEM_DISK = {"device": "/dev/sda", "root": "PARTUUID=" + ROOT_PARTUUID, "identity": DISK_IDENTITY}


class FindmntRunner:
    """Answers findmnt for / as the PC's root would (without a UUID when ``uuid`` is None); any other command is a
    test failure."""

    def __init__(self, uuid):
        self.uuid = uuid
        self.commands = []

    def run(self, args, ok=(0,), data=None):
        self.commands.append(args)
        if args[0] != "findmnt" or args[-1] != "/":
            raise AssertionError("detect ran %r" % (args,))
        return 0, 'SOURCE="/dev/sda1" UUID="%s" FSTYPE="ext4"\n' % (self.uuid or ""), ""


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
    pytest.param(situation(marker=True, host=HOST), expect("maintenance", host=HOST), id="maintenance by marker, no store"),
    pytest.param(situation(cmdline=MAINTENANCE_CMDLINE, root_uuid=None, host=HOST), expect("maintenance", host=HOST),
                 id="maintenance by cmdline flag, RAM root without UUID"),
    pytest.param(situation(cmdline="quiet inplace.maintenance.off xinplace.maintenance"), expect("old"),
                 id="a flag that only contains the word is not the flag"),
    pytest.param(situation(marker=True, host=HOST, store=True, manifest=manifest()),
                 expect("maintenance", manifest=COMPLETE_MANIFEST, host=HOST), id="maintenance: host record read"),
    pytest.param(situation(cmdline=MAINTENANCE_CMDLINE, host=HOST, store=True, manifest=manifest(),
                           journal=deployed(NEW_UUID, state="writing")),
                 expect("maintenance", manifest=COMPLETE_MANIFEST, host=HOST), id="maintenance: deploy under way"),
    pytest.param(situation(marker=True, host=HOST, store=True, manifest=manifest(), journal=deployed(OLD_UUID)),
                 expect("maintenance", manifest=COMPLETE_MANIFEST, host=HOST),
                 id="maintenance wins over a deploy whose UUID matches"),
    pytest.param(situation(marker=True, host=HOST, completion=COMPLETION), expect("maintenance", host=HOST),
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

    def find_store(runner, label, root):
        looked_up.append((label, root))
        store = {"device": STORE_DEVICE, "mounted_at": str(store_dir)} if pc["store"] else \
            {"device": None, "mounted_at": None}
        return {"store": store, "system_disk": SYSTEM_DISK, "ignored_stores": []}

    runner = FindmntRunner(pc["root_uuid"])
    found = detect(runner, LABEL, cmdline=str(root / "proc" / "cmdline"), marker=str(marker),
                   completion_record=str(completion_record), host_record=str(host_record), find_store=find_store)

    # The system disk is the one holding the host record's root partition in maintenance, else the root's.
    assert looked_up == [(LABEL, "PARTUUID=" + ROOT_PARTUUID if expected["environment"] == "maintenance"
                          else "/dev/sda1")]
    assert found["system_disk"] == SYSTEM_DISK
    assert {k: found[k] for k in expected} == expected
    assert found["completion"] == (COMPLETION if expected["completed"] else None)
    assert found["root"] == {"device": "/dev/sda1", "uuid": pc["root_uuid"], "fstype": "ext4"}
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
               find_store=lambda runner, label, root: {"store": {"device": STORE_DEVICE, "mounted_at": str(store)},
                                                       "system_disk": SYSTEM_DISK, "ignored_stores": []})


def test_without_stand_ins_detect_reads_the_machine_s_own_files():
    defaults = {name: p.default for name, p in inspect.signature(detect).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults == {"cmdline": "/proc/cmdline", "marker": "/etc/inplace-maintenance",
                        "completion_record": "/etc/inplace-migration/complete.json",
                        "host_record": "/etc/inplace/host.json", "find_store": None, "root_partuuid": None,
                        "cleanup_record": "/var/lib/inplace-migration/cleanup.json"}


# The store is looked for on the system disk only: the disk holding the root partition.

STICK = "/dev/sdb1"


@pytest.fixture
def disks(monkeypatch):
    """A Scan of made-up devices: ``scan.devices`` is {device: what blkid reads}; a device's disk is its name
    without the partition number, and each disk's identity is DISK_IDENTITY with its own name."""
    monkeypatch.setattr(_devices, "parent_disk", lambda device: device.rstrip("0123456789"))
    monkeypatch.setattr(_devices.Scan, "disk_identity", lambda self, disk: dict(DISK_IDENTITY, device=disk))
    scan = _devices.Scan(None, [])
    scan.devices = {"/dev/sda1": {"PART_ENTRY_UUID": ROOT_PARTUUID, "UUID": OLD_UUID}}
    return scan


def labelled(scan, *devices):
    for device in devices:
        scan.devices[device] = {"LABEL": LABEL, "UUID": "u-" + device}


def test_a_stick_with_the_store_s_label_is_set_aside_and_the_system_disk_s_store_taken(disks):
    labelled(disks, STICK, "/dev/sda3")
    found = store_on_system_disk(None, LABEL, "PARTUUID=" + ROOT_PARTUUID, scan=disks)
    assert found == {"store": {"device": "/dev/sda3", "disk": "/dev/sda", "mounted_at": None},
                     "system_disk": SYSTEM_DISK, "ignored_stores": [STICK]}


def test_a_stick_alone_with_the_store_s_label_is_no_store(disks):
    labelled(disks, STICK)
    found = store_on_system_disk(None, LABEL, "PARTUUID=" + ROOT_PARTUUID, scan=disks)
    assert found["store"] == {"device": None, "disk": None, "mounted_at": None}
    assert found["ignored_stores"] == [STICK] and found["system_disk"]["device"] == "/dev/sda"


def test_two_devices_with_the_label_on_the_system_disk_are_an_error_naming_both(disks):
    labelled(disks, "/dev/sda3", "/dev/sda4", STICK)
    with pytest.raises(MigrationError, match=r"^LABEL=INPLACE-STORE \(the migration store\) names 2 devices, "
                                             r"/dev/sda3 and /dev/sda4, where it must name one; remove or relabel "
                                             r"the other one\.$"):
        store_on_system_disk(None, LABEL, "PARTUUID=" + ROOT_PARTUUID, scan=disks)


def test_a_root_partition_that_is_not_there_is_an_error_not_a_guess(disks):
    labelled(disks, STICK)
    with pytest.raises(MigrationError, match=r"^no device has PARTUUID=feedbeef-02 \(the system's root partition\) "
                                             r"on this host; check the name, or make or attach the device first\.$"):
        store_on_system_disk(None, LABEL, "PARTUUID=feedbeef-02", scan=disks)


def maintenance(tmp_path, host):
    (tmp_path / "marker").write_text("")
    if host is not None:
        (tmp_path / "host.json").write_text(json.dumps(host))
    return dict(cmdline=str(tmp_path / "absent"), marker=str(tmp_path / "marker"),
                completion_record=str(tmp_path / "absent"), host_record=str(tmp_path / "host.json"))


def test_in_maintenance_a_stick_is_never_mounted_and_is_named_for_the_report(disks, tmp_path):
    labelled(disks, STICK)
    runner = FindmntRunner(None)  # fails the test on a mount of anything
    found = detect(runner, LABEL, find_store=lambda runner, label, root: store_on_system_disk(
        runner, label, root, scan=disks), **maintenance(tmp_path, HOST))
    assert found["store"]["device"] is None and found["ignored_stores"] == [STICK]
    assert [args[0] for args in runner.commands] == ["findmnt"]


def test_in_maintenance_a_system_disk_that_is_not_the_recorded_one_is_refused(disks, tmp_path):
    labelled(disks, "/dev/sda3")
    host = dict(HOST, disk_identity=dict(DISK_IDENTITY, serial="S2", ptuuid="feedbeef"))
    with pytest.raises(MigrationError) as error:
        detect(FindmntRunner(None), LABEL, find_store=lambda runner, label, root: store_on_system_disk(
            runner, label, root, scan=disks), **maintenance(tmp_path, host))
    assert str(error.value) == (
        "/dev/sda is not the disk recorded when the migration was planned (it has serial number S1 where S2 was "
        "recorded and partition table UUID 0b4e1c2a where feedbeef was recorded), so working on it from the "
        "maintenance environment is refused; put the recorded disk back, or run preflight again on the old system to "
        "record this one.")


def test_in_maintenance_without_a_host_record_the_system_disk_is_unknown_and_nothing_is_looked_for(tmp_path):
    def find_store(runner, label, root):
        raise AssertionError("looked for the store on %s" % root)
    with pytest.raises(MigrationError, match=r"no host record .* so the disk the store must be on is unknown; boot it "
                                             r"through maintenance_env or give root_partuuid\.$"):
        detect(FindmntRunner(None), LABEL, find_store=find_store, **maintenance(tmp_path, None))


def on_system_disk(device, mounted_at=None):
    """What the store's look-up finds: ``device`` (or no store) on the system disk, nothing set aside."""
    return {"store": {"device": device, "disk": "/dev/sda" if device else None, "mounted_at": mounted_at},
            "system_disk": SYSTEM_DISK, "ignored_stores": []}


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

    def find_store(runner, label, root):
        if store == "gone":
            return on_system_disk(None)
        return on_system_disk(STORE_DEVICE, str(store_dir))

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
                   find_store=lambda runner, label, root: on_system_disk(None), cleanup_record=str(record))
    assert (found["environment"], found["completed"], found["resume"]) == ("new", True, None)


def test_the_maintenance_environment_does_not_read_the_old_root_s_cleanup_record(tmp_path):
    marker, record, host = tmp_path / "inplace-maintenance", tmp_path / "cleanup.json", tmp_path / "host.json"
    marker.write_text("")
    host.write_text(json.dumps(HOST))
    record.write_text(json.dumps(CLEANUP))
    found = detect(FindmntRunner(None), LABEL, cmdline=str(tmp_path / "cmdline"), marker=str(marker),
                   completion_record=str(tmp_path / "absent"), host_record=str(host),
                   find_store=lambda runner, label, root: on_system_disk(None), cleanup_record=str(record))
    assert (found["environment"], found["cleanup"], found["resume"]) == ("maintenance", None, None)
