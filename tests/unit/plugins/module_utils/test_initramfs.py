"""cpio newc archives as GNU cpio reads them, and the maintenance overlay's contents."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.boot.initramfs import (
    ADMIN_FILE, Entry, host_overlay, write_newc)

pytestmark = pytest.mark.skipif(shutil.which("cpio") is None, reason="needs GNU cpio to read the archives back")


def archive(entries):
    buffer = io.BytesIO()
    written = write_newc(buffer, entries)
    assert written == len(buffer.getvalue())
    assert written % 4 == 0
    return buffer.getvalue()


def extract(data, directory):
    subprocess.run(["cpio", "-i", "--make-directories", "--no-absolute-filenames", "--quiet",
                    "--preserve-modification-time",
                    "--no-preserve-owner"], input=data, cwd=str(directory), check=True)


def listing(data):
    return subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True, check=True).stdout.decode()


@pytest.mark.parametrize("name_length", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 4097])
def test_file_contents_and_modes_survive_every_padding(tmp_path, name_length, size):
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    name = "f" * name_length
    entries = [Entry.directory("etc", 0o751), Entry.file("etc/" + name, payload, mode=0o640),
               Entry.symlink("etc/link", "/etc/f")]
    data = archive(entries)
    assert listing(data).split() == ["etc", "etc/" + name, "etc/link"]
    extract(data, tmp_path)
    path = tmp_path / "etc" / name
    assert path.read_bytes() == payload
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "etc").stat().st_mode) == 0o751
    assert os.readlink(tmp_path / "etc" / "link") == "/etc/f"


def test_owner_and_mtime_are_recorded(tmp_path):
    data = archive([Entry.file("owned", "x", uid=1234, gid=4321, mtime=1700000000)])
    verbose = subprocess.run(["cpio", "-tv", "--numeric-uid-gid", "--quiet"], input=data, capture_output=True,
                             check=True).stdout.decode()
    assert "1234" in verbose and "4321" in verbose
    extract(data, tmp_path)
    assert (tmp_path / "owned").stat().st_mtime == 1700000000


def test_names_that_leave_the_root_are_refused():
    for name in ("..", "../etc/passwd", "etc/../../x", "/"):
        with pytest.raises(ValueError):
            write_newc(io.BytesIO(), [Entry.file(name, "x")])


def test_utf8_names_are_kept(tmp_path):
    extract(archive([Entry.file("etc/grüße", "hi")]), tmp_path)
    assert (tmp_path / "etc" / "grüße").read_text() == "hi"


def test_host_overlay_carries_keys_account_and_network_with_private_modes(tmp_path):
    admin = {"name": "labadmin", "uid": 900, "gid": 900, "password_hash": "*",
             "authorized_keys": ["ssh-ed25519 AAAA test"]}
    entries = host_overlay("pc7", {"ed25519": ("PRIVATE\n", "ssh-ed25519 PUBLIC\n")}, admin,
                           network="[Match]\nName=en*\n[Network]\nAddress=10.0.0.7/24\n")
    extract(archive(entries), tmp_path)
    assert (tmp_path / "etc" / "hostname").read_text() == "pc7\n"
    assert "127.0.1.1\tpc7" in (tmp_path / "etc" / "hosts").read_text()
    private = tmp_path / "etc" / "ssh" / "ssh_host_ed25519_key"
    assert private.read_text() == "PRIVATE\n"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "etc" / "ssh" / "ssh_host_ed25519_key.pub").stat().st_mode) == 0o644
    assert json.loads((tmp_path / ADMIN_FILE).read_text()) == admin
    assert stat.S_IMODE((tmp_path / ADMIN_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / ADMIN_FILE).parent.stat().st_mode) == 0o700
    assert "Address=10.0.0.7/24" in (tmp_path / "etc" / "systemd" / "network" / "10-inplace-host.network").read_text()


def test_host_overlay_refuses_unknown_key_types_and_incomplete_accounts():
    with pytest.raises(ValueError, match="dsa"):
        host_overlay("pc1", {"dsa": ("a", "b")}, {"name": "a", "uid": 1, "gid": 1})
    with pytest.raises(ValueError, match="uid"):
        host_overlay("pc1", {}, {"name": "a", "gid": 1})
