"""What a lab PC must look like after the migration (testinfra, through Molecule's inventory)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time

import sys

import pytest
import yaml

EPHEMERAL = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
sys.path.insert(0, REPO)

from tests.lab.images import BOOT_PARTITIONS, ESP_PARTITIONS, LVM_LAYOUTS  # noqa: E402
TREES = os.path.join(REPO, "tests", "support", "trees.py")
PROFILE_USERS = {"alice": 1000, "bob": 1001}
MiB = 1024 * 1024
# The kernel's names for a disk on each bus the lab offers (tests/lab/machines.py SYSTEM_BUSES).
BUS_NAMES = {"virtio": "/dev/vd", "scsi": "/dev/sd", "sata": "/dev/sd", "nvme": "/dev/nvme"}
STICK_LABEL = "LAB-STICK"


def name_of(host):
    return host.backend.get_hostname()


def lab():
    with open(os.path.join(EPHEMERAL, "lab.json"), encoding="utf-8") as handle:
        return json.load(handle)


def lab_host(name):
    """The PC's variables in the lab's inventory (lab_stick_image, lab_stick_sha256 for a PC with a stick)."""
    with open(os.path.join(EPHEMERAL, "lab", "inventory.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["all"]["children"]["lab-pcs"]["hosts"][name]


def devices_of(host):
    return lab()["pcs"][name_of(host)].get("devices") or {}


def disk_of(host, device):
    """The whole disk ``device`` is on (a logical volume's: its physical volume's), by the name the kernel gave it
    in this boot."""
    ancestors = host.check_output("lsblk --inverse --list --noheadings --output PATH,TYPE %s" % device)
    return [line.split()[0] for line in ancestors.splitlines() if line.split()[1] == "disk"][0]


def volume_group(host):
    """The lab's volume group of an LVM PC (tests/lab/images.py LVM_LAYOUTS), or None."""
    return LVM_LAYOUTS.get(lab()["pcs"][name_of(host)]["layout"], (None, None))[0]


def root_disk(host):
    return disk_of(host, host.check_output("findmnt --noheadings --output SOURCE /"))


def partition(disk, number):
    return "%s%s%d" % (disk, "p" if disk[-1].isdigit() else "", number)


def test_debian_13_runs_from_the_disk(host):
    release = host.file("/etc/os-release").content_string
    assert 'VERSION_ID="13"' in release
    assert not host.file("/etc/inplace-maintenance").exists
    root = host.check_output("findmnt --noheadings --output SOURCE /")
    assert host.check_output("lsblk --nodeps --noheadings --output TYPE %s" % root) == "part"
    assert root.startswith(BUS_NAMES[devices_of(host).get("bus", "virtio")])


def test_same_hostname_and_ssh_host_keys(host):
    name = name_of(host)
    assert host.check_output("hostname") == name
    keys = os.path.join(EPHEMERAL, "lab", name + ".hostkeys")
    for public in sorted(f for f in os.listdir(keys) if f.endswith(".pub")):
        with open(os.path.join(keys, public), encoding="utf-8") as handle:
            expected = handle.read().split()[:2]
        assert host.file("/etc/ssh/" + public).content_string.split()[:2] == expected


def test_accounts_kept_their_ids(host):
    for name, uid in PROFILE_USERS.items():
        user = host.user(name)
        assert user.exists and user.uid == uid and user.gid == uid
        assert "project" in user.groups
    with host.sudo():
        shadow = host.check_output("getent shadow alice bob")
    assert all(line.split(":")[1].startswith("$") for line in shadow.splitlines()), "password hashes kept"


def test_every_profile_file_is_identical(host):
    with host.sudo():
        host.check_output("true")
    host.ansible("copy", "src=%s dest=/root/inplace-trees.py mode=0600" % TREES, become=True, check=False)
    with host.sudo():
        after = json.loads(host.check_output(
            "python3 /root/inplace-trees.py /home .cache .local/share/Trash .thumbnails"))
        host.run("rm -f /root/inplace-trees.py")
    with open(os.path.join(EPHEMERAL, "before-%s.json" % name_of(host)), encoding="utf-8") as handle:
        before = json.load(handle)
    for user in PROFILE_USERS:
        assert set(after[user]) == set(before[user]), "files missing or added in %s's home" % user
        differences = ["%s %s: %r -> %r" % (path, key, before[user][path].get(key), facts.get(key))
                       for path, facts in sorted(after[user].items())
                       for key in sorted(set(facts) | set(before[user][path]))
                       if facts.get(key) != before[user][path].get(key)]
        assert differences == [], "\n".join(differences[:40])
    assert len(before["alice"]) > 30, "the lab's profiles are richer than this"


def test_crontab_came_along(host):
    with host.sudo():
        assert "backup.sh" in host.check_output("crontab -l -u alice")


def test_store_gone_and_root_spans_the_disk_again(host):
    if volume_group(host):
        pytest.skip("an LVM PC: test_the_store_volume_is_gone_and_the_root_volume_has_its_size_back")
    with host.sudo():
        disk = root_disk(host)
        # On the system disk: the lab's stick carries the label too, and keeps it.
        labelled = host.run("blkid --match-token LABEL=INPLACE-STORE --output device").stdout.split()
        assert [device for device in labelled if disk_of(host, device) == disk] == []
        table = json.loads(host.check_output("sfdisk --json %s" % disk))["partitiontable"]
        disk_sectors = int(host.check_output("blockdev --getsz %s" % disk))
        root = host.check_output("findmnt --noheadings --output SOURCE /")
        block_count = int(host.check_output("dumpe2fs -h %s 2>/dev/null | sed -n 's/^Block count: *//p'" % root))
        block_size = int(host.check_output("dumpe2fs -h %s 2>/dev/null | sed -n 's/^Block size: *//p'" % root))
        boot = host.run("findmnt --noheadings --output SOURCE /boot").stdout.strip()
    entry = [p for p in table["partitions"] if p["node"] == root][0]
    end = (entry["start"] + entry["size"]) * 512
    assert len([p for p in table["partitions"] if p["node"] != boot]) == (1 if table["label"] == "dos" else 2)
    assert disk_sectors * 512 - end < 2 * MiB, "space left after the root partition"
    assert entry["size"] * 512 - block_count * block_size < MiB, "the filesystem does not fill its partition"


def test_the_store_volume_is_gone_and_the_root_volume_has_its_size_back(host):
    """An LVM PC: the store's logical volume is gone, the root's has the extents it had before (the lab's fills its
    volume group, so none are free), its filesystem fills it, and the partitions are as the lab made them."""
    vg = volume_group(host)
    if not vg:
        pytest.skip("not an LVM lab PC")
    with host.sudo():
        report = json.loads(host.check_output("lvs --reportformat json --units b --nosuffix -o lv_name,lv_size %s" % vg))
        free = int(host.check_output("vgs --noheadings --units b --nosuffix -o vg_free %s" % vg))
        root = host.check_output("findmnt --noheadings --output SOURCE /")
        block_count = int(host.check_output("dumpe2fs -h %s 2>/dev/null | sed -n 's/^Block count: *//p'" % root))
        block_size = int(host.check_output("dumpe2fs -h %s 2>/dev/null | sed -n 's/^Block size: *//p'" % root))
        table = json.loads(host.check_output("sfdisk --json %s" % root_disk(host)))["partitiontable"]
    volumes = {row["lv_name"]: int(row["lv_size"]) for row in report["report"][0]["lv"]}
    assert list(volumes) == [LVM_LAYOUTS[lab()["pcs"][name_of(host)]["layout"]][1]], volumes
    assert free == 0, "the root did not take back the extents the store had"
    assert list(volumes.values())[0] - block_count * block_size < MiB, "the filesystem does not fill its volume"
    assert len(table["partitions"]) == 3, "the partitions of an LVM PC are not changed"


def test_filesystem_clean_and_migration_recorded(host):
    with host.sudo():
        root = host.check_output("findmnt --noheadings --output SOURCE /")
        # The root is mounted and in use: what e2fsck reads on the disk can lag behind the kernel's metadata (and
        # freezing the root to stop that hangs e2fsck itself), so after a sync a few checks are made, seconds apart.
        for unused_attempt in range(5):
            checked = host.run("sync; e2fsck -f -n %s" % root)
            if checked.rc == 0:
                break
            time.sleep(5)
        assert checked.rc == 0, checked.stdout + checked.stderr
        record = json.loads(host.check_output("cat /etc/inplace-migration/complete.json"))
    assert record["store"] == "delete"
    report = os.path.join(EPHEMERAL, "reports", name_of(host) + ".json")
    with open(report, encoding="utf-8") as handle:
        assert json.load(handle)["completed"] is True


def test_grub_boots_the_new_system_from_where_it_reads_its_files(host):
    """GRUB's menu and environment are in the filesystem at /boot (the /boot partition on a PC that had one),
    the new system is the default there, and the maintenance files are gone."""
    layout = lab()["pcs"][name_of(host)]["layout"]
    with host.sudo():
        boot = host.run("findmnt --noheadings --output SOURCE /boot").stdout.strip()
        env = host.check_output("grub-editenv /boot/grub/grubenv list")
        menu = host.check_output("cat /boot/grub/grub.cfg")
        assert not host.file("/boot/inplace").exists
    if layout in BOOT_PARTITIONS:
        fstab = host.check_output("findmnt --fstab --evaluate --noheadings --output SOURCE /boot")
        expected = partition(root_disk(host), BOOT_PARTITIONS[layout])
        assert boot == expected and fstab == expected
    else:
        assert boot == ""
    assert "inplace-maintenance" not in env and "next_entry=" not in env
    assert "inplace-maintenance" not in menu


def test_a_uefi_pc_boots_the_new_system_through_its_esp_with_secure_boot_as_before(host):
    """On a UEFI PC: the ESP's stub points at the new root's /boot/grub, the old stub kept during the migration is
    gone, the new system's signed loaders are in \\EFI\\debian and the removable-media path, the firmware booted
    the debian entry first in BootOrder, and Secure Boot is as it was (on unless the PC's devices say off)."""
    layout = lab()["pcs"][name_of(host)]["layout"]
    if layout not in ESP_PARTITIONS:
        pytest.skip("not a UEFI lab PC")
    with host.sudo():
        # GRUB's files are in the filesystem holding /boot: /boot/grub on the root, /grub on a /boot of its own.
        boot_uuid = host.check_output("findmnt --noheadings --output UUID --target /boot")
        stub = host.check_output("cat /boot/efi/EFI/debian/grub.cfg")
        listing = host.check_output("ls /boot/efi/EFI/debian /boot/efi/EFI/BOOT")
        assert "search --no-floppy --fs-uuid --set=root %s" % boot_uuid in stub
        assert "set prefix=($root)'%s'" % ("/grub" if layout in BOOT_PARTITIONS else "/boot/grub") in stub
        assert "inplace" not in listing
        for name in ("shimx64.efi", "grubx64.efi"):
            assert host.check_output("cmp /usr/lib/%s /boot/efi/EFI/debian/%s && echo same" % (
                {"shimx64.efi": "shim/shimx64.efi.signed",
                 "grubx64.efi": "grub/x86_64-efi-signed/grubx64.efi.signed"}[name], name)) == "same"
        assert host.check_output("cmp /usr/lib/shim/shimx64.efi.signed /boot/efi/EFI/BOOT/BOOTX64.EFI && echo same") \
            == "same"
        entries = host.check_output("efibootmgr -v").splitlines()
        secure = host.check_output("od -An -t u1 /sys/firmware/efi/efivars/"
                                   "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c").split()[-1]
    order = [line.split()[1].split(",") for line in entries if line.startswith("BootOrder:")][0]
    current = [line.split()[1] for line in entries if line.startswith("BootCurrent:")]
    first = [line for line in entries if line.startswith("Boot%s" % order[0])][0]
    assert current == [order[0]] and re.search(r"debian\s.*File\(\\EFI\\debian\\shimx64\.efi\)", first), entries
    assert secure == ("0" if devices_of(host).get("secure_boot") is False else "1")


def stick_of(host):
    """The PC's stick image on the controller and the sha256 the lab made it with; skip on a PC without one."""
    pc = lab_host(name_of(host))
    if "lab_stick_image" not in pc:
        pytest.skip("this lab PC has no stick")
    return pc["lab_stick_image"], pc["lab_stick_sha256"]


def test_the_stick_is_byte_for_byte_as_the_lab_made_it(host):
    image, made = stick_of(host)
    sha = hashlib.sha256()
    with open(image, "rb") as handle:
        for block in iter(lambda: handle.read(4 * MiB), b""):
            sha.update(block)
    assert sha.hexdigest() == made, "a phase wrote to the stick %s" % image


def test_a_stick_ahead_of_the_system_disk_shares_its_host_and_the_kernel_s_names(host):
    """What the scenario is for: the stick sits ahead of the system disk on the system disk's own SCSI host
    (AHCI controller), so the two share the sdX names, in an order nothing promises: the stick is mostly sda
    and the system disk sdb, but the kernel probes sd devices in parallel, and in one CI run the last boot gave
    the system disk sda. Which disk is which is read by serial number, as the collection reads identity."""
    unused_image, unused_made = stick_of(host)
    if devices_of(host).get("stick_place") not in ("scsi-first", "sata-first"):
        pytest.skip("this PC's stick is not placed ahead of its system disk")
    with host.sudo():
        stick = disk_of(host, host.check_output("blkid --label %s" % STICK_LABEL))
        system = root_disk(host)
        serials = {disk: host.check_output("lsblk --nodeps --noheadings --output SERIAL %s" % disk)
                   for disk in (stick, system)}
    assert sorted([stick, system]) == ["/dev/sda", "/dev/sdb"]
    # tests/lab/machines.py: STICK_SERIAL, SYSTEM_SERIAL.
    assert "INPLACE-STICK-01" in serials[stick] and "INPLACE-SYS-0001" in serials[system], serials


def reported_strings(value, key=""):
    """Every string in a report, keys too, but those under a key naming what a phase left alone (``ignored*``)."""
    if key.startswith("ignored"):
        return
    if isinstance(value, dict):
        for inner, item in value.items():
            yield inner
            yield from reported_strings(item, inner)
    elif isinstance(value, list):
        for item in value:
            yield from reported_strings(item, key)
    elif isinstance(value, str):
        yield value


def test_the_report_names_the_system_disk_only(host):
    """Every device in the PC's report is the system disk or one of its partitions, and nothing of the stick's
    (its filesystems' UUIDs, its label) is there, but as something left alone. The report gathers names from
    several boots: where the stick shares the system disk's host, the two can swap their sdX names between
    boots (see above), so there either name may be the system disk's, and the stick's identity decides."""
    with open(os.path.join(EPHEMERAL, "reports", name_of(host) + ".json"), encoding="utf-8") as handle:
        strings = list(reported_strings(json.load(handle)))
    disk = root_disk(host)
    disks = [disk]
    if devices_of(host).get("stick_place") in ("scsi-first", "sata-first"):
        with host.sudo():
            disks.append(disk_of(host, host.check_output("blkid --label %s" % STICK_LABEL)))
    named = {path.rstrip(".") for text in strings for path in re.findall(r"/dev/[^\s,;:'\"()]+", text)}
    assert set(disks) & named, "the report names no system disk"
    # An LVM PC's volume group is on the system disk: its volumes by their names, and device mapper's own.
    vg = volume_group(host)
    lvm = re.compile(r"/dev/(mapper/%s-.+|%s/.+|dm-[0-9]+)" % (re.escape(vg), re.escape(vg))) if vg else None
    assert sorted(path for path in named
                  if not any(re.fullmatch(re.escape(name) + r"(p?[0-9]+)?", path) for name in disks)
                  and not (lvm and lvm.fullmatch(path))) == []
    pc = lab_host(name_of(host))
    if "lab_stick_image" in pc:
        marks = stick_marks(pc["lab_stick_image"])
        assert len(marks) == 3
        assert [mark for mark in marks if any(mark.lower() in text.lower() for text in strings)] == []


def stick_marks(image):
    """The stick's filesystem UUIDs and its files' label, read from its image on the controller."""
    table = json.loads(subprocess.run(["sfdisk", "--json", image], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    uuids = [subprocess.run(["blkid", "--probe", "--offset", str(part["start"] * 512), "--match-tag", "UUID",
                             "--output", "value", image], capture_output=True, text=True, check=True).stdout.strip()
             for part in table["partitions"]]
    return [uuid for uuid in uuids if uuid] + [STICK_LABEL]
