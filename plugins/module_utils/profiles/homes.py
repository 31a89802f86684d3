# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where each user's home really is in an old system root, so that capture never leaves one behind.

A home is followed through symlinks (resolved inside the root, never on the host) and through
the old system's bind mounts (its fstab), to where its files are. There it is either read from
the root (``archive``), or it lies on a filesystem the reimage keeps (``kept``: another
partition or a network filesystem, by the old fstab or by what is mounted here), or it does not
exist (``none``). A home that exists somewhere capture cannot read, and would be overwritten
(a mount of the root's own device, such as a btrfs subvolume, that is not mounted here), is an
error, as is a home missing for a user named explicitly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.rootfs import inside

MOUNTINFO = "/proc/self/mountinfo"
# Filesystems that hold nothing a reimage could keep: a home under one is looked for on the root.
PSEUDO = {"tmpfs", "ramfs", "proc", "sysfs", "devpts", "devtmpfs", "cgroup", "cgroup2", "securityfs", "debugfs",
          "tracefs", "efivarfs", "hugetlbfs", "mqueue", "configfs", "pstore", "bpf", "fusectl", "autofs", "overlay"}
NETWORK = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "sshfs", "fuse.sshfs", "glusterfs", "ceph", "davfs", "9p"}
MAX_BINDS = 16


def _unescape(field):
    """fstab and mountinfo write a space, tab, newline or backslash in a path as an octal escape."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _under(path, point):
    return point == "/" or path == point or path.startswith(point.rstrip("/") + "/")


def _longest(entries, path):
    """The entry whose mount point holds ``path`` most closely, or None."""
    found = [entry for entry in entries if _under(path, entry["point"])]
    return max(found, key=lambda entry: len(entry["point"]), default=None)


def read_fstab(root):
    """The old system's fstab entries with a path as mount point: spec, point, type, options."""
    entries = []
    try:
        with open(inside(root, "/etc/fstab"), errors="surrogateescape") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) < 3 or fields[0].startswith("#") or not fields[1].startswith("/"):
                    continue
                entries.append({"spec": _unescape(fields[0]), "point": _unescape(fields[1]).rstrip("/") or "/",
                                "type": fields[2], "options": fields[3].split(",") if len(fields) > 3 else []})
    except OSError:
        pass
    return entries


def read_mountinfo(path=MOUNTINFO):
    """What is mounted here: mount point, filesystem type and source device of every mount."""
    entries = []
    with open(path, errors="surrogateescape") as handle:
        for line in handle:
            before, sep, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if sep and len(fields) >= 5 and len(tail) >= 2:
                entries.append({"point": _unescape(fields[4]), "type": tail[0], "source": _unescape(tail[1])})
    return entries


@dataclass
class Home:
    """``state`` is ``archive`` (read from ``path`` on this host), ``kept`` or ``none`` (see ``reason``);
    ``seen_as`` is where the files are as the old system sees them."""

    state: str
    seen_as: str
    path: str = None
    reason: str = None


class Homes:
    """Homes in ``root``; ``resolve(spec)`` (optional) lists the devices an fstab spec names on this host, so
    that another spelling of the root's own device is known as that device."""

    def __init__(self, root, mountinfo=MOUNTINFO, resolve=None):
        self.root = root
        self.resolve = resolve
        self.real_root = os.path.realpath(root)
        self.fstab = read_fstab(root)
        self.root_spec = next((e["spec"] for e in self.fstab if e["point"] == "/"), None)
        self.binds = [e for e in self.fstab if "bind" in e["options"] or "rbind" in e["options"]]
        self.mounts = [e for e in self.fstab if e not in self.binds and e["point"] != "/"
                       and e["type"] not in PSEUDO and e["type"] != "swap"]
        self.here = read_mountinfo(mountinfo)
        self.root_mount = _longest(self.here, self.real_root)

    def seen_as(self, home):
        """``home`` as the old system finds it: symlinks resolved inside the root, bind mounts followed."""
        path = home
        for _hop in range(MAX_BINDS):
            relative = os.path.relpath(inside(self.root, path), self.root)
            path = "/" if relative == "." else "/" + relative
            bind = _longest(self.binds, path)
            if bind is None:
                return path
            path = bind["spec"].rstrip("/") + path[len(bind["point"].rstrip("/")):]
        raise MigrationError("the bind mounts in %s/etc/fstab lead %s in a circle." % (self.root.rstrip("/"), home))

    def _kept_here(self, host):
        """Why the filesystem mounted here that holds ``host`` outlives the reimage, or None."""
        mount = _longest(self.here, host)
        if mount is None or self.root_mount is None or mount["point"] == self.root_mount["point"]:
            return None
        if mount["type"] in PSEUDO or mount["source"] == self.root_mount["source"]:
            return None  # volatile, or the root's own device (a btrfs subvolume, a bind mount of the root)
        return "on a separately mounted filesystem (%s) the reimage keeps" % mount["source"]

    def _is_root_device(self, spec):
        if spec == self.root_spec:
            return True
        if self.resolve is None or self.root_spec is None:
            return False
        try:
            found = self.resolve(spec)
            return bool(found) and found == self.resolve(self.root_spec)
        except MigrationError:
            return False  # a spec that names no device cannot be the root's

    def _kept_by_fstab(self, user, seen, host):
        """Why the old fstab's mount holding ``seen`` outlives the reimage, or None; an error where it would not
        and its files cannot be read here."""
        entry = _longest(self.mounts, seen)
        if entry is None:
            return None
        if entry["type"] in NETWORK:
            return "on %s (%s %s), a network filesystem the reimage does not touch" % (
                entry["point"], entry["type"], entry["spec"])
        if not self._is_root_device(entry["spec"]):
            return "on %s (%s), a partition the reimage keeps" % (entry["point"], entry["spec"])
        if not os.path.isdir(host):
            raise MigrationError(
                "the home %s of %s lies on %s, which the old fstab mounts from the root's own device %s (a btrfs "
                "subvolume?) that the reimage overwrites, and it is not mounted under %s; mount it at %s and run "
                "again." % (user["home"], user["name"], entry["point"], entry["spec"], self.root,
                            os.path.join(self.root, entry["point"].lstrip("/"))))
        return None

    def locate(self, user, named, keep_preserved=True):
        """Where ``user``'s home is; ``named`` when the user was asked for by name (a missing home is an error)."""
        seen = self.seen_as(user["home"])
        host = os.path.join(self.root, seen.lstrip("/"))
        kept = self._kept_here(os.path.join(self.real_root, seen.lstrip("/"))) or \
            self._kept_by_fstab(user, seen, host)
        if kept and keep_preserved:
            return Home("kept", seen, reason="its home %s is %s" % (user["home"], kept))
        if os.path.isdir(host):
            return Home("archive", seen, path=host)
        if kept:
            return Home("kept", seen, reason="its home %s is %s (not mounted here)" % (user["home"], kept))
        if named:
            name = user["name"]
            raise MigrationError(
                "%s is named in users, but its home %s does not exist in %s; create it, correct %s's home in "
                "%s/etc/passwd, or leave %s out of users." % (
                    name, user["home"], self.root, name, self.root.rstrip("/"), name))
        return Home("none", seen, reason="its home %s does not exist" % user["home"])
