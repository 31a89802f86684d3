"""The walk of a home: rules, order, what is skipped."""

from __future__ import annotations

import io
import os
import socket

from ansible_collections.inplace.migration.plugins.module_utils.profiles.walk import Rules, settings_paths, walk


def make(tmp_path, paths):
    for path in paths:
        full = tmp_path / path
        if path.endswith("/"):
            full.mkdir(parents=True, exist_ok=True)
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_bytes(b"x" * 10)


def listed(home, rules):
    out = io.BytesIO()
    scan = walk(str(home), rules, out)
    return [p for p in out.getvalue().split(b"\0") if p], scan


def test_every_directory_is_followed_by_its_whole_subtree(tmp_path):
    make(tmp_path, ["a/x/1", "a/y/2", "a/3", "b/4", "c"])
    names, scan = listed(tmp_path, Rules())
    assert names == [b".", b"./a", b"./a/3", b"./a/x", b"./a/x/1", b"./a/y", b"./a/y/2", b"./b", b"./b/4", b"./c"]
    assert scan.files == 9 and scan.bytes == 50


def test_default_excludes_and_size_limit(tmp_path):
    make(tmp_path, [".cache/big", ".local/share/Trash/files/old", ".local/share/keep", "docs/a"])
    (tmp_path / "docs" / "huge").write_bytes(b"y" * 5000)
    names, scan = listed(tmp_path, Rules(max_file_size=1000))
    assert b"./.cache" not in names and b"./.local/share/Trash" not in names and b"./docs/huge" not in names
    assert b"./.local/share/keep" in names
    assert scan.excluded == {".cache": {"files": 2, "bytes": 10}, ".local/share/Trash": {"files": 3, "bytes": 10},
                             "max_file_size": {"files": 1, "bytes": 5000}}


def test_include_takes_matching_entries_and_the_directories_leading_to_them(tmp_path):
    make(tmp_path, ["Documents/a/b", "Documents/c", "Music/song", "notes.txt", "Downloads/x.iso"])
    names = listed(tmp_path, Rules(include=["Documents", "*.txt"], exclude=["*.iso"]))[0]
    assert names == [b".", b"./Documents", b"./Documents/a", b"./Documents/a/b", b"./Documents/c", b"./Downloads",
                     b"./Music", b"./notes.txt"]


def test_sockets_are_skipped_and_odd_names_kept(tmp_path):
    (tmp_path / "sub").mkdir()
    name = os.path.join(os.fsencode(tmp_path), b"sub", b"new\nline \xff")
    with open(name, "wb") as handle:
        handle.write(b"z")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    sock.close()
    names, scan = listed(tmp_path, Rules())
    assert b"./sub/new\nline \xff" in names and b"./sock" not in names
    assert scan.summary()["skipped"] == [{"path": "sock", "kind": "socket"}]


def test_same_tree_same_fingerprint_and_a_touch_changes_it(tmp_path):
    make(tmp_path, ["a/b", "c"])
    first = walk(str(tmp_path), Rules()).fingerprint.hexdigest()
    assert walk(str(tmp_path), Rules()).fingerprint.hexdigest() == first
    os.utime(tmp_path / "c", ns=(1, 1))
    assert walk(str(tmp_path), Rules()).fingerprint.hexdigest() != first


def test_settings_groups_find_their_files(tmp_path):
    make(tmp_path, ["etc/hostname", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
                    "etc/ssh/sshd_config", "var/spool/cron/crontabs/alice", "var/spool/cron/crontabs/eve",
                    "etc/NetworkManager/system-connections/wired.nmconnection"])
    found = settings_paths(str(tmp_path), ["hostname", "ssh_host_keys", "crontabs", "network"], ["alice"])
    assert found == [b"etc/hostname", b"etc/ssh/ssh_host_ed25519_key", b"etc/ssh/ssh_host_ed25519_key.pub",
                     b"var/spool/cron/crontabs/alice", b"etc/NetworkManager/system-connections",
                     b"etc/NetworkManager/system-connections/wired.nmconnection"]
