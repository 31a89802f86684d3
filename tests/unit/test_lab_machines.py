"""The lab's QEMU command lines for a system disk on NVMe, SCSI or SATA and a stick: exactly the devices asked for
(nothing is booted), and the stick image itself (made without mounting anything)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.lab import machines

SYSTEM, STICK = "/lab/pc1.qcow2", "/lab/pc1.stick.img"


def devices(args):
    """The -drive and -device values, in order."""
    return [(args[i], args[i + 1]) for i in range(0, len(args), 2) if args[i] in ("-drive", "-device")]


def whole(bus, stick=None, place="usb"):
    command = machines.qemu_command("pc1", "/lab", 2222, disk=None, hostname="pc1")
    return command + machines.disk_devices(SYSTEM, bus, stick, place)


SYS_DRIVE = ("-drive", "if=none,id=sys,file=%s,format=qcow2" % SYSTEM)
STICK_DRIVE = ("-drive", "if=none,id=stick,file=%s,format=raw" % STICK)
USB = [("-device", "qemu-xhci,id=xhci"),
       ("-device", "usb-storage,bus=xhci.0,drive=stick,removable=on,serial=INPLACE-STICK-01")]


@pytest.mark.parametrize("bus, stick, place, expected", [
    ("nvme", None, "usb", [SYS_DRIVE, ("-device", "nvme,serial=INPLACE-SYS-0001,drive=sys,bootindex=0")]),
    ("nvme", STICK, "usb", [SYS_DRIVE, STICK_DRIVE, ("-device", "nvme,serial=INPLACE-SYS-0001,drive=sys,bootindex=0")] + USB),
    ("virtio", STICK, "usb", [SYS_DRIVE, STICK_DRIVE, ("-device", "virtio-blk-pci,drive=sys,serial=INPLACE-SYS-0001,bootindex=0")]
     + USB),
    ("scsi", STICK, "usb", [SYS_DRIVE, STICK_DRIVE, ("-device", "virtio-scsi-pci,id=scsi0"),
                            ("-device", "scsi-hd,bus=scsi0.0,channel=0,scsi-id=1,lun=0,drive=sys,serial=INPLACE-SYS-0001,bootindex=0")]
     + USB),
    ("scsi", STICK, "scsi-first", [
        SYS_DRIVE, STICK_DRIVE, ("-device", "virtio-scsi-pci,id=scsi0"),
        ("-device", "scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun=0,drive=stick,removable=on,serial=INPLACE-STICK-01"),
        ("-device", "scsi-hd,bus=scsi0.0,channel=0,scsi-id=1,lun=0,drive=sys,serial=INPLACE-SYS-0001,bootindex=0")]),
    ("sata", STICK, "sata-first", [
        SYS_DRIVE, STICK_DRIVE, ("-device", "ahci,id=ahci0"),
        ("-device", "ide-hd,bus=ahci0.0,drive=stick,serial=INPLACE-STICK-01"),
        ("-device", "ide-hd,bus=ahci0.1,drive=sys,serial=INPLACE-SYS-0001,bootindex=0")]),
], ids=["nvme", "nvme and a usb stick", "virtio and a usb stick", "scsi and a usb stick",
        "scsi with the stick ahead", "sata with the stick ahead"])
def test_the_command_line_holds_exactly_the_disks_and_controllers_asked_for(bus, stick, place, expected):
    command = whole(bus, stick, place)
    assert devices(command) == [("-device", "virtio-net-pci,netdev=net0")] + expected
    assert not any("if=virtio" in value for value in command)


def test_an_unknown_bus_or_a_stick_ahead_on_another_controller_is_refused():
    with pytest.raises(machines.LabError, match="bus 'ide' is none of virtio, nvme, scsi, sata"):
        machines.disk_devices(SYSTEM, "ide")
    with pytest.raises(machines.LabError, match="a stick placed scsi-first needs the system disk on scsi, not nvme"):
        machines.disk_devices(SYSTEM, "nvme", STICK, "scsi-first")
    with pytest.raises(machines.LabError, match="AHCI disks cannot be hot-plugged"):
        machines.stick_hotplug_messages(STICK, "sata-first")


def test_a_stick_plugged_in_later_leaves_only_its_controller_on_the_command_line():
    assert devices(machines.disk_devices(SYSTEM, "scsi", STICK, "scsi-first", stick_later=True)) == [
        SYS_DRIVE, ("-device", "virtio-scsi-pci,id=scsi0"),
        ("-device", "scsi-hd,bus=scsi0.0,channel=0,scsi-id=1,lun=0,drive=sys,serial=INPLACE-SYS-0001,bootindex=0")]
    assert devices(machines.disk_devices(SYSTEM, "nvme", STICK, "usb", stick_later=True)) == [
        SYS_DRIVE, ("-device", "nvme,serial=INPLACE-SYS-0001,drive=sys,bootindex=0"), ("-device", "qemu-xhci,id=xhci")]
    with pytest.raises(machines.LabError, match="AHCI disks cannot be hot-plugged"):
        machines.disk_devices(SYSTEM, "sata", STICK, "sata-first", stick_later=True)


def test_plugging_the_stick_in_adds_its_image_then_the_same_device_as_at_boot():
    add, device = machines.stick_hotplug_messages(STICK, "scsi-first")
    assert add == {"execute": "blockdev-add", "arguments": {
        "node-name": "stick", "driver": "raw", "file": {"driver": "file", "filename": STICK}}}
    assert device == {"execute": "device_add", "arguments": {
        "driver": "scsi-hd", "id": "stick0", "bus": "scsi0.0", "channel": 0, "scsi-id": 0, "lun": 0, "drive": "stick",
        "removable": True, "serial": "INPLACE-STICK-01"}}
    usb = machines.stick_hotplug_messages(STICK)[1]["arguments"]
    assert usb == {"driver": "usb-storage", "id": "stick0", "bus": "xhci.0", "drive": "stick", "removable": True,
                   "serial": "INPLACE-STICK-01"}


def test_a_lab_pc_with_devices_starts_with_them_and_its_inventory_names_its_stick(tmp_path, monkeypatch):
    launched = []
    monkeypatch.setattr(machines.cache, "ssh_key", lambda: str(tmp_path / "key"))
    monkeypatch.setattr(machines.images, "old_pc", lambda layout: str(tmp_path / layout))
    monkeypatch.setattr(machines.images, "run", lambda *args: open(args[-1], "w").close())
    monkeypatch.setattr(machines, "launch", lambda command, name, directory: launched.append(command))
    monkeypatch.setattr(machines.Lab, "make_host_keys", lambda self, name, port: str(tmp_path / "keys"))
    monkeypatch.setattr(machines.Lab, "make_pc_stick", lambda self, name: {
        "stick": str(tmp_path / (name + ".stick.img")), "stick_sha256": "ab" * 32})
    monkeypatch.setattr(machines.Lab, "running", lambda self, name: None)
    monkeypatch.setattr(machines.Lab, "wait_ssh", lambda self, started, timeout: {})
    lab = machines.Lab(str(tmp_path / "lab"))
    assert lab.add(1, ["gpt"], devices={"bus": "nvme", "stick": True}) == ["pc1"]
    lab.start()
    overlay = str(tmp_path / "lab" / "pc1.qcow2")
    assert devices(launched[0])[1:] == [
        ("-drive", "if=none,id=sys,file=%s,format=qcow2" % overlay),
        ("-drive", "if=none,id=stick,file=%s,format=raw" % (tmp_path / "pc1.stick.img")),
        ("-device", "nvme,serial=INPLACE-SYS-0001,drive=sys,bootindex=0")] + USB
    with open(lab.inventory, encoding="utf-8") as handle:
        text = handle.read()
    host = json.loads(text[text.index("{"):])["all"]["children"]["lab-pcs"]["hosts"]["pc1"]
    assert host["lab_stick_sha256"] == "ab" * 32 and host["lab_stick_image"].endswith("pc1.stick.img")


def test_the_stick_image_has_a_table_a_filled_ext4_and_one_labelled_as_the_store(tmp_path):
    files = tmp_path / "files"
    (files / "docs").mkdir(parents=True)
    (files / "docs" / "note.txt").write_text("mine\n")
    image = str(tmp_path / "stick.img")
    digest = machines.make_stick(image, str(files))
    assert digest == machines.file_sha256(image) and os.path.getsize(image) == machines.STICK_BYTES
    table = json.loads(subprocess.run(["sfdisk", "--json", image], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert [(p["start"], p["size"]) for p in table["partitions"]] == [(2048, 61440), (63488, 67584)]
    labels = [subprocess.run(["blkid", "-p", "-O", str(offset), "-s", "LABEL", "-o", "value", image],
                             capture_output=True, text=True, check=True).stdout.strip() for offset, unused, unused in
              machines.STICK_PARTITIONS]
    assert labels == ["LAB-STICK", "INPLACE-STORE"]
    note = subprocess.run(["debugfs", "-R", "cat /docs/note.txt", "%s?offset=%d" % (image, 2048 * 512)],
                          capture_output=True, text=True, check=True).stdout
    assert note == "mine\n"


def test_a_server_left_serving_another_directory_is_replaced_not_reused(tmp_path):
    import urllib.request
    lab = machines.Lab(str(tmp_path / "lab"))
    served = {}
    for name in ("old", "new"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "image").write_text(name)
        served[name] = str(directory)
    try:
        first = lab.serve(served["old"])
        old_pid = lab.http["pid"]
        assert lab.serve(served["old"]) == first, "the same directory keeps its server"
        port = lab.serve(served["new"])
        with urllib.request.urlopen("http://127.0.0.1:%d/image" % port, timeout=10) as answer:
            assert answer.read() == b"new"
        assert machines.wait_gone(old_pid, 10), "the server of the other directory is stopped"
    finally:
        lab.stop_serving()
