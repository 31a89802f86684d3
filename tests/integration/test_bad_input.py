"""Bad input, case by case, through Ansible: each is refused with one sentence that names the fix, and a disk
or partition the case involves keeps every byte.

Cases other integration tests already hold are not repeated here; docs/reliability.md ("Bad input") lists
them all. A case is a function that builds what it needs and returns a ``Case``; the table is ``CASES``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import subprocess

import pytest

from tests.support import adhoc
from tests.support import images
from tests.support.loopdisk import MiB, mounted, run, write_tree

# Per test run: a lookup by label must not meet a store another test process has attached.
LABEL = "BADIN-%06d" % (os.getpid() % 1000000)
# dest (an old system), swap, store
RIG = "label: dos\nstart=2048, size=64MiB, type=83\nsize=8MiB, type=82\nsize=40MiB, type=83\n"
# No lazy initialisation: a kernel thread writing the inode tables of a mounted filesystem later would
# change a disk that nothing else touched.
MKFS = ("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0")
OFF = {"fstab": False, "hostname": False, "ssh_host_keys": False, "firstboot": False, "bootloader": "none",
       "require_capture": False, "grow": False}

Case = collections.namedtuple("Case", "module args words check unchanged playbook")


def case(module, args, words, check=False, unchanged=None, playbook=False):
    """``words`` must all be in the message; ``unchanged`` is a path whose bytes must not change."""
    return Case(module, args, words, check, unchanged, playbook)


class Context:
    """What a case builds with: loop disks, mounts undone after the case, a scratch directory."""

    def __init__(self, make_disk, tmp_path, stack, sources):
        self.make_disk = make_disk
        self.tmp = str(tmp_path)
        self.stack = stack
        self.sources = sources

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def mount(self, device, readonly=False):
        return self.stack.enter_context(mounted(device, readonly=readonly))

    def disk(self, script="label: dos\nstart=2048, size=60MiB, type=83\nsize=30MiB, type=83\n", size=128 * MiB):
        return self.make_disk(size, script)

    def rig(self):
        """(disk, dest, mounted store) for image_deploy: dest holds an old system's filesystem."""
        disk = self.make_disk(128 * MiB, RIG)
        run(*MKFS, "-L", "oldsystem", disk.part(1))
        run("mkswap", disk.part(2))
        run(*MKFS, "-L", LABEL, disk.part(3))
        return disk, disk.part(1), self.mount(disk.part(3))

    def deploy(self, **args):
        unused_disk, dest, store = self.rig()
        image = self.sources["image"]
        full = dict(OFF, store=store, src=image, checksum="sha256:" + images.sha256(image), dest=dest)
        full.update(args)
        return full, dest

    def captured(self):
        """A copy of the captured store, and a fresh new root, both the case's own."""
        store = self.path("store")
        shutil.copytree(self.sources["store"], store, symlinks=True)
        new = self.path("new")
        _root(new, {"etc/passwd": "root:x:0:0:root:/root:/bin/bash\n", "etc/group": "root:x:0:\n",
                    "etc/shadow": "root:*:19000:0:99999:7:::\n", "etc/gshadow": "root:*::\n"})
        os.makedirs(os.path.join(new, "home"))
        return store, new


def _root(root, files):
    for relative, text in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
    return root


CASES = {}


def bad(name):
    def register(function):
        assert name not in CASES
        CASES[name] = function
        return function
    return register


# partition_space --------------------------------------------------------------------------------------------

@bad("partition_space: disk is an image file, not a block device")
def partition_space_disk_is_an_image_file_not_a(c):
    image = c.path("disk.img")
    with open(image, "wb") as handle:
        handle.truncate(64 * MiB)
    run("sfdisk", "-q", image, input="label: dos\nstart=2048, type=83\n")
    return case("partition_space", {"disk": image, "size": "16MiB"}, ["is not a block device", "name a whole disk"],
                unchanged=image)


@bad("partition_space: disk without a partition table")
def partition_space_disk_without_a_partition_table(c):
    disk = c.disk(script=None)
    return case("partition_space", {"disk": disk.path, "size": "16MiB"},
                ["has no partition table", "name the disk that holds the system"], unchanged=disk.path)


@bad("partition_space: min_free with a bad unit")
def partition_space_min_free_with_a_bad_unit(c):
    disk = c.disk()
    run(*MKFS, disk.part(1))
    return case("partition_space", {"disk": disk.path, "size": "16MiB", "min_free": "20 MiBs"},
                ["min_free='20 MiBs' is not a size", "such as 512MiB"], unchanged=disk.path)


@bad("partition_space: label longer than an ext label")
def partition_space_label_longer_than_an_ext_label(c):
    disk = c.disk()
    run(*MKFS, disk.part(1))
    return case("partition_space", {"disk": disk.path, "size": "16MiB", "label": "INPLACE-STORE-2026-LAB"},
                ["longer than the 16 characters", "choose a shorter one"], unchanged=disk.path)


@bad("partition_space: shrink names a partition holding swap")
def partition_space_shrink_names_a_partition_holding_swap(c):
    disk = c.disk(script="label: dos\nstart=2048, size=100MiB, type=82\ntype=83\n")
    run("mkswap", disk.part(1))
    run(*MKFS, disk.part(2))
    return case("partition_space", {"disk": disk.path, "size": "16MiB", "shrink": "1", "label": LABEL},
                ["holds swap, which cannot be shrunk", "shrink=none", "name another partition"], unchanged=disk.path)


@bad("partition_space: shrink names a partition without a filesystem (unknown filesystem)")
def partition_space_shrink_names_a_partition_without_a_filesystem(c):
    disk = c.disk(script="label: dos\nstart=2048, size=100MiB, type=83\ntype=83\n")
    run(*MKFS, disk.part(2))
    return case("partition_space", {"disk": disk.path, "size": "16MiB", "shrink": "1", "label": LABEL},
                ["holds no filesystem this module knows", "shrink=none", "name another partition"],
                unchanged=disk.path)


@bad("partition_space: removing a store that is mounted (device in use)")
def partition_space_removing_a_store_that_is_mounted_device(c):
    disk = c.disk()
    run(*MKFS, disk.part(1))
    run(*MKFS, "-L", LABEL, disk.part(2))
    c.mount(disk.part(2))
    return case("partition_space", {"disk": disk.path, "state": "absent", "label": LABEL},
                ["is mounted at", "unmount it before removing it"], unchanged=disk.part(1))


# store_mount ------------------------------------------------------------------------------------------------

@bad("store_mount: no device has the store's label (store missing)")
def store_mount_no_device_has_the_store_s_label(c):
    return case("store_mount", {"label": LABEL + "-X", "path": c.path("store")},
                ["no device has LABEL=%s-X" % LABEL, "make or attach the device first"])


@bad("store_mount: device is a path that does not exist")
def store_mount_device_is_a_path_that_does_not(c):
    return case("store_mount", {"device": "/dev/inplace-no-such-store", "path": c.path("store")},
                ["is not a block device", "give the device's path"])


@bad("store_mount: device holds swap (unknown filesystem)")
def store_mount_device_holds_swap_unknown_filesystem(c):
    disk = c.disk()
    run("mkswap", disk.part(1))
    return case("store_mount", {"device": disk.part(1), "path": c.path("store")},
                ["holds swap, not a filesystem", "name the store's device"], unchanged=disk.part(1))


@bad("store_mount: device holds no filesystem at all")
def store_mount_device_holds_no_filesystem_at_all(c):
    disk = c.disk()
    return case("store_mount", {"device": disk.part(2), "path": c.path("store")},
                ["holds no filesystem blkid recognises", "name the store's device"], unchanged=disk.part(2))


@bad("store_mount: device already mounted elsewhere (device in use)")
def store_mount_device_already_mounted_elsewhere_device_in_use(c):
    disk = c.disk()
    run(*MKFS, "-L", LABEL, disk.part(2))
    c.mount(disk.part(2))
    return case("store_mount", {"label": LABEL, "path": c.path("store")},
                ["is already mounted at", "unmount it first"])


@bad("store_mount: path is a file")
def store_mount_path_is_a_file(c):
    disk = c.disk()
    run(*MKFS, disk.part(2))
    _root(c.tmp, {"a-file": "x\n"})
    return case("store_mount", {"device": disk.part(2), "path": c.path("a-file")},
                ["exists and is not a directory", "give a directory"], unchanged=disk.part(2))


# maintenance_boot (check mode: a case that were accepted would write this host's GRUB files) ---------------

@bad("maintenance_boot: boot_uuid is not a UUID")
def maintenance_boot_boot_uuid_is_not_a_uuid(c):
    return case("maintenance_boot", {"target": "system", "boot_uuid": "abc; menuentry x"},
                ["boot_uuid='abc; menuentry x' is not a filesystem UUID", "blkid"], check=True)


@bad("maintenance_boot: the store is not mounted")
def maintenance_boot_the_store_is_not_mounted(c):
    os.makedirs(c.path("store"))
    return case("maintenance_boot", {"target": "store", "store": c.path("store"),
                                     "boot_uuid": "0f3c6b1e-3a1f-4b5e-9a55-2d1f3c1b9e8a"},
                ["mount the store there first"], check=True)


@bad("maintenance_boot: cmdline without the maintenance flag")
def maintenance_boot_cmdline_without_the_maintenance_flag(c):
    return case("maintenance_boot", {"target": "system", "boot_uuid": "0f3c6b1e-3a1f-4b5e-9a55-2d1f3c1b9e8a",
                                     "cmdline": "console=ttyS0"}, ["lacks the flag", "add it"], check=True)


# preflight_facts ------------------------------------------------------------------------------------------------

@bad("preflight_facts: maintenance_bytes with a bad unit")
def preflight_facts_maintenance_bytes_with_a_bad_unit(c):
    return case("preflight_facts", {"maintenance_bytes": "12 parsecs"},
                ["maintenance_bytes='12 parsecs' is not a size", "such as 512MiB"], check=True)


@bad("preflight_facts: store margin with a bad unit")
def preflight_facts_store_margin_with_a_bad_unit(c):
    return case("preflight_facts", {"store": {"margin": "lots"}}, ["margin='lots' is not a size"], check=True)


# profile_capture --------------------------------------------------------------------------------------------

def _old(c):
    return _root(c.path("old"), {"etc/passwd": "root:x:0:0:root:/root:/bin/bash\nanna:x:1000:1000::/home/anna:/bin/bash\n",
                                 "etc/group": "root:x:0:\nanna:x:1000:\n", "home/anna/notes": "kept\n"})


@bad("profile_capture: exclude_users names no account")
def profile_capture_exclude_users_names_no_account(c):
    return case("profile_capture", {"root": _old(c), "store": c.path(), "exclude_users": ["carl"]},
                ["exclude_users names carl", "correct or remove the name"])


@bad("profile_capture: max_file_size with a bad unit")
def profile_capture_max_file_size_with_a_bad_unit(c):
    return case("profile_capture", {"root": _old(c), "store": c.path(), "max_file_size": "2 gigs"},
                ["max_file_size='2 gigs' is not a size"])


@bad("profile_capture: compression out of zstd's range")
def profile_capture_compression_out_of_zstd_s_range(c):
    return case("profile_capture", {"root": _old(c), "store": c.path(), "compression": 25},
                ["compression=25", "use 1 to 19"])


@bad("profile_capture: the store is mounted read-only")
def profile_capture_the_store_is_mounted_read_only(c):
    disk = c.disk()
    run(*MKFS, disk.part(2))
    return case("profile_capture", {"root": _old(c), "store": c.mount(disk.part(2), readonly=True)},
                ["is not writable", "mount it read-write"], unchanged=disk.part(2))


@bad("profile_capture: the store is a file")
def profile_capture_the_store_is_a_file(c):
    old = _old(c)
    return case("profile_capture", {"root": old, "store": os.path.join(old, "etc/passwd")},
                ["is not a directory", "mount the store there first"])


# image_deploy -----------------------------------------------------------------------------------------------

@bad("image_deploy: a truncated download with the image's checksum")
def image_deploy_a_truncated_download_with_the_image_s(c):
    cut = c.path("cut.raw.zst")
    with open(c.sources["image"], "rb") as source, open(cut, "wb") as handle:
        handle.write(source.read(os.path.getsize(c.sources["image"]) // 2))
    args, dest = c.deploy(src=cut)
    return case("image_deploy", args, ["as checksum says", "nothing was written", "fetch the image again"],
                unchanged=dest)


@bad("image_deploy: checksum with too few digits")
def image_deploy_checksum_with_too_few_digits(c):
    args, dest = c.deploy(checksum="sha256:" + images.sha256(c.sources["image"])[:40])
    return case("image_deploy", args, ["64 hexadecimal digits", "copy the whole sha256"], unchanged=dest)


@bad("image_deploy: checksum without its algorithm")
def image_deploy_checksum_without_its_algorithm(c):
    digest = images.sha256(c.sources["image"])
    args, dest = c.deploy(checksum=digest)
    return case("image_deploy", args, ["lacks its algorithm", "write it as sha256:" + digest], unchanged=dest)


@bad("image_deploy: an md5 checksum")
def image_deploy_an_md5_checksum(c):
    args, dest = c.deploy(checksum="md5:" + "0" * 32)
    return case("image_deploy", args, ["uses md5", "only sha256 is accepted"], unchanged=dest)


@bad("image_deploy: a checksum file without the image's line")
def image_deploy_a_checksum_file_without_the_image_s(c):
    _root(c.tmp, {"SHA256SUMS": "%s  debian-12.raw.zst\n%s  debian-14.raw.zst\n" % ("1" * 64, "2" * 64)})
    args, dest = c.deploy(checksum=c.path("SHA256SUMS"))
    return case("image_deploy", args, ["has no line for", "give the checksum file published with the image"],
                unchanged=dest)


@bad("image_deploy: dest is an image file, not a block device")
def image_deploy_dest_is_an_image_file_not_a(c):
    target = c.path("dest.img")
    with open(target, "wb") as handle:
        handle.truncate(64 * MiB)
    args, unused_dest = c.deploy(dest=target)
    return case("image_deploy", args, ["is not a block device", "name the system partition"], unchanged=target)


@bad("image_deploy: format=qcow2 for a raw.zst image")
def image_deploy_format_qcow2_for_a_raw_zst_image(c):
    args, dest = c.deploy(format="qcow2")
    return case("image_deploy", args, ["is not a qcow2 image", "format=auto"], unchanged=dest)


@bad("image_deploy: checkpoint with a bad unit")
def image_deploy_checkpoint_with_a_bad_unit(c):
    args, dest = c.deploy(checkpoint="16 MiBs")
    return case("image_deploy", args, ["checkpoint='16 MiBs' is not a size"], unchanged=dest)


@bad("image_deploy: a URL no server answers")
def image_deploy_a_url_no_server_answers(c):
    args, dest = c.deploy(src="http://127.0.0.1:9/debian.raw.zst")
    return case("image_deploy", args, ["cannot fetch http://127.0.0.1:9/debian.raw.zst", "check the URL"],
                unchanged=dest)


@bad("image_deploy: protect names no device")
def image_deploy_protect_names_no_device(c):
    args, dest = c.deploy(protect=["home-partition"])
    return case("image_deploy", args, ["home-partition names no device", "give a path such as"], unchanged=dest)


# profile_restore --------------------------------------------------------------------------------------------

@bad("profile_restore: users names a user who was not captured")
def profile_restore_users_names_a_user_who_was_not(c):
    store, new = c.captured()
    return case("profile_restore", {"store": store, "root": new, "users": ["carl"]},
                ["carl is not captured on this store (captured: anna, bert)", "name only captured users"])


@bad("profile_restore: accounts=require and a user deleted from the new system")
def profile_restore_accounts_require_and_a_user_deleted_from(c):
    store, new = c.captured()
    return case("profile_restore", {"store": store, "root": new, "accounts": "require"},
                ["accounts=require, and anna, bert have no account", "use accounts=create"])


@bad("profile_restore: a user's archive deleted from the store after the capture")
def profile_restore_a_user_s_archive_deleted_from_the(c):
    store, new = c.captured()
    os.unlink(os.path.join(store, "inplace/profiles/bert.tar.zst"))
    return case("profile_restore", {"store": store, "root": new},
                ["could not restore bert (the others are restored)", "bert.tar.zst is missing from the store",
                 "put back the archive profile_capture wrote"])


@bad("profile_restore: settings that were not captured")
def profile_restore_settings_that_were_not_captured(c):
    store, new = c.captured()
    return case("profile_restore", {"store": store, "root": new, "settings": ["printers"]},
                ["settings printers were not captured", "leave them out of settings"])


@bad("profile_restore: the new root does not exist")
def profile_restore_the_new_root_does_not_exist(c):
    store, unused_new = c.captured()
    return case("profile_restore", {"store": store, "root": c.path("not-mounted")},
                ["does not exist", "mount the new system there first"])


@bad("profile_restore: the store holds no capture")
def profile_restore_the_store_holds_no_capture(c):
    unused_store, new = c.captured()
    os.makedirs(c.path("empty-store"))
    return case("profile_restore", {"store": c.path("empty-store"), "root": new},
                ["holds no profile manifest", "run profile_capture first"])


@bad("profile_restore: the store is not there")
def profile_restore_the_store_is_not_there(c):
    unused_store, new = c.captured()
    return case("profile_restore", {"store": c.path("no-store"), "root": new},
                ["does not exist or is not a directory", "mount the store there first"])


# The playbook's own checks (check mode: nothing past them may change this host) ----------------------------

@bad("playbook: inplace_image_src not set")
def playbook_inplace_image_src_not_set(c):
    return case(None, {"inplace_image_checksum": "sha256:" + "0" * 64},
                ["Set inplace_image_src and inplace_image_checksum", "docs/variables.md"], playbook=True)


@bad("playbook: inplace_image_checksum not set")
def playbook_inplace_image_checksum_not_set(c):
    return case(None, {"inplace_image_src": "http://images.lab/debian-13.raw.zst"},
                ["Set inplace_image_src and inplace_image_checksum", "docs/variables.md"], playbook=True)


def playbook(extra_vars, tree):
    """The migration playbook on localhost in check mode; the result of the task that stopped it (the tree
    callback keeps each host's last result)."""
    env = dict(adhoc.environment(), ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.tree", ANSIBLE_CALLBACK_TREE_DIR=tree)
    variables = dict(extra_vars, inplace_hosts="localhost")
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", "--check",
                           "-e", json.dumps(variables), os.path.join(adhoc.REPO, "playbooks", "inplace_migrate.yml")],
                          capture_output=True, text=True, env=env, check=False)
    assert "TASK [Find where this PC is]" not in proc.stdout, "the playbook went past its checks:\n" + proc.stdout
    with open(os.path.join(tree, "localhost")) as handle:
        return dict(json.load(handle), rc=proc.returncode)


# The runner --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A small raw.zst image; a store holding a real capture of anna and bert."""
    directory = str(tmp_path_factory.mktemp("bad-input-sources"))
    tree = os.path.join(directory, "tree")
    write_tree(tree, files=6, file_size=64 * 1024, seed=21)
    image = images.convert(images.ext4_image(os.path.join(directory, "image.raw"), tree, size=16 * MiB), "raw.zst")
    old = _root(os.path.join(directory, "old"), {
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\nanna:x:1000:1000::/home/anna:/bin/bash\n"
                      "bert:x:1001:1001::/home/bert:/bin/bash\n",
        "etc/group": "root:x:0:\nanna:x:1000:\nbert:x:1001:\n",
        "etc/shadow": "root:*:19000:0:99999:7:::\nanna:$6$a$hash:19000:0:99999:7:::\nbert:$6$b$hash:19000:0:99999:7:::\n",
        "etc/login.defs": "UID_MIN 1000\nUID_MAX 60000\n",
        "home/anna/notes": "anna's\n", "home/bert/notes": "bert's\n"})
    store = os.path.join(directory, "store")
    os.makedirs(store)
    made = adhoc.module("profile_capture", {"root": old, "store": store})
    assert made["rc"] == 0, made.get("msg")
    return {"image": image, "store": store}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_in_one_sentence_that_names_the_fix(name, make_disk, tmp_path, sources):
    with contextlib.ExitStack() as stack:
        c = Context(make_disk, tmp_path, stack, sources)
        bad_case = CASES[name](c)
        before = images.sha256(bad_case.unchanged) if bad_case.unchanged else None
        if bad_case.playbook:
            result = playbook(bad_case.args, c.path("tree"))
        else:
            result = adhoc.module(bad_case.module, bad_case.args, check=bad_case.check)
        adhoc.assert_one_sentence_naming_the_fix(result, bad_case.words)
        assert not result.get("changed") or bad_case.module == "profile_restore", result
        if before is not None:
            assert images.sha256(bad_case.unchanged) == before, "%s changed" % bad_case.unchanged
        if bad_case.module == "profile_restore":
            root = bad_case.args["root"]
            restored = sorted(os.listdir(os.path.join(root, "home"))) if os.path.isdir(os.path.join(root, "home")) \
                else []
            # Only the archive deleted from the store leaves anything restored: anna, and nothing of bert.
            assert restored == (["anna"] if "deleted from the store" in name else []), restored


@pytest.mark.parametrize("fmt", ["raw.zst", "raw.xz"])
def test_a_truncated_image_with_its_own_checksum_is_refused_before_any_write_and_a_complete_one_then_lands(
        make_disk, tmp_path, sources, fmt):
    """A cut file whose checksum was taken after the cut passes the checksum; its framing does not."""
    with contextlib.ExitStack() as stack:
        c = Context(make_disk, tmp_path, stack, sources)
        raw = os.path.join(os.path.dirname(sources["image"]), "image.raw")
        whole = sources["image"] if fmt == "raw.zst" else images.convert(raw, fmt, c.tmp)
        cut = c.path("cut." + fmt)
        with open(whole, "rb") as source, open(cut, "wb") as handle:
            handle.write(source.read(os.path.getsize(whole) * 2 // 3))
        args, dest = c.deploy(src=cut, checksum="sha256:" + images.sha256(cut))
        before = images.sha256(dest)
        result = adhoc.module("image_deploy", args)
        adhoc.assert_one_sentence_naming_the_fix(result, [
            "the image %s ends or breaks inside %s" % (cut, "a zstd frame" if fmt == "raw.zst" else "an xz stream"),
            "of its %d (it is truncated or damaged), so nothing was written; download it again and give the "
            "checksum published with it." % os.path.getsize(cut)])
        assert not result.get("changed"), result
        assert images.sha256(dest) == before, "dest was written"
        complete = adhoc.module("image_deploy", dict(args, src=whole, checksum="sha256:" + images.sha256(whole)))
        assert complete["rc"] == 0 and complete["state"] == "complete", complete.get("msg")
        assert images.sha256(dest, os.path.getsize(raw)) == images.sha256(raw)
