"""What a lab PC must look like after the migration (testinfra, through Molecule's inventory)."""

from __future__ import annotations

import json
import os

EPHEMERAL = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
TREES = os.path.join(REPO, "tests", "support", "trees.py")
PROFILE_USERS = {"alice": 1000, "bob": 1001}
MiB = 1024 * 1024


def name_of(host):
    return host.backend.get_hostname()


def lab():
    with open(os.path.join(EPHEMERAL, "lab.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_debian_13_runs_from_the_disk(host):
    release = host.file("/etc/os-release").content_string
    assert 'VERSION_ID="13"' in release
    assert not host.file("/etc/inplace-maintenance").exists
    assert host.check_output("findmnt --noheadings --output SOURCE /").startswith("/dev/vda")


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
    with host.sudo():
        assert host.run("blkid --label INPLACE-STORE").rc != 0
        table = json.loads(host.check_output("sfdisk --json /dev/vda"))["partitiontable"]
        disk_sectors = int(host.check_output("blockdev --getsz /dev/vda"))
        root = host.check_output("findmnt --noheadings --output SOURCE /")
        block_count = int(host.check_output("dumpe2fs -h %s 2>/dev/null | sed -n 's/^Block count: *//p'" % root))
        block_size = int(host.check_output("dumpe2fs -h %s 2>/dev/null | sed -n 's/^Block size: *//p'" % root))
        boot = host.run("findmnt --noheadings --output SOURCE /boot").stdout.strip()
    entry = [p for p in table["partitions"] if p["node"] == root][0]
    end = (entry["start"] + entry["size"]) * 512
    assert len([p for p in table["partitions"] if p["node"] != boot]) == (1 if table["label"] == "dos" else 2)
    assert disk_sectors * 512 - end < 2 * MiB, "space left after the root partition"
    assert entry["size"] * 512 - block_count * block_size < MiB, "the filesystem does not fill its partition"


def test_filesystem_clean_and_migration_recorded(host):
    with host.sudo():
        root = host.check_output("findmnt --noheadings --output SOURCE /")
        assert host.run("e2fsck -f -n %s" % root).rc == 0
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
    if layout == "msdos-boot":
        fstab = host.check_output("findmnt --fstab --evaluate --noheadings --output SOURCE /boot")
        assert boot == "/dev/vda1" and fstab == "/dev/vda1"
    else:
        assert boot == ""
    assert "inplace-maintenance" not in env and "next_entry=" not in env
    assert "inplace-maintenance" not in menu
