"""Where a user's home really is in an old root: through symlinks and bind mounts, or on a partition the
reimage keeps; a home that cannot be found is never silently left out."""

from __future__ import annotations

import os

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.profiles.homes import Homes

FSTAB = ("UUID=root-fs / ext4 errors=remount-ro 0 1\n"
         "# a comment\n"
         "UUID=swap-1 none swap sw 0 0\n"
         "tmpfs /tmp tmpfs defaults 0 0\n"
         "UUID=data-fs /srv ext4 defaults 0 2\n"
         "fileserver:/export/homes /net/homes nfs4 defaults 0 0\n"
         "/var/homes/dave /home/dave none bind 0 0\n"
         "UUID=root-fs /home/subvol btrfs subvol=@home 0 0\n")


def user(name, home):
    return {"name": name, "home": home}


@pytest.fixture
def root(tmp_path):
    base = tmp_path / "old"
    for directory in ("etc", "data/homes/alice", "var/homes/dave", "home/dave", "home/carol", "home/subvol"):
        (base / directory).mkdir(parents=True)
    (base / "etc" / "fstab").write_text(FSTAB)
    os.symlink("/data/homes/alice", base / "home" / "alice")
    os.symlink("/srv/homes/erin", base / "home" / "erin")
    # The host's own mount table: only the old root is mounted.
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("21 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
                         "90 21 7:1 / %s ro - ext4 /dev/loop1p1 ro\n" % base)
    return str(base), str(mountinfo)


def test_a_home_behind_an_absolute_symlink_is_read_where_it_is_inside_the_root(root):
    base, mountinfo = root
    home = Homes(base, mountinfo).locate(user("alice", "/home/alice"), named=False)
    assert (home.state, home.path, home.seen_as) == (
        "archive", os.path.join(base, "data/homes/alice"), "/data/homes/alice")


def test_a_home_behind_a_bind_mount_is_read_from_its_source(root):
    base, mountinfo = root
    home = Homes(base, mountinfo).locate(user("dave", "/home/dave"), named=True)
    assert (home.state, home.path, home.seen_as) == (
        "archive", os.path.join(base, "var/homes/dave"), "/var/homes/dave")


def test_homes_on_partitions_and_network_filesystems_the_reimage_keeps(root):
    base, mountinfo = root
    homes = Homes(base, mountinfo)
    erin = homes.locate(user("erin", "/home/erin"), named=True)
    assert erin.state == "kept" and "/srv (UUID=data-fs), a partition the reimage keeps" in erin.reason
    assert erin.seen_as == "/srv/homes/erin"
    net = homes.locate(user("nina", "/net/homes/nina"), named=False)
    assert net.state == "kept" and "network filesystem" in net.reason


def test_a_home_on_the_root_s_own_device_that_is_not_mounted_is_an_error(root):
    base, mountinfo = root
    with pytest.raises(MigrationError, match=r"/home/subvol/sam .* root's own device UUID=root-fs .* mount it"):
        Homes(base, mountinfo).locate(user("sam", "/home/subvol/sam"), named=False)
    os.makedirs(os.path.join(base, "home/subvol/sam"))
    assert Homes(base, mountinfo).locate(user("sam", "/home/subvol/sam"), named=False).state == "archive"


def test_a_missing_home_is_none_for_auto_and_an_error_when_named(root):
    base, mountinfo = root
    homes = Homes(base, mountinfo)
    none = homes.locate(user("frank", "/home/frank"), named=False)
    assert (none.state, none.reason) == ("none", "its home /home/frank does not exist")
    with pytest.raises(MigrationError, match=r"frank is named in users, but its home /home/frank does not exist "
                                             r"in .*; create it, .* or leave frank out of users"):
        homes.locate(user("frank", "/home/frank"), named=True)
    # A home under a tmpfs mount point holds nothing a reimage could keep: looked for on the root.
    assert homes.locate(user("tim", "/tmp/tim"), named=False).state == "none"


def test_a_home_separately_mounted_here_is_kept_unless_it_is_the_root_s_own_device(root, tmp_path):
    base, mountinfo = root
    with open(mountinfo, "a") as handle:
        handle.write("91 90 8:17 / %s/home/carol rw - ext4 /dev/sdb1 rw\n" % base)
        handle.write("92 90 0:51 /@home %s/home/subvol rw - btrfs /dev/loop1p1 rw\n" % base)
        handle.write("93 90 0:52 / %s/var/homes rw - tmpfs tmpfs rw\n" % base)
    homes = Homes(base, mountinfo)
    carol = homes.locate(user("carol", "/home/carol"), named=True)
    assert carol.state == "kept" and "separately mounted filesystem (/dev/sdb1)" in carol.reason
    assert homes.locate(user("carol", "/home/carol"), named=True, keep_preserved=False).state == "archive"
    os.makedirs(os.path.join(base, "home/subvol/sam"))
    assert homes.locate(user("sam", "/home/subvol/sam"), named=True).state == "archive"
    assert homes.locate(user("dave", "/home/dave"), named=True).state == "archive"


def test_the_root_s_own_device_is_known_by_any_spelling_of_it(root):
    base, mountinfo = root
    with open(os.path.join(base, "etc/fstab"), "a") as handle:
        handle.write("/dev/sda2 /home/other btrfs subvol=@other 0 0\n")
    devices = {"UUID=root-fs": ["/dev/sda2"], "/dev/sda2": ["/dev/sda2"], "UUID=data-fs": ["/dev/sdb1"]}
    homes = Homes(base, mountinfo, resolve=lambda spec: devices.get(spec, []))
    with pytest.raises(MigrationError, match=r"lies on /home/other, .* root's own device /dev/sda2"):
        homes.locate(user("olga", "/home/other/olga"), named=False)
    assert homes.locate(user("erin", "/home/erin"), named=True).state == "kept"
    # Without a way to resolve specs, only the same spelling is the same device.
    assert Homes(base, mountinfo).locate(user("olga", "/home/other/olga"), named=False).state == "kept"
