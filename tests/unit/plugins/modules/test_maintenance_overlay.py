"""maintenance_overlay's main(), building a real overlay from a made-up system root in tmp_path.

The module reads the running system (its host keys, passwd, shadow); here the same code
reads a root made for the test, so nothing needs root and this machine's keys stay unread.
"""

from __future__ import annotations

import functools
import json
import stat

import pytest

from ansible_collections.inplace.migration.plugins.modules import maintenance_overlay
from ansible_collections.inplace.migration.plugins.module_utils.boot import overlay

HOST_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey root@pc-042\n"
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdminKey admin@controller"
RECORD = {"disk": "/dev/sda", "root_partuuid": "0b4e1c2a-01"}


def members(data):
    """{name: (mode, bytes)} of a cpio newc archive, read independently of the writer."""
    found, offset = {}, 0
    while True:
        header = data[offset:offset + 110]
        assert header[:6] == b"070701", "no newc header at %d" % offset
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name = data[offset + 110:offset + 110 + name_size - 1].decode()
        start = (offset + 110 + name_size + 3) // 4 * 4
        offset = (start + size + 3) // 4 * 4
        if name == "TRAILER!!!":
            assert offset == len(data)
            return found
        found[name] = (mode, data[start:start + size])


@pytest.fixture
def system(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("pc-042\n")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000:Admin:/home/admin:/bin/bash\n"
                                         "nokeys:x:1001:1001::/home/nokeys:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nadmin:x:1000:\nnokeys:x:1001:\n")
    (root / "etc" / "shadow").write_text("admin:$6$salt$hash:19000:0:99999:7:::\n")
    (root / "etc" / "ssh" / "ssh_host_ed25519_key").write_text(HOST_KEY)
    (root / "etc" / "ssh" / "ssh_host_ed25519_key.pub").write_text(HOST_PUB)
    (root / "home" / "admin" / ".ssh").mkdir(parents=True)
    (root / "home" / "admin" / ".ssh" / "authorized_keys").write_text("# controller\n%s\n" % ADMIN_KEY)
    monkeypatch.setattr(overlay, "overlay_bytes", functools.partial(overlay.overlay_bytes, root=str(root)))
    return root


def test_an_admin_the_system_lacks_is_named(run_module, system, tmp_path):
    dest = tmp_path / "boot" / "overlay.img"
    result = run_module(maintenance_overlay, {"dest": str(dest), "admin": "bob"})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == "the admin account bob is not in %s/etc/passwd." % system
    assert not dest.parent.exists()


def test_an_admin_ansible_could_not_log_in_as_is_refused(run_module, system, tmp_path):
    dest = tmp_path / "boot" / "overlay.img"
    result = run_module(maintenance_overlay, {"dest": str(dest), "admin": "nokeys"})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == ("nokeys has no %s/home/nokeys/.ssh/authorized_keys, so Ansible could not log in to the "
                             "maintenance environment." % system)
    assert not dest.parent.exists()


def test_a_system_without_host_keys_is_refused(run_module, system, tmp_path):
    for key in (system / "etc" / "ssh").iterdir():
        key.unlink()
    dest = tmp_path / "overlay.img"
    result = run_module(maintenance_overlay, {"dest": str(dest), "admin": "admin"})
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == ("this system has no SSH host keys in /etc/ssh to carry into the maintenance "
                             "environment.")
    assert not dest.exists()


def test_dest_and_admin_are_required(run_module, system):
    result = run_module(maintenance_overlay, {})
    assert result["failed"] and result["msg"] == "missing required arguments: admin, dest"


def test_check_mode_sizes_the_overlay_and_writes_nothing(run_module, system, tmp_path):
    dest = tmp_path / "boot" / "inplace" / "overlay.img"
    result = run_module(maintenance_overlay, {"dest": str(dest), "admin": "admin", "host_record": RECORD},
                        check_mode=True)
    assert not result.get("failed") and result["changed"] is True
    assert result["bytes"] > 0 and result["host_key_types"] == ["ed25519"]
    assert not (tmp_path / "boot").exists()


def test_the_overlay_carries_keys_admin_and_host_record_and_is_written_once(run_module, system, tmp_path):
    dest = tmp_path / "boot" / "inplace" / "overlay.img"
    args = {"dest": str(dest), "admin": "admin", "host_record": RECORD}
    planned = run_module(maintenance_overlay, args, check_mode=True)
    result = run_module(maintenance_overlay, args)
    assert not result.get("failed") and result["changed"] is True
    assert result["dest"] == str(dest) and result["bytes"] == dest.stat().st_size == planned["bytes"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert stat.S_IMODE(dest.parent.stat().st_mode) == 0o700
    files = members(dest.read_bytes())
    assert files["etc/hostname"][1] == b"pc-042\n"
    assert files["etc/ssh/ssh_host_ed25519_key"] == (stat.S_IFREG | 0o600, HOST_KEY.encode())
    assert files["etc/ssh/ssh_host_ed25519_key.pub"][1] == HOST_PUB.encode()
    assert json.loads(files["etc/inplace/host.json"][1]) == RECORD
    assert stat.S_IMODE(files["etc/inplace/host.json"][0]) == 0o600
    admin = json.loads(files["etc/inplace-host/admin.json"][1])
    assert admin["name"] == "admin" and admin["uid"] == 1000 and admin["authorized_keys"] == [ADMIN_KEY]
    assert admin["password_hash"] == "$6$salt$hash"

    written = dest.stat().st_mtime_ns
    again = run_module(maintenance_overlay, args)
    assert again["changed"] is False and dest.stat().st_mtime_ns == written

    changed = run_module(maintenance_overlay, dict(args, host_record={"disk": "/dev/vda"}))
    assert changed["changed"] is True
    assert json.loads(members(dest.read_bytes())["etc/inplace/host.json"][1]) == {"disk": "/dev/vda"}
