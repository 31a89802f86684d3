"""The fix-ups' pure parts: fstab merging, accounts, hosts, GRUB text; and carrying from an old root."""

from __future__ import annotations

import os


from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.image import fixups as _fixups

ROOT_UUID = "aaaaaaaa-0000-0000-0000-000000000001"
DEVICES = {
    "UUID=swap-uuid": ["/dev/sda2"],
    "UUID=home-uuid": ["/dev/sda3"],
    "LABEL=INPLACE-STORE": ["/dev/sda5"],
    "UUID=store-uuid": ["/dev/sda5"],
    "UUID=old-root": ["/dev/sda1"],
    "LABEL=image-efi": [],
    "/dev/sr0": ["/dev/sr0"],
}
EXCLUDED = {"/dev/sda1": "the partition just written", "/dev/sda5": "the store"}


def merge(new, old):
    return _fixups.merge_fstab(new, old, ROOT_UUID, "ext4", lambda spec: DEVICES.get(spec, []), EXCLUDED,
                               {"UUID=store-uuid", "LABEL=INPLACE-STORE"})


def test_fstab_root_by_uuid_old_survivors_kept_store_and_vanished_dropped():
    old = ("UUID=old-root / ext4 errors=remount-ro 0 1\n"
           "UUID=swap-uuid none swap sw 0 0\n"
           "UUID=home-uuid /home ext4 defaults 0 2\n"
           "LABEL=INPLACE-STORE /mnt/store ext4 defaults 0 2\n"
           "UUID=gone /data ext4 defaults 0 2\n"
           "tmpfs /tmp tmpfs defaults 0 0\n")
    new = ("# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"
           "LABEL=image-root / ext4 defaults 0 1\n"
           "LABEL=image-efi /boot/efi vfat umask=0077 0 1\n"
           "proc /proc proc defaults 0 0\n")
    text, report = merge(new, old)
    entries = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert entries == [
        ["UUID=" + ROOT_UUID, "/", "ext4", "errors=remount-ro", "0", "1"],
        ["proc", "/proc", "proc", "defaults", "0", "0"],
        ["UUID=swap-uuid", "none", "swap", "sw", "0", "0"],
        ["UUID=home-uuid", "/home", "ext4", "defaults", "0", "2"],
    ]
    assert report["carried"] == ["UUID=swap-uuid none", "UUID=home-uuid /home"]
    assert "LABEL=INPLACE-STORE /mnt/store from the old system (the store)" in report["dropped"]
    assert "UUID=gone /data from the old system (no such device here)" in report["dropped"]
    assert "LABEL=image-efi /boot/efi (no such device here)" in report["dropped"]
    assert "UNCONFIGURED" not in text


def test_fstab_root_carries_the_new_filesystem_s_type_not_the_old_root_s():
    text, report = merge("", "UUID=old-root / xfs defaults 0 0\nUUID=home-uuid /home ext4 defaults 0 2\n")
    entries = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert entries[0] == ["UUID=" + ROOT_UUID, "/", "ext4", "errors=remount-ro", "0", "1"]
    assert not any("xfs" in entry for entry in entries), entries
    assert report["carried"] == ["UUID=home-uuid /home"]


def test_fstab_of_the_image_wins_over_the_old_one_for_the_same_mount_point():
    text, report = merge("UUID=home-uuid /home ext4 noatime 0 2\n", "UUID=home-uuid /home ext4 defaults 0 2\n")
    assert "noatime" in text and "defaults 0 2" not in text
    assert report["kept"] == ["UUID=home-uuid /home"]


def test_fstab_is_stable_when_merged_again():
    old = "UUID=swap-uuid none swap sw 0 0\nUUID=home-uuid /home ext4 defaults 0 2\n"
    once, unused = merge("", old)
    twice, unused = merge(once, old)
    assert once == twice


def test_btrfs_root_is_not_fscked_at_boot():
    text, unused = _fixups.merge_fstab("", "", ROOT_UUID, "btrfs", lambda spec: [], {}, set())
    assert "UUID=%s\t/\tbtrfs\tdefaults\t0\t0" % ROOT_UUID in text


def test_hosts_line_is_replaced_or_added():
    assert _fixups.hosts_text("127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1 ip6\n", "127.0.1.1\tpc7") == \
        "127.0.0.1\tlocalhost\n127.0.1.1\tpc7\n::1 ip6\n"
    assert _fixups.hosts_text("127.0.0.1\tlocalhost\n::1 ip6\n", "127.0.1.1\tpc7") == \
        "127.0.0.1\tlocalhost\n127.0.1.1\tpc7\n::1 ip6\n"


class NoTools:
    """A runner without visudo: the sudo rules are then written unchecked."""

    @staticmethod
    def has(tool):
        return False


def account(name, uid, gid, groups):
    """A carried account as gather describes it; ``groups`` are (name, gid), the primary's gid is ``gid``."""
    return {"name": name, "uid": uid, "gid": gid, "group": next(g for g, i in groups if i == gid),
            "groups": [g for g, i in groups if i != gid], "gecos": name, "home": "/home/" + name, "shell": "/bin/bash",
            "password_hash": "$hash", "aging": {"lastchg": 1, "min": 0, "max": 99999, "warn": 7, "inactive": None,
                                                "expire": None}, "source": "local", "authorized_keys": "key\n"}


def carry(*accounts):
    groups = {}
    for item in accounts:
        groups[item["group"]] = item["gid"]
    return {"accounts": list(accounts), "groups": [{"name": n, "gid": g} for n, g in groups.items()] + [
        {"name": "sudo", "gid": 27}], "missing_accounts": [], "sudoers": {}}


def new_root(tmp_path, passwd=(), group=()):
    root = str(tmp_path / "new")
    write(root, "etc/passwd", "".join(":".join(row) + "\n" for row in passwd))
    write(root, "etc/group", "".join(":".join(row) + "\n" for row in group))
    write(root, "etc/shadow", "", 0o640)
    write(root, "etc/gshadow", "", 0o640)
    write(root, "bin/bash", "", 0o755)
    return root


def rows(root, name):
    with open(os.path.join(root, "etc", name)) as handle:
        return [line.rstrip("\n").split(":") for line in handle]


def test_accounts_keep_their_ids_where_free(tmp_path):
    root = new_root(tmp_path, [["root", "x", "0", "0", "", "/root", "/bin/sh"]],
                    [["root", "x", "0", ""], ["sudo", "x", "27", ""]])
    report = _fixups.fix_accounts(NoTools(), root, carry(account("ansible", 1001, 1001,
                                                                 [("ansible", 1001), ("sudo", 27)])))
    assert ["ansible", "x", "1001", "1001", "ansible", "/home/ansible", "/bin/bash"] in rows(root, "passwd")
    assert ["ansible", "x", "1001", ""] in rows(root, "group")
    assert ["sudo", "x", "27", "ansible"] in rows(root, "group")
    assert rows(root, "shadow") == [["ansible", "$hash", "1", "0", "99999", "7", "", "", ""]]
    assert ["ansible", "!", "", ""] in rows(root, "gshadow")
    assert report["accounts"][0]["status"] == "created" and report["remapped_users"] == report["remapped_groups"] == {}
    keys = os.stat(os.path.join(root, "home/ansible/.ssh/authorized_keys"))
    assert (keys.st_uid, keys.st_gid, oct(keys.st_mode & 0o777)) == (1001, 1001, "0o600")


def test_taken_ids_move_to_the_next_free_of_their_kind(tmp_path):
    root = new_root(tmp_path, [["debian", "x", "1000", "1000", "", "/home/debian", "/bin/sh"],
                               ["svc", "x", "998", "998", "", "/", "/bin/false"]],
                    [["debian", "x", "1000", ""], ["svc", "x", "998", ""]])
    report = _fixups.fix_accounts(NoTools(), root, carry(account("ansible", 1000, 1000, [("ansible", 1000)]),
                                                         account("backup", 998, 998, [("backup", 998)])))
    ids = {row[0]: (row[2], row[3]) for row in rows(root, "passwd")}
    assert ids["ansible"] == ("1001", "1001") and ids["backup"] == ("999", "999")
    assert report["remapped_users"] == {"ansible": {"old": 1000, "new": 1001}, "backup": {"old": 998, "new": 999}}


def test_an_account_the_image_has_is_kept_and_only_gains_groups(tmp_path):
    root = new_root(tmp_path, [["ansible", "x", "1500", "1500", "", "/srv/ansible", "/bin/sh"]],
                    [["ansible", "x", "1500", ""], ["sudo", "x", "27", ""]])
    report = _fixups.fix_accounts(NoTools(), root, carry(account("ansible", 1001, 1001,
                                                                 [("ansible", 1001), ("sudo", 27)])))
    assert rows(root, "passwd") == [["ansible", "x", "1500", "1500", "", "/srv/ansible", "/bin/sh"]]
    assert ["sudo", "x", "27", "ansible"] in rows(root, "group")
    assert rows(root, "shadow") == []
    assert report["accounts"][0] == {"name": "ansible", "status": "exists in the image", "uid": 1500, "gid": 1500,
                                     "home": "/srv/ansible"}
    assert report["memberships_added"] == {"ansible": ["sudo"]}


def test_merging_twice_adds_nothing_more(tmp_path):
    root = new_root(tmp_path, [], [["sudo", "x", "27", ""]])
    carried = carry(account("ansible", 1001, 1001, [("ansible", 1001), ("sudo", 27)]))
    _fixups.fix_accounts(NoTools(), root, carried)
    snapshot = {name: rows(root, name) for name in ("passwd", "group", "shadow", "gshadow")}
    again = _fixups.fix_accounts(NoTools(), root, carried)
    assert {name: rows(root, name) for name in snapshot} == snapshot
    assert again["accounts_created"] == again["groups_created"] == [] and again["accounts_kept"] == ["ansible"]


def write(root, relative, text, mode=0o644):
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def test_gather_reads_inside_the_old_root_only(tmp_path):
    root = str(tmp_path / "old")
    outside = tmp_path / "outside_keys"
    outside.write_text("must not be read\n")
    write(root, "etc/passwd", "root:x:0:0::/root:/bin/sh\nansible:x:1001:1001::/home/ansible:/bin/bash\n"
                              "eve:x:1002:1002::/home/eve:/bin/bash\n")
    write(root, "etc/group", "ansible:x:1001:\nsudo:x:27:ansible,eve\neve:x:1002:\n")
    write(root, "etc/shadow", "ansible:$hash:1::::::\n", 0o640)
    write(root, "etc/hostname", "pc7\n")
    write(root, "etc/hosts", "127.0.0.1 localhost\n127.0.1.1 pc7.lab pc7\n")
    write(root, "etc/ssh/ssh_host_ed25519_key", "private\n", 0o600)
    write(root, "etc/ssh/sshd_config", "Port 22\n")
    write(root, "home/ansible/.ssh/authorized_keys", "ssh-ed25519 AAAA\n", 0o600)
    write(root, "etc/sudoers.d/ansible", "ansible ALL=(ALL) NOPASSWD: ALL\n")
    write(root, "etc/sudoers.d/eve", "eve ALL=(ALL) ALL\n")
    write(root, "etc/sudoers.d/README", "# ansible is mentioned in a comment only\n")
    os.makedirs(os.path.join(root, "home", "eve", ".ssh"))
    os.symlink(str(outside), os.path.join(root, "home", "eve", ".ssh", "authorized_keys"))
    data = _fixups.gather(root, ["ansible", "eve", "ghost"])
    assert data["hostname"] == "pc7" and data["hosts_line"] == "127.0.1.1 pc7.lab pc7"
    assert data["ssh_host_keys"] == {"ssh_host_ed25519_key": {"mode": 0o600, "text": "private\n"}}
    assert data["missing_accounts"] == ["ghost"]
    ansible, eve = data["accounts"]
    assert ansible["authorized_keys"] == "ssh-ed25519 AAAA\n"
    assert (ansible["group"], ansible["groups"]) == ("ansible", ["sudo"])
    assert [g["name"] for g in data["groups"]] == ["sudo", "ansible", "eve"]
    assert (ansible["password_hash"], ansible["aging"]["lastchg"]) == ("$hash", 1)
    # An absolute symlink is followed inside the old root, never to the host's file.
    assert eve["authorized_keys"] is None
    assert sorted(data["sudoers"]) == ["ansible", "eve"]


# A /boot partition ---------------------------------------------------------------------------------

def _root_with_fstab(tmp_path, text):
    root = str(tmp_path / "root")
    os.makedirs(os.path.join(root, "etc"))
    with open(os.path.join(root, "etc", "fstab"), "w") as handle:
        handle.write(text)
    return root


def test_the_boot_partition_is_what_the_new_fstab_mounts_at_boot(tmp_path):
    resolve = {"UUID=boot-uuid": ["/dev/sda1"], "UUID=root-uuid": ["/dev/sda2"], "UUID=store-uuid": ["/dev/sda5"],
               "LABEL=twice": ["/dev/sdb1", "/dev/sdc1"]}.get
    excluded = {"/dev/sda2": "the partition just written", "/dev/sda5": "the store"}

    def found(fstab):
        return _fixups.boot_partition(_root_with_fstab(tmp_path / str(len(os.listdir(tmp_path))), fstab),
                                      lambda spec: resolve(spec, []), excluded)

    assert found("UUID=root-uuid / ext4 defaults 0 1\n") is None
    assert found("UUID=root-uuid / ext4 defaults 0 1\n# UUID=old /boot ext4 defaults 0 2\n") is None
    assert found("UUID=root-uuid / ext4 defaults 0 1\nUUID=boot-uuid /boot/ ext2 defaults 0 2\n") == {
        "spec": "UUID=boot-uuid", "device": "/dev/sda1"}
    for fstab, why in (("UUID=gone /boot ext4 defaults 0 2\n", "no device"),
                       ("LABEL=twice /boot ext4 defaults 0 2\n", "2 devices"),
                       ("UUID=store-uuid /boot ext4 defaults 0 2\n", "the store")):
        try:
            found(fstab)
        except MigrationError as error:
            assert "mounts /boot from %s, which names %s here" % (fstab.split()[0], why) in str(error)
        else:
            raise AssertionError("accepted " + fstab)


def test_a_boot_partition_gets_the_image_s_boot_and_keeps_only_the_maintenance_files(tmp_path):
    source, target = str(tmp_path / "image-boot"), str(tmp_path / "partition")
    for directory, files in ((source, {"vmlinuz-6.12": "new kernel", "grub/fonts/unicode.pf2": "font"}),
                             (target, {"vmlinuz-6.1": "old kernel", "grub/grubenv": "old env",
                                       "inplace/overlay.img": "keys", "lost+found/.keep": ""})):
        for name, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(directory, name)), exist_ok=True)
            with open(os.path.join(directory, name), "w") as handle:
                handle.write(text)
    for unused_run in range(2):
        report = _fixups.fill_boot(ProcessRunner(), source, target)
        assert report["copied"] == ["grub", "vmlinuz-6.12"]
        listing = sorted(os.path.relpath(os.path.join(base, name), target)
                         for base, unused, files in os.walk(target) for name in files)
        assert listing == ["grub/fonts/unicode.pf2", "inplace/overlay.img", "lost+found/.keep", "vmlinuz-6.12"]
    assert report["removed"] == ["grub", "vmlinuz-6.12"]
    assert os.path.exists(os.path.join(source, "vmlinuz-6.12")), "the image's /boot is the source of every rerun"
