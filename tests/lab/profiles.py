"""Two users with profiles as awkward as real ones, made in a mounted system root.

``populate(root)`` is the only entry point, so a shared generator can replace it.
Everything is deterministic (seeded contents, fixed mtimes), so two builds give
the same profiles. Needs root (owners, ACLs), the acl tools, and ``useradd`` and
``crontab`` inside the root.
"""

from __future__ import annotations

import os
import random
import subprocess

MiB = 1024 * 1024
GiB = 1024 * MiB
MTIME = 1700000000  # 2023-11-14, so restored mtimes are visibly not "now"
PROJECT_GROUP = ("project", 1100)
# sha512-crypt of "alice-lab" and "bob-lab": throw-away lab passwords, so hashes can be checked end to end.
USERS = [
    {"name": "alice", "uid": 1000, "comment": "Alice Example",
     "hash": "$6$labsaltalice$DnI.GNRfwFW2VzD5dxB4C53US4EUmJHkl9www7JjtNl2IJ/kVlbn.jSkg.Jf2RlsLIg0teAnCvYhoI1/acl0h."},
    {"name": "bob", "uid": 1001, "comment": "Bob Example",
     "hash": "$6$labsaltbob$vSSY53s5AgTeSKFHx9IXdcBU/As5gFCmUiufqG88UziLzOPKUo8YPOZ7vZiCCZ2fEpJ8UI4kGHTfhQKj2ajg20"},
]
ALICE_CRONTAB = "# m h dom mon dow command\n17 3 * * * /home/alice/bin/backup.sh >/dev/null 2>&1\n"


def _run(*argv, **kwargs):
    subprocess.run([os.fsencode(a) if isinstance(a, bytes) else str(a) for a in argv], check=True, **kwargs)


def _write(path, data, uid, gid, mode=0o644):
    with open(path, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _mkdir(path, uid, gid, mode=0o755):
    """``path`` and any missing parents, each owned by ``uid``:``gid`` (parents that exist are left alone)."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        _mkdir(parent, uid, gid, mode)
    if not os.path.isdir(path):
        os.mkdir(path)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _accounts(root):
    _run("groupadd", "--root", root, "--gid", PROJECT_GROUP[1], PROJECT_GROUP[0])
    for user in USERS:
        _run("groupadd", "--root", root, "--gid", user["uid"], user["name"])
        _run("useradd", "--root", root, "--uid", user["uid"], "--gid", user["uid"], "--create-home",
             "--shell", "/bin/bash", "--comment", user["comment"], "--groups", "users," + PROJECT_GROUP[0],
             "--password", user["hash"], user["name"])


def _documents(home, uid, gid, rng):
    docs = os.path.join(home, "Documents")
    for sub in ("reports/2023", "reports/2024", "photos", "notes"):
        _mkdir(os.path.join(docs, sub), uid, gid)
    for index in range(12):
        _write(os.path.join(docs, "reports", "2023" if index % 2 else "2024", "report-%02d.txt" % index),
               "".join("line %d of report %d\n" % (line, index) for line in range(rng.randint(10, 400))), uid, gid)
    for index in range(6):
        _write(os.path.join(docs, "photos", "IMG_%04d.jpg" % index), rng.randbytes(rng.randint(64 * 1024, MiB)),
               uid, gid)
    _write(os.path.join(docs, "notes", "empty.txt"), b"", uid, gid)
    _mkdir(os.path.join(docs, "notes", "empty-dir"), uid, gid)
    _write(os.path.join(docs, "notes", "private.txt"), "not for others\n", uid, gid, 0o600)
    # A VM disk: 2 GiB apparent, a few MiB of data at both ends and in the middle.
    sparse = os.path.join(docs, "vm-disk.img")
    with open(sparse, "wb") as handle:
        for offset in (0, GiB, 2 * GiB - MiB):
            handle.seek(offset)
            handle.write(rng.randbytes(MiB))
    os.chown(sparse, uid, gid)
    return docs


def _odd_names(docs, uid, gid):
    odd = os.path.join(docs, "odd names")
    _mkdir(odd, uid, gid)
    odd_bytes = os.fsencode(odd)
    for name in (b"file with spaces.txt", b"new\nline.txt", b"caf\xe9 latin-1.txt", b"tab\there.txt",
                 "ünïcødé ✓.txt".encode("utf-8"), b"-starts-with-dash", b"x" * 255):
        _write(os.path.join(odd_bytes, name), b"odd name: " + name + b"\n", uid, gid)
    deep = odd
    for level in range(3):
        deep = os.path.join(deep, "%d-%s" % (level, "long-directory-name-" * 5))
        _mkdir(deep, uid, gid)
    _write(os.path.join(deep, "deep-file.txt"), "the path to here is longer than 255 bytes\n", uid, gid)


def _links(home, docs, uid, gid):
    report = os.path.join(docs, "reports", "2024", "report-00.txt")
    os.link(report, os.path.join(docs, "reports", "report-00-hardlink.txt"))
    os.link(report, os.path.join(docs, "notes", "report-00-other-dir.txt"))
    for name, target in (("hostname-link", "/etc/hostname"), ("report-link", "Documents/reports/2024/report-00.txt"),
                         ("dangling-link", "/nonexistent/target")):
        path = os.path.join(home, name)
        os.symlink(target, path)
        os.lchown(path, uid, gid)
    fifo = os.path.join(home, ".local", "run", "fifo")
    _mkdir(os.path.dirname(fifo), uid, gid, 0o700)
    os.mkfifo(fifo, 0o600)
    os.chown(fifo, uid, gid)


def _dotfiles(home, name, uid, gid, rng):
    for path, mode in ((".config/editor", 0o700), (".ssh", 0o700), ("bin", 0o755), (".cache/thumbnails", 0o700),
                       (".local/share/Trash/files", 0o700)):
        _mkdir(os.path.join(home, path), uid, gid, mode)
    _write(os.path.join(home, ".config", "editor", "settings.ini"), "[ui]\ntheme = dark\nuser = %s\n" % name, uid, gid)
    _write(os.path.join(home, ".ssh", "authorized_keys"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIlab %s@laptop\n" % name,
           uid, gid, 0o600)
    _write(os.path.join(home, ".bash_history"), "ls\ncd Documents\n", uid, gid, 0o600)
    _write(os.path.join(home, "bin", "backup.sh"), "#!/bin/sh\necho backing up\n", uid, gid, 0o755)
    _write(os.path.join(home, ".cache", "thumbnails", "cached.png"), rng.randbytes(32 * 1024), uid, gid)
    _write(os.path.join(home, ".local", "share", "Trash", "files", "deleted.txt"), "thrown away\n", uid, gid)


def _acls_and_xattrs(docs, uid, gid, other):
    shared = os.path.join(docs, "shared")
    _mkdir(shared, uid, gid, 0o750)
    _run("setfacl", "-m", "u:%d:rwx,g:%d:rx" % (other["uid"], PROJECT_GROUP[1]), shared)
    _run("setfacl", "-d", "-m", "u:%d:rwx,g:%d:rx" % (other["uid"], PROJECT_GROUP[1]), shared)
    _write(os.path.join(shared, "from-%s.txt" % other["name"]), "written by %s\n" % other["name"],
           other["uid"], other["uid"])
    _run("setfacl", "-m", "u:%d:rw" % other["uid"], os.path.join(shared, "from-%s.txt" % other["name"]))
    team = os.path.join(docs, "team")
    _mkdir(team, uid, PROJECT_GROUP[1], 0o2775)
    _write(os.path.join(team, "plan.txt"), "setgid directory: group project\n", uid, PROJECT_GROUP[1], 0o664)
    report = os.path.join(docs, "reports", "2024", "report-02.txt")
    os.setxattr(report, "user.origin", b"lab")
    os.setxattr(report, "user.binary", bytes(range(0, 256, 7)))
    os.setxattr(os.path.join(docs, "photos"), "user.album", "Holiday \u2600".encode("utf-8"))


def _fix_mtimes(home):
    """Fixed mtimes everywhere (deepest first, so a directory's own time is not bumped afterwards)."""
    for base, dirs, files in os.walk(os.fsencode(home), topdown=False):
        for name in dirs + files:
            os.utime(os.path.join(base, name), (MTIME, MTIME), follow_symlinks=False)
    os.utime(home, (MTIME, MTIME))


def populate(root):
    """Create the lab users and their profiles under the system root ``root``; return the user names."""
    _accounts(root)
    for index, user in enumerate(USERS):
        home = os.path.join(root, "home", user["name"])
        uid = gid = user["uid"]
        rng = random.Random(user["name"])
        docs = _documents(home, uid, gid, rng)
        _dotfiles(home, user["name"], uid, gid, rng)
        _odd_names(docs, uid, gid)
        _links(home, docs, uid, gid)
        _acls_and_xattrs(docs, uid, gid, USERS[(index + 1) % len(USERS)])
        _fix_mtimes(home)
    _run("chroot", root, "crontab", "-u", USERS[0]["name"], "-", input=ALICE_CRONTAB.encode())
    return [user["name"] for user in USERS]
