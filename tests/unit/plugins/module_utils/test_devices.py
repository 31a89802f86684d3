"""Finding devices: blkid's and lsblk's output parsed, specs matched, identities compared (no root, no devices).

The blkid output below was captured from two loop disks: a GPT one with an old root and
a store, and an msdos one whose only partition carries the store's label too.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices

BLKID = r"""DEVNAME=/dev/loop1
PTUUID=10c7841f-e2eb-3949-85d1-906b36ee8c63
PTTYPE=gpt

DEVNAME=/dev/loop1p1
LABEL=old\ root
UUID=110a490b-bc68-4230-b516-98f2a75ee06c
VERSION=1.0
BLOCK_SIZE=1024
TYPE=ext4
USAGE=filesystem
PART_ENTRY_SCHEME=gpt
PART_ENTRY_NAME=system
PART_ENTRY_UUID=f82f184d-d70a-4049-838f-90bd0436255a
PART_ENTRY_TYPE=0fc63daf-8483-4772-8e79-3d69d8477de4
PART_ENTRY_NUMBER=1
PART_ENTRY_OFFSET=2048
PART_ENTRY_SIZE=40960
PART_ENTRY_DISK=7:1

DEVNAME=/dev/loop1p2
LABEL=INPLACE-STORE
UUID=aa8a7401-61c5-48b2-a7e3-ea26bdb39539
VERSION=1.0
BLOCK_SIZE=1024
TYPE=ext4
USAGE=filesystem
PART_ENTRY_SCHEME=gpt
PART_ENTRY_NAME=INPLACE-STORE
PART_ENTRY_UUID=03f0fc2a-2415-6b4f-b228-e2a1f01ace39
PART_ENTRY_TYPE=0fc63daf-8483-4772-8e79-3d69d8477de4
PART_ENTRY_NUMBER=2
PART_ENTRY_OFFSET=43008
PART_ENTRY_SIZE=40960
PART_ENTRY_DISK=7:1

DEVNAME=/dev/loop2
PTUUID=3541f000
PTTYPE=dos

DEVNAME=/dev/loop2p1
LABEL=INPLACE-STORE
UUID=2277d147-094b-40e5-a8b3-334490f1de05
VERSION=1.0
BLOCK_SIZE=1024
TYPE=ext4
USAGE=filesystem
PART_ENTRY_SCHEME=dos
PART_ENTRY_UUID=3541f000-01
PART_ENTRY_TYPE=0x83
PART_ENTRY_NUMBER=1
PART_ENTRY_OFFSET=2048
PART_ENTRY_SIZE=40960
PART_ENTRY_DISK=7:2
"""

STORE = "/dev/loop1p2"
OTHER = "/dev/loop2p1"
DISKS = {"/dev/loop1p1": "/dev/loop1", STORE: "/dev/loop1", OTHER: "/dev/loop2"}


class FakeRunner:
    """Answers blkid -p with the captured output for the devices asked about, and lsblk with ``lsblk``."""

    def __init__(self, blkid=BLKID, lsblk='WWN="" SERIAL=""\n'):
        self.blocks = _devices.parse_export(blkid)
        self.text = blkid
        self.lsblk = lsblk
        self.calls = []

    def has(self, tool):
        return True

    def run(self, args, ok=(0,), data=None):
        self.calls.append(args)
        if args[0] == "lsblk":
            return 0, self.lsblk, ""
        wanted = args[4:]
        blocks = self.text.split("\n\n")
        out = "\n\n".join(b for b in blocks if b.split("\n", 1)[0][len("DEVNAME="):] in wanted)
        return 0, out, ""


@pytest.fixture
def scan(monkeypatch, tmp_path):
    """A scan of the captured devices, each disk with a sysfs directory of its own in ``tmp_path``."""
    for disk in set(DISKS.values()):
        os.makedirs(str(tmp_path / os.path.basename(disk)))
    monkeypatch.setattr(_devices, "parent_disk", lambda path: DISKS.get(path, path))
    monkeypatch.setattr(_devices, "sysfs", lambda path: str(tmp_path / os.path.basename(path)))
    runner = FakeRunner()
    return _devices.Scan(runner, list(runner.blocks))


def test_blkid_export_is_parsed_per_device_with_escapes_undone():
    found = _devices.parse_export(BLKID)
    assert sorted(found) == ["/dev/loop1", "/dev/loop1p1", "/dev/loop1p2", "/dev/loop2", "/dev/loop2p1"]
    assert found["/dev/loop1p1"]["LABEL"] == "old root"
    assert found[STORE]["PART_ENTRY_UUID"] == "03f0fc2a-2415-6b4f-b228-e2a1f01ace39"
    assert found["/dev/loop2"] == {"PTUUID": "3541f000", "PTTYPE": "dos"}
    assert _devices.parse_export('DEVNAME=/dev/sdb1\nLABEL=my\\ label\\ \\"q\\"\n') == {
        "/dev/sdb1": {"LABEL": 'my label "q"'}}


def test_lsblk_pairs_are_parsed_with_hex_escapes_undone():
    assert _devices.parse_pairs('WWN="0x5000c500a1b2c3d4" SERIAL="WD-WCC4\\x20X1"\n') == {
        "WWN": "0x5000c500a1b2c3d4", "SERIAL": "WD-WCC4 X1"}
    assert _devices.parse_pairs('WWN="" SERIAL=""') == {"WWN": "", "SERIAL": ""}


def test_specs_select_by_every_kind_of_tag_and_uuids_in_either_case(scan):
    assert scan.matching("PARTUUID=03F0FC2A-2415-6B4F-B228-E2A1F01ACE39") == [STORE]
    assert scan.matching("UUID=2277d147-094b-40e5-a8b3-334490f1de05") == [OTHER]
    assert scan.matching('LABEL="old root"') == ["/dev/loop1p1"]
    assert scan.matching("PARTLABEL=system") == ["/dev/loop1p1"]
    assert scan.matching("PARTUUID=3541f000-01") == [OTHER]
    assert scan.matching("LABEL=inplace-store") == []  # labels are case-sensitive
    assert scan.matching("LABEL=") == []
    assert scan.lookup("LABEL=nothing") is None
    with pytest.raises(MigrationError, match=r"^no device has LABEL=nothing \(the store\) on this host; check the name, or make or attach the device first\.$"):
        scan.find("LABEL=nothing", "the store")


def test_two_devices_with_one_label_are_an_error_naming_both(scan):
    assert scan.matching("LABEL=INPLACE-STORE") == [STORE, OTHER]
    with pytest.raises(MigrationError) as error:
        scan.find("LABEL=INPLACE-STORE", "the migration store")
    assert str(error.value) == ("LABEL=INPLACE-STORE (the migration store) names 2 devices, /dev/loop1p2 and "
                                "/dev/loop2p1, where it must name one; remove or relabel the other one.")
    with pytest.raises(MigrationError, match="names 3 devices, /dev/a, /dev/b and /dev/c.*give it a new UUID"):
        _devices.only_one("UUID=1234", ["/dev/a", "/dev/b", "/dev/c"])


def test_a_spec_that_is_neither_a_tag_nor_a_path_is_refused():
    with pytest.raises(MigrationError, match="sda2 names no device; give a path such as /dev/sda2"):
        _devices.parse_spec("sda2")
    assert _devices.parse_spec("/dev/disk/by-label/x") == (None, "/dev/disk/by-label/x")
    assert _devices.select({}, "/nonexistent/device") == []


def test_the_identity_of_a_partition_and_of_its_disk(scan):
    identity = scan.identity(STORE)
    assert identity == {"device": STORE, "partuuid": "03f0fc2a-2415-6b4f-b228-e2a1f01ace39",
                        "uuid": "aa8a7401-61c5-48b2-a7e3-ea26bdb39539", "label": "INPLACE-STORE",
                        "disk": {"device": "/dev/loop1", "ptuuid": "10c7841f-e2eb-3949-85d1-906b36ee8c63"}}


def test_a_disk_s_wwn_and_serial_come_from_sysfs_else_from_lsblk(scan, tmp_path):
    (tmp_path / "loop1" / "serial").write_text("QM00001  \n")
    scan.runner.lsblk = 'WWN="0x5000C500A1B2C3D4" SERIAL="from-lsblk"\n'
    disk = scan.disk_identity("/dev/loop1")
    assert disk["serial"] == "QM00001" and disk["wwn"] == "5000c500a1b2c3d4"
    # sysfs and lsblk spell a WWN differently; recorded from one, it matches the other.
    assert _devices.normal_wwn("naa.5000c500a1b2c3d4") == _devices.normal_wwn("0x5000C500A1B2C3D4")


def test_the_recorded_device_is_found_by_its_partuuid_though_another_has_its_label(scan):
    recorded = scan.identity(STORE)
    assert scan.find_recorded(recorded, "the migration store") == STORE
    assert scan.is_the_recorded(STORE, recorded)
    assert not scan.is_the_recorded(OTHER, recorded)


def test_a_device_found_by_partuuid_whose_filesystem_changed_is_an_error_naming_both_values(scan):
    recorded = dict(scan.identity(STORE), uuid="11111111-2222-3333-4444-555555555555")
    with pytest.raises(MigrationError) as error:
        scan.find_recorded(recorded, "the migration store")
    assert str(error.value) == (
        "/dev/loop1p2, found by PARTUUID=03f0fc2a-2415-6b4f-b228-e2a1f01ace39 as the migration store, has filesystem "
        "UUID aa8a7401-61c5-48b2-a7e3-ea26bdb39539 where 11111111-2222-3333-4444-555555555555 was recorded, so it "
        "is not the device recorded; put the recorded one back or record it again.")


def test_differences_compare_what_was_recorded_and_can_be_read_now():
    recorded = {"device": "/dev/sda3", "partuuid": "abcd-03", "uuid": "u1", "label": "L",
                "disk": {"device": "/dev/sda", "wwn": "5000c500a1b2c3d4", "serial": "S1", "ptuuid": "abcd"}}
    now = {"device": "/dev/sdb3", "partuuid": "ABCD-03", "uuid": "u1", "label": "L",
           "disk": {"device": "/dev/sdb", "ptuuid": "abcd"}}
    # Another kernel name, and no WWN or serial readable now (no udev): still the recorded one.
    assert _devices.differences(now, recorded) == []
    now["disk"].update(serial="S2")
    now["label"] = "M"
    assert _devices.differences(now, recorded) == [("label", "L", "M"), ("its disk's serial number", "S1", "S2")]
    # The partition table is read from the disk itself: gone means different.
    del now["disk"]["ptuuid"]
    assert ("its disk's partition table UUID", "abcd", None) in _devices.differences(now, recorded)
    with pytest.raises(MigrationError, match="nothing was recorded to find the store by"):
        _devices.Scan(FakeRunner(), []).find_recorded({"device": "/dev/sda3"}, "the store")


def test_the_scan_skips_ram_disks_cdroms_and_empty_devices(monkeypatch, tmp_path):
    sys_block = tmp_path / "sys" / "class" / "block"
    dev = tmp_path / "dev"
    dev.mkdir()
    for name, size in (("sda", "2048"), ("sda1", "1024"), ("ram0", "8192"), ("zram0", "8192"), ("sr0", "4096"),
                       ("loop7", "0"), ("cdrom1", "4096"), ("cciss!c0d0", "2048"), ("vdb", "2048")):
        (sys_block / name).mkdir(parents=True)
        (sys_block / name / "size").write_text(size + "\n")
        node = dev / name.replace("!", "/")
        node.parent.mkdir(exist_ok=True)
        if name != "vdb":  # no node in /dev: nothing to probe
            node.write_text("")
    (sys_block / "cdrom1" / "device").mkdir()
    (sys_block / "cdrom1" / "device" / "type").write_text("5\n")
    monkeypatch.setattr(_devices, "SYSFS", str(tmp_path / "sys"))
    monkeypatch.setattr(_devices, "DEV", str(dev))
    assert _devices.candidates() == [str(dev / "cciss" / "c0d0"), str(dev / "sda"), str(dev / "sda1")]


def test_a_scan_probes_every_device_in_one_blkid_run_without_its_cache():
    runner = FakeRunner()
    scan = _devices.Scan(runner, ["/dev/loop1p1", "/dev/loop2p1"])
    assert runner.calls == [["blkid", "-p", "-o", "export", "/dev/loop1p1", "/dev/loop2p1"]]
    assert scan.values("/dev/loop2")["PTTYPE"] == "dos"  # probed when asked for
    assert runner.calls[-1] == ["blkid", "-p", "-o", "export", "/dev/loop2"]


def fake_sysfs(tmp_path, monkeypatch, entries):
    """A sysfs of ``entries`` ({kernel name: {"partition": n, "parent": name, "slaves": [...], "dm_uuid": ...}}),
    ``sysfs`` mapping /dev/<name> to its directory."""
    base = tmp_path / "sys"
    directories = {}
    for name, entry in entries.items():
        parent = directories.get(entry.get("parent"))
        directory = (parent or base) / name
        directory.mkdir(parents=True)
        directories[name] = directory
        if "partition" in entry:
            (directory / "partition").write_text("%d\n" % entry["partition"])
        if "slaves" in entry:
            (directory / "slaves").mkdir()
            for slave in entry["slaves"]:
                (directory / "slaves" / slave).write_text("")
        if "dm_uuid" in entry:
            (directory / "dm").mkdir()
            (directory / "dm" / "uuid").write_text(entry["dm_uuid"] + "\n")
    monkeypatch.setattr(_devices, "DEV", "/dev")
    monkeypatch.setattr(_devices, "sysfs", lambda path: str(directories[os.path.basename(path)]))
    monkeypatch.setattr(os.path, "realpath", lambda path: path)


VG_UUID, LV_UUID = "rE3DhDsOZpzMpcLTSgST4rDIDo6ihePH", "D4QVHDyeGfdAgC49TsHMmbbONZEowUmN"


def test_a_logical_volume_is_on_the_disk_of_its_physical_volumes_and_known_by_its_uuid(tmp_path, monkeypatch):
    fake_sysfs(tmp_path, monkeypatch, {
        "vda": {}, "vda3": {"parent": "vda", "partition": 3}, "sdb": {}, "sdb1": {"parent": "sdb", "partition": 1},
        "dm-0": {"slaves": ["vda3"], "dm_uuid": "LVM-" + VG_UUID + LV_UUID},
        "dm-1": {"slaves": ["vda3", "sdb1"], "dm_uuid": "LVM-" + VG_UUID + "x" * 32},
        "dm-2": {"slaves": ["vda3"], "dm_uuid": "CRYPT-LUKS2-abc"}})
    assert _devices.parent_disk("/dev/dm-0") == "/dev/vda"
    assert _devices.parent_disk("/dev/vda3") == "/dev/vda"
    assert _devices.parent_disk("/dev/dm-1") == "/dev/dm-1", "spread over two disks, it is on neither"
    assert _devices.lv_uuid("/dev/dm-0") == "D4QVHD-yeGf-dAgC-49Ts-HMmb-bONZ-EowUmN"
    assert _devices.lv_uuid("/dev/dm-2") is None and _devices.lv_uuid("/dev/vda3") is None
    runner = FakeRunner()
    runner.run = lambda args, ok=(0,), data=None: (0, "DEVNAME=/dev/dm-0\nUUID=f00d\nTYPE=ext4\n", "")
    scan = _devices.Scan(runner, ["/dev/dm-0"])
    assert scan.lookup("LVUUID=d4qvhd-yegf-dagc-49ts-hmmb-bonz-eowumn") == "/dev/dm-0"
    assert _devices.record("/dev/dm-0", scan.values("/dev/dm-0"), {})["lv_uuid"] == \
        "d4qvhd-yegf-dagc-49ts-hmmb-bonz-eowumn"
