"""Adversarial home directories, and a tree comparison that says exactly what differs.

``build_home`` makes a home with every kind of entry a profile archive must keep
(and two it must skip). ``snapshot`` records, per path, everything a user would
notice: type, bytes, owner, mode with special bits, mtime (ns), ACLs, xattrs,
hard-link groups and sparseness; ``differences`` compares two snapshots. The
same helpers verify the VM tests, so they take any root.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import stat
import subprocess
import sys

MiB = 1024 * 1024

# Names a naive tool gets wrong: spaces, a newline, bytes that are not UTF-8, glob
# characters, a leading dash, and a path longer than 255 bytes.
ODD_NAMES = [b"with space", b"new\nline", b"latin1-\xe9\xff", "üñíçødé".encode(), b"-leading-dash",
             b"*glob?[chars]", b"quote\"'back\\slash"]
LONG_COMPONENT = b"d" * 200


def _write(path, data, mode=0o644):
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def _setfacl(*args):
    subprocess.run(["setfacl"] + [os.fsdecode(a) for a in args], check=True)


def build_home(home, uid, gid, other_uid=None, seed=0, payload=MiB):
    """Fill ``home`` with the adversarial tree, owned by uid:gid; return the paths that must be skipped."""
    rng = random.Random(seed)
    home = os.fsencode(home)
    os.makedirs(home, exist_ok=True)
    os.chmod(home, 0o750)

    def j(*parts):
        return os.path.join(home, *parts)

    _write(j(b".bashrc"), b"# alice's own bashrc\nalias ll='ls -l'\n")
    _write(j(b".profile"), b"# own profile\n")
    os.makedirs(j(b"Documents", b"reports", b"2024"))
    for index in range(12):
        _write(j(b"Documents", b"reports", b"2024", b"r%02d.txt" % index), rng.randbytes(rng.randint(0, 3 * 4096)))
    _write(j(b"Documents", b"empty-file"), b"")
    _write(j(b"Documents", b"payload.bin"), rng.randbytes(payload))
    os.makedirs(j(b"empty", b"nested", b"deeper"))

    # Special mode bits.
    _write(j(b"setuid-tool"), b"#!/bin/sh\n", 0o4755)
    _write(j(b"setgid-tool"), b"#!/bin/sh\n", 0o2755)
    os.mkdir(j(b"sticky"))
    os.chmod(j(b"sticky"), 0o1777)
    os.mkdir(j(b"shared-setgid"))
    os.chmod(j(b"shared-setgid"), 0o2775)
    _write(j(b"private"), b"secret\n", 0o600)

    # ACLs, access and default.
    _write(j(b"acl-file"), b"acl\n")
    _setfacl("-m", "u:4242:rw,g:4243:r", j(b"acl-file"))
    os.mkdir(j(b"acl-dir"))
    _setfacl("-m", "u:4242:rwx", j(b"acl-dir"))
    _setfacl("-d", "-m", "u:4242:rwx,g::r-x,o::---", j(b"acl-dir"))

    # Extended attributes, text and binary, user and security namespaces.
    _write(j(b"xattr-file"), b"xattr\n")
    os.setxattr(j(b"xattr-file"), "user.comment", b"written by alice")
    os.setxattr(j(b"xattr-file"), "user.binary", bytes(range(256)))
    os.setxattr(j(b"xattr-file"), "security.inplace", b"label")
    os.setxattr(j(b"Documents"), "user.folder", b"docs")

    # Hard links, in one directory and across directories.
    _write(j(b"linked-a"), rng.randbytes(5000))
    os.link(j(b"linked-a"), j(b"linked-b"))
    os.link(j(b"linked-a"), j(b"Documents", b"linked-c"))

    # A sparse file: 64 MiB long, holding three small pieces.
    with open(j(b"sparse.img"), "wb") as handle:
        for offset in (0, 20 * MiB, 64 * MiB - 4096):
            handle.seek(offset)
            handle.write(rng.randbytes(4096))

    # Symlinks: relative, absolute, dangling, to a directory.
    os.symlink(b"Documents/empty-file", j(b"link-relative"))
    os.symlink(b"/etc/hostname", j(b"link-absolute"))
    os.symlink(b"does/not/exist", j(b"link-dangling"))
    os.symlink(b"Documents", j(b"link-to-dir"))

    os.mkfifo(j(b"a-fifo"), 0o640)

    os.mkdir(j(b"odd"))
    for name in ODD_NAMES:
        _write(j(b"odd", name), name + b"\n")
    deep = j(b"odd", LONG_COMPONENT, LONG_COMPONENT)
    os.makedirs(deep)
    _write(os.path.join(deep, b"f" * 200), b"far away\n")
    assert len(os.path.relpath(os.path.join(deep, b"f" * 200), home)) > 255

    # Excluded by the default rules.
    os.makedirs(j(b".cache", b"thumbnails"))
    _write(j(b".cache", b"thumbnails", b"t.png"), rng.randbytes(20000))
    os.makedirs(j(b".local", b"share", b"Trash", b"files"))
    _write(j(b".local", b"share", b"Trash", b"files", b"deleted.txt"), b"gone\n")

    # Never archived: a socket and a device node.
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(j(b"a-socket"))
    sock.close()
    os.mknod(j(b"a-device"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))

    for base, dirs, files in os.walk(home):
        for name in dirs + files + [b"."]:
            os.lchown(os.path.join(base, name), uid, gid)
    if other_uid is not None:
        _write(j(b"Documents", b"from-a-colleague"), b"hello\n")
        os.lchown(j(b"Documents", b"from-a-colleague"), other_uid, other_uid)

    # Timestamps with nanoseconds, deepest first so setting them sticks.
    for base, dirs, files in sorted(os.walk(home), key=lambda item: -len(item[0])):
        for name in files + dirs:
            path = os.path.join(base, name)
            stamp = 1_600_000_000_000_000_000 + rng.randrange(10 ** 15)
            os.utime(path, ns=(stamp, stamp), follow_symlinks=False)
    os.utime(home, ns=(1_650_000_000_123_456_789, 1_650_000_000_123_456_789))
    return [b"a-socket", b"a-device"]


def _digest(path):
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 * MiB), b""):
            sha.update(block)
    return sha.hexdigest()


def snapshot(root, uid_map=None, gid_map=None, skip=()):
    """{relative bytes path: facts} for everything under ``root`` (itself as b'.').

    Owners are passed through ``uid_map``/``gid_map`` ({old: new}) so a snapshot of
    the old tree can be compared with a restored tree whose users were remapped.
    """
    root = os.fsencode(root)
    uid_map = uid_map or {}
    gid_map = gid_map or {}
    facts = {}
    inodes = {}

    def record(path):
        relative = os.path.relpath(path, root)
        info = os.lstat(path)
        kind = stat.S_IFMT(info.st_mode)
        entry = {
            "type": kind,
            "mode": oct(stat.S_IMODE(info.st_mode)),
            "uid": uid_map.get(info.st_uid, info.st_uid),
            "gid": gid_map.get(info.st_gid, info.st_gid),
            "mtime_ns": info.st_mtime_ns,
            "xattrs": {n: os.getxattr(path, n, follow_symlinks=False)
                       for n in sorted(os.listxattr(path, follow_symlinks=False))},
        }
        if stat.S_ISREG(kind):
            entry.update(size=info.st_size, sha256=_digest(path), nlink=info.st_nlink,
                         sparse=info.st_blocks * 512 < info.st_size)
            inodes.setdefault(info.st_ino, []).append(relative)
        elif stat.S_ISLNK(kind):
            entry["target"] = os.readlink(path)
        facts[relative] = entry

    record(root)
    for base, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.relpath(os.path.join(base, d), root) not in skip]
        for name in dirs + files:
            path = os.path.join(base, name)
            if os.path.relpath(path, root) not in skip:
                record(path)
    for group in inodes.values():
        for relative in group:
            facts[relative]["hardlinks"] = sorted(group)
    return facts


def differences(expected, actual, ignore_mtime_of=()):
    """Human-readable differences between two snapshots, empty when they are the same."""
    found = []
    for relative in sorted(set(expected) | set(actual)):
        name = os.fsdecode(relative)
        if relative not in actual:
            found.append("%r missing" % name)
            continue
        if relative not in expected:
            found.append("%r unexpected" % name)
            continue
        for key in sorted(set(expected[relative]) | set(actual[relative])):
            if key == "mtime_ns" and relative in ignore_mtime_of:
                continue
            if expected[relative].get(key) != actual[relative].get(key):
                found.append("%r %s: expected %r, found %r" % (name, key, expected[relative].get(key),
                                                               actual[relative].get(key)))
    return found


def jsonable(facts):
    """A snapshot as JSON can carry it: names as latin-1 text (one char per byte), xattr values as hex."""
    out = {}
    for relative, entry in facts.items():
        entry = dict(entry)
        entry["xattrs"] = {name: value.hex() for name, value in entry["xattrs"].items()}
        if "target" in entry:
            entry["target"] = entry["target"].decode("latin-1")
        if "hardlinks" in entry:
            entry["hardlinks"] = [p.decode("latin-1") for p in entry["hardlinks"]]
        out[relative.decode("latin-1")] = entry
    return out


def main(argv):
    """On a lab PC (no Ansible, only this file): print {home: snapshot} of every directory under a root."""
    root = argv[1] if len(argv) > 1 else "/home"
    skip = {os.fsencode(p) for p in argv[2:]}
    homes = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            homes[name] = jsonable(snapshot(path, skip=skip))
    json.dump(homes, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv)
