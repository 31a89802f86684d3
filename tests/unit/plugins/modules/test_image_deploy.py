"""image_deploy's main(): the refusals that come before any device is looked at, and how main() hands
options to the deploy and its result (or failure) back to Ansible.

A deploy that gets further needs a partition, which only root can make: tests/integration runs those.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.modules import image_deploy

from .conftest import tree_state

DIGEST = hashlib.sha256(b"image").hexdigest()


@pytest.fixture
def rig(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    src = store / "debian13.raw"
    src.write_bytes(b"image")
    dest = tmp_path / "sda1"
    dest.write_bytes(b"\0" * 4096)
    return {"store": str(store), "src": str(src), "checksum": "sha256:" + DIGEST, "dest": str(dest),
            "bootloader": "none", "firstboot": False}


def refused(run_module, rig, tmp_path, args, check_mode=False):
    before = tree_state(str(tmp_path))
    result = run_module(image_deploy, dict(rig, **args), check_mode=check_mode)
    assert result["failed"] and result.get("changed", False) is False
    assert tree_state(str(tmp_path)) == before
    return result["msg"]


@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check mode"])
@pytest.mark.parametrize("args, message", [
    ({"maintenance_cmdline": "console=ttyS0 quiet"},
     "maintenance_cmdline='console=ttyS0 quiet' lacks the flag inplace.maintenance, by which migration_state knows "
     "the maintenance environment; add it."),
    ({"checkpoint": "often"},
     "checkpoint='often' is not a size: write bytes or a number with a unit such as 512MiB or 12GiB."),
    ({"checksum": "sha256:1234"}, "checksum=sha256:1234 is not sha256: followed by 64 hexadecimal digits; copy the "
                                  "whole sha256 of the image."),
    ({"checksum": "md5:" + "0" * 32}, "checksum=md5:%s uses md5; only sha256 is accepted." % ("0" * 32)),
    ({"checksum": "{tmp}/SHA256SUMS"}, "the checksum file {tmp}/SHA256SUMS does not exist or is not a file; correct the path or put the file there."),
    ({"src": "{tmp}/store/missing.raw.zst"}, "the image {tmp}/store/missing.raw.zst does not exist or is not a file; correct "
                                             "the path or put the file there."),
    ({"store": "{tmp}/mnt"}, "the store {tmp}/mnt does not exist or is not a directory; mount the store there first."),
    ({"dest": "{tmp}/sda1"}, "dest={tmp}/sda1 is not a block device; name the system partition, such as /dev/sda2 or LABEL=<its label>."),
    ({"format": "iso"}, "value of format must be one of: auto, raw, raw.zst, raw.gz, raw.xz, qcow2, tar, tar.zst, "
                        "tar.gz, tar.xz, got: iso"),
], ids=["cmdline", "checkpoint", "checksum", "md5", "checksum file", "src", "store", "dest", "format"])
def test_refusals_name_the_option_and_write_nothing(run_module, rig, tmp_path, args, message, check_mode):
    args = {k: v.format(tmp=tmp_path) for k, v in args.items()}
    assert refused(run_module, rig, tmp_path, args, check_mode) == message.format(tmp=tmp_path)


def test_a_checksum_file_without_a_line_for_the_image_is_refused(run_module, rig, tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("%s  debian12.raw\n%s  debian14.raw\n" % ("1" * 64, "2" * 64))
    message = refused(run_module, rig, tmp_path, {"checksum": str(sums)})
    assert message == "the checksum file has no line for debian13.raw; it must have exactly one (%s); give the " \
        "checksum file published with the image, or sha256:<hex>." % sums


class StandIn:
    """Takes the place of the deploy, whose real run needs a partition; records what main() gave it."""

    calls = []
    outcome = None

    def __init__(self, runner, params, check_mode):
        self.calls.append((params, check_mode))

    def run(self):
        if isinstance(self.outcome, MigrationError):
            raise MigrationError(str(self.outcome), **self.outcome.partial)
        return dict(self.outcome)


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(StandIn, "calls", [])
    monkeypatch.setattr(image_deploy, "Deploy", StandIn)
    return StandIn


@pytest.mark.parametrize("check_mode", [False, True])
def test_options_reach_the_deploy_parsed_and_its_result_is_returned(run_module, rig, stand_in, check_mode):
    stand_in.outcome = {"changed": True, "state": "planned" if check_mode else "complete", "timings": {"write": 1.5}}
    result = run_module(image_deploy, dict(rig, checkpoint="64MiB", protect=["/dev/sdb"]), check_mode=check_mode)
    assert not result.get("failed")
    assert result["changed"] is True and result["state"] == stand_in.outcome["state"]
    assert result["timings"] == {"write": 1.5}
    [(params, mode)] = stand_in.calls
    assert mode is check_mode
    assert params["checkpoint"] == 64 * 1024 * 1024 and params["protect"] == ["/dev/sdb"]
    assert params["format"] == "auto" and params["fstype"] == "ext4" and params["machine_id"] == "keep"
    assert "inplace.maintenance" in params["maintenance_cmdline"].split()


def test_a_failure_after_writing_reports_changed_and_what_was_done(run_module, rig, stand_in, tmp_path):
    stand_in.outcome = MigrationError("the sha256 of the streamed image is wrong; the partition holds no valid "
                                      "system.", changed=True, state="invalid", written_bytes=1048576)
    result = run_module(image_deploy, rig)
    assert result["failed"] and result["changed"] is True
    assert result["msg"] == "the sha256 of the streamed image is wrong; the partition holds no valid system."
    assert result["state"] == "invalid" and result["written_bytes"] == 1048576


def test_a_refusal_from_the_deploy_is_not_a_change(run_module, rig, stand_in):
    stand_in.outcome = MigrationError("dest=/dev/sda1 (/dev/sda1) is mounted at /; unmount it first.")
    result = run_module(image_deploy, rig)
    assert result["failed"] and result["changed"] is False
    assert result["msg"] == "dest=/dev/sda1 (/dev/sda1) is mounted at /; unmount it first."
    assert stand_in.calls and os.path.isfile(rig["src"])
