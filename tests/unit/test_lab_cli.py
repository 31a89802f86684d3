"""``lab.py start --devices``: each new PC's system disk bus and stick from the command line (nothing is booted)."""

from __future__ import annotations

import json
import os
import shlex

import jinja2
import pytest
import yaml

from tests.lab import lab as cli
from tests.lab import machines

MOLECULE = os.path.join(os.path.dirname(__file__), "..", "..", "extensions", "molecule")


def parsed(*argv):
    return cli.parser().parse_args(["start", "--lab", "/lab"] + list(argv))


@pytest.mark.parametrize("spec, devices", [
    ("bus=scsi,stick=scsi-first", {"bus": "scsi", "stick": True, "stick_place": "scsi-first"}),
    ("stick=usb", {"bus": "virtio", "stick": True, "stick_place": "usb"}),
    ("stick=usb,bus=nvme", {"bus": "nvme", "stick": True, "stick_place": "usb"}),
    ("bus=sata,stick=none", {"bus": "sata"}),
    ("bus=sata,stick=sata-first", {"bus": "sata", "stick": True, "stick_place": "sata-first"}),
    ("bus=nvme,stick=usb,secure_boot=off", {"bus": "nvme", "stick": True, "stick_place": "usb", "secure_boot": False}),
    ("secure_boot=on", {"bus": "virtio"}),
])
def test_a_devices_value_becomes_what_lab_add_takes(spec, devices):
    assert parsed("--devices", spec).devices == [devices]


@pytest.mark.parametrize("spec, said", [
    ("bus=ide", "bus=ide: bus is one of virtio, nvme, scsi, sata"),
    ("stick=floppy", "stick=floppy: stick is one of none, usb, scsi-first, sata-first"),
    ("bus=scsi,bus=sata", "'bus=scsi,bus=sata' is not bus=BUS,stick=PLACE (each key once)"),
    ("bus=scsi,colour=red", "'bus=scsi,colour=red' is not bus=BUS,stick=PLACE"),
    ("scsi", "'scsi' is not bus=BUS,stick=PLACE"),
    ("secure_boot=maybe", "secure_boot=maybe: secure_boot is one of on, off"),
    ("bus=nvme,stick=scsi-first", "a stick placed scsi-first needs the system disk on scsi, not nvme"),
])
def test_a_wrong_devices_value_is_refused_before_any_pc_is_made(spec, said, capsys):
    with pytest.raises(SystemExit) as stopped:
        parsed("--devices", spec)
    assert stopped.value.code == 2
    assert "argument --devices: " + said in capsys.readouterr().err


def test_layouts_and_devices_go_to_the_new_pcs_in_turn():
    scsi = {"bus": "scsi", "stick": True, "stick_place": "scsi-first"}
    usb = {"bus": "virtio", "stick": True, "stick_place": "usb"}
    assert cli.new_pcs(2, ["msdos", "gpt"], [usb, scsi]) == [("msdos", usb), ("gpt", scsi)]
    assert cli.new_pcs(3, ["gpt"], [usb, scsi]) == [("gpt", usb), ("gpt", scsi), ("gpt", usb)]
    assert cli.new_pcs(2, None, None) == [("msdos", None), ("msdos", None)]


@pytest.fixture(name="offline_lab")
def fixture_offline_lab(tmp_path, monkeypatch):
    """Lab.add and Lab.start as they are, with QEMU, the images, the keys and the stick left out: the commands."""
    launched = {}
    monkeypatch.setattr(machines.cache, "ssh_key", lambda: str(tmp_path / "key"))
    monkeypatch.setattr(machines.images, "old_pc", lambda layout: str(tmp_path / layout))
    monkeypatch.setattr(machines.images, "run", lambda *args: open(args[-1], "w", encoding="utf-8").close())
    monkeypatch.setattr(machines, "launch", lambda command, name, directory: launched.update({name: command}))
    monkeypatch.setattr(machines.Lab, "make_host_keys", lambda self, name, port: str(tmp_path / "keys"))
    monkeypatch.setattr(machines.Lab, "make_pc_stick", lambda self, name: {
        "stick": str(tmp_path / (name + ".stick.img")), "stick_sha256": "ab" * 32})
    monkeypatch.setattr(machines.Lab, "running", lambda self, name: None)
    monkeypatch.setattr(machines.Lab, "wait_ssh", lambda self, started, timeout: {})
    return str(tmp_path / "lab"), launched


def devices_and_drives(command):
    return [command[i + 1] for i in range(len(command) - 1) if command[i] in ("-drive", "-device")]


def test_start_gives_each_new_pc_its_own_devices(offline_lab, capsys):
    directory, launched = offline_lab
    assert cli.main(["start", "--lab", directory, "--layout", "msdos", "--layout", "gpt", "--devices",
                     "bus=virtio,stick=usb", "--devices", "bus=scsi,stick=scsi-first"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {name: (pc["layout"], pc["devices"]) for name, pc in printed["pcs"].items()} == {
        "pc1": ("msdos", {"bus": "virtio", "stick": True, "stick_place": "usb"}),
        "pc2": ("gpt", {"bus": "scsi", "stick": True, "stick_place": "scsi-first"})}
    pc1, pc2 = devices_and_drives(launched["pc1"]), devices_and_drives(launched["pc2"])
    assert pc1[-3:] == ["virtio-blk-pci,drive=sys,serial=INPLACE-SYS-0001,bootindex=0", "qemu-xhci,id=xhci",
                        "usb-storage,bus=xhci.0,drive=stick,removable=on,serial=INPLACE-STICK-01"]
    assert pc1[1].endswith("/lab/pc1.qcow2,format=qcow2") and pc1[2].endswith("/pc1.stick.img,format=raw")
    assert pc2[-3:] == ["virtio-scsi-pci,id=scsi0",
                        "scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun=0,drive=stick,removable=on,serial=INPLACE-STICK-01",
                        "scsi-hd,bus=scsi0.0,channel=0,scsi-id=1,lun=0,drive=sys,serial=INPLACE-SYS-0001,bootindex=0"]
    assert pc2[2].endswith("/pc2.stick.img,format=raw")
    with open(os.path.join(directory, machines.INVENTORY), encoding="utf-8") as handle:
        hosts = yaml.safe_load(handle)["all"]["children"]["lab-pcs"]["hosts"]
    assert [hosts[name]["lab_stick_image"].endswith(name + ".stick.img") for name in ("pc1", "pc2")] == [True, True]


def test_start_without_devices_gives_the_plain_virtio_disk_as_before(offline_lab, capsys):
    directory, launched = offline_lab
    assert cli.main(["start", "--lab", directory, "--layout", "msdos"]) == 0
    assert json.loads(capsys.readouterr().out)["pcs"]["pc1"]["devices"] is None
    assert devices_and_drives(launched["pc1"]) == [
        "virtio-net-pci,netdev=net0", "file=%s/pc1.qcow2,if=virtio,format=qcow2,index=0" % directory]


@pytest.mark.parametrize("spec, machine, firmware", [
    ("bus=nvme,stick=usb", "q35,smm=on", "OVMF_CODE_4M.ms.fd"),
    ("bus=sata,stick=sata-first,secure_boot=off", "q35", "OVMF_CODE_4M.fd"),
])
def test_a_uefi_pc_boots_the_firmware_its_devices_name(offline_lab, capsys, monkeypatch, tmp_path, spec, machine,
                                                       firmware):
    from tests.lab import uefi
    directory, launched = offline_lab
    for name in ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", "OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd"):
        (tmp_path / name).write_text(name)
    monkeypatch.setattr(uefi, "uefi_command", lambda command, directory, name, secure_boot: list(command) +
                        uefi.firmware_args(directory, name, secure_boot, str(tmp_path)))
    assert cli.main(["start", "--lab", directory, "--layout", "gpt-uefi", "--devices", spec]) == 0
    capsys.readouterr()
    command = launched["pc1"]
    assert command[command.index("-machine") + 1] == machine
    assert ("driver=cfi.pflash01,property=secure,value=on" in command) == (machine == "q35,smm=on")
    assert "if=pflash,format=raw,unit=0,readonly=on,file=%s/%s" % (tmp_path, firmware) in command


def scenario_start_arguments(scenario):
    """The lab.py start arguments that create.yml's command makes from the scenario's extra vars."""
    with open(os.path.join(MOLECULE, scenario, "molecule.yml"), encoding="utf-8") as handle:
        args = yaml.safe_load(handle)["ansible"]["executor"]["args"]["ansible_playbook"]
    extra = {}
    for arg in args:
        if arg.startswith("--extra-vars="):
            extra.update(json.loads(arg.split("=", 1)[1]))
    with open(os.path.join(MOLECULE, "default", "create.yml"), encoding="utf-8") as handle:
        command = yaml.safe_load(handle)[0]["tasks"][0]["ansible.builtin.command"]["cmd"]
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    environment.filters["quote"] = shlex.quote
    argv = shlex.split(environment.from_string(command).render(
        ansible_playbook_python="python3", lab_tool="lab.py", lab_dir="/lab", **extra))
    assert argv[:5] == ["python3", "lab.py", "start", "--lab", "/lab"] and argv[-1] == "--serve-images"
    assert argv[-3] == "--image-firmware"
    return argv[5:-3] + ([] if argv[-2] == "bios" else argv[-3:-1])


def test_the_default_scenario_puts_pc2_on_scsi_behind_its_stick_and_pc1_on_virtio_with_a_usb_stick():
    args = parsed(*scenario_start_arguments("default"))
    assert cli.new_pcs(2, args.layout, args.devices) == [
        ("msdos", {"bus": "virtio", "stick": True, "stick_place": "usb"}),
        ("gpt", {"bus": "scsi", "stick": True, "stick_place": "scsi-first"})]


def test_the_uefi_scenario_starts_an_nvme_pc_with_boot_and_secure_boot_and_one_with_a_stick_without():
    args = parsed(*scenario_start_arguments("uefi"))
    assert args.image_firmware == "uefi"
    assert cli.new_pcs(2, args.layout, args.devices) == [
        ("gpt-uefi-boot", {"bus": "nvme"}),
        ("gpt-uefi", {"bus": "virtio", "stick": True, "stick_place": "usb", "secure_boot": False})]


@pytest.mark.parametrize("scenario, layout", [("power_cut", "msdos"), ("separate_boot", "msdos-boot"),
                                              ("twice", "msdos")])
def test_the_other_scenarios_start_one_plain_pc_as_before(scenario, layout):
    assert scenario_start_arguments(scenario) == ["--layout", layout]
