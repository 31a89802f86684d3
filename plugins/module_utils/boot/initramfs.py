# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Initramfs archives (cpio "newc") and the maintenance environment's per-host overlay.

The kernel unpacks every archive it is given, in order, over one RAM root: GRUB's
``initrd base overlay`` (or the two files concatenated) lays the overlay's files over
the shared base. The overlay is tiny, so its entries are built in memory and streamed
out one by one.
"""

from __future__ import annotations

import json
import stat

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
ALIGNMENT = 4

# Where the base (roles/maintenance_env/files) expects each piece of the overlay.
ADMIN_FILE = "etc/inplace-host/admin.json"
NETWORK_FILE = "etc/systemd/network/10-inplace-host.network"
HOST_KEY_TYPES = ("rsa", "ecdsa", "ed25519")


class Entry:
    """One archive member: a directory, a regular file (``data``) or a symlink (``target``)."""

    def __init__(self, name, mode, data=b"", uid=0, gid=0, mtime=0):
        self.name = name.lstrip("/")
        self.mode = mode
        self.data = data
        self.uid = uid
        self.gid = gid
        self.mtime = mtime

    @classmethod
    def directory(cls, name, mode=0o755, **owner):
        return cls(name, stat.S_IFDIR | mode, **owner)

    @classmethod
    def file(cls, name, data, mode=0o644, **owner):
        return cls(name, stat.S_IFREG | mode, data.encode("utf-8") if isinstance(data, str) else data, **owner)

    @classmethod
    def symlink(cls, name, target, **owner):
        return cls(name, stat.S_IFLNK | 0o777, target.encode("utf-8"), **owner)


def _padding(length):
    return b"\0" * (-length % ALIGNMENT)


def _header(inode, entry, name_bytes):
    fields = (inode, entry.mode, entry.uid, entry.gid, 2 if stat.S_ISDIR(entry.mode) else 1, entry.mtime,
              len(entry.data), 0, 0, 0, 0, len(name_bytes) + 1, 0)
    return NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)


def _member(inode, entry):
    name = entry.name.encode("utf-8")
    head = _header(inode, entry, name) + name + b"\0"
    return head + _padding(len(head)) + entry.data + _padding(len(entry.data))


def write_newc(stream, entries):
    """Write ``entries`` and the trailer to the binary ``stream``; return the number of bytes written."""
    written = 0
    for inode, entry in enumerate(entries, start=1):
        if not entry.name or ".." in entry.name.split("/"):
            raise ValueError("archive member name %r is empty or leaves the root" % entry.name)
        member = _member(inode, entry)
        stream.write(member)
        written += len(member)
    trailer = _member(0, Entry(TRAILER, 0))
    stream.write(trailer)
    return written + len(trailer)


def host_overlay(hostname, host_keys, admin, network=None):
    """The entries of a PC's overlay for the maintenance base.

    ``host_keys`` maps a key type (rsa, ecdsa, ed25519) to ``(private, public)`` texts;
    ``admin`` is the account Ansible connects as: ``name``, ``uid``, ``gid``, optional
    ``group``, ``password_hash``, ``shell``, ``authorized_keys`` (a list) and ``sudo``
    (default true); ``network`` is the text of a systemd-networkd ``.network`` file
    (the base uses DHCP on every wired NIC without one). Private keys and the account
    record are 0600: write the archive itself 0600 too.
    """
    unknown = sorted(set(host_keys) - set(HOST_KEY_TYPES))
    if unknown:
        raise ValueError("unknown SSH host key types: %s" % ", ".join(unknown))
    missing = sorted({"name", "uid", "gid"} - set(admin))
    if missing:
        raise ValueError("the admin account needs %s" % ", ".join(missing))
    entries = [
        Entry.file("etc/hostname", hostname + "\n"),
        Entry.file("etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                   % hostname),
    ]
    for key_type in sorted(host_keys):
        private, public = host_keys[key_type]
        path = "etc/ssh/ssh_host_%s_key" % key_type
        entries.append(Entry.file(path, private, mode=0o600))
        entries.append(Entry.file(path + ".pub", public))
    if network is not None:
        entries.append(Entry.file(NETWORK_FILE, network))
    entries.append(Entry.directory(ADMIN_FILE.rsplit("/", 1)[0], mode=0o700))
    entries.append(Entry.file(ADMIN_FILE, json.dumps(admin, indent=2, sort_keys=True) + "\n", mode=0o600))
    return entries
