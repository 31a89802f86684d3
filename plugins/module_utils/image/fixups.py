# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fix-ups of the newly written system: what it keeps of the old one, and handing it the boot.

Before the first byte of the new image is written, what the fix-ups need of the old
system (host identity, the accounts the controller connects with, fstab) is copied
from the old root into the store (``carry``), so an interrupted deploy that is run
again still has it. Each fix-up then works on the new root mounted in a private
directory and returns a short report; GRUB is always the very last step.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time

from ansible_collections.inplace.migration.plugins.module_utils.boot.grub import fstab_boot_spec
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import human
from ansible_collections.inplace.migration.plugins.module_utils.common.rootfs import inside, read_text
from ansible_collections.inplace.migration.plugins.module_utils.profiles import accounts as _accounts
from ansible_collections.inplace.migration.plugins.module_utils.state.files import atomic_write, atomic_write_json, read_json

CARRY = "inplace/carry/carry.json"
# 2: accounts described as the profile manifest describes users, and the groups they need.
CARRY_VERSION = 2
PSEUDO_FSTYPES = {"tmpfs", "proc", "sysfs", "devpts", "devtmpfs", "efivarfs", "debugfs", "securityfs", "cgroup",
                  "cgroup2", "mqueue", "hugetlbfs", "overlay", "binfmt_misc", "configfs", "fusectl", "tracefs"}
DEVICE_PREFIXES = ("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=", "/dev/")
FSTAB_HEADER = ("# /etc/fstab, written by inplace.migration image_deploy: the root by its filesystem UUID,",
                "# the image's own entries whose devices exist, and those of the old system that survive it.")
BIOS_BOOT_TYPE = "21686148-6449-6e6f-744e-656564454649"
SUDOERS_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


# Carry: read from the old system before anything is written -------------------------------------

def gather(root, accounts):
    """What the fix-ups need of the old system whose root is mounted (read-only) at ``root``."""
    hosts = read_text(root, "/etc/hosts") or ""
    data = {
        "version": CARRY_VERSION,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hostname": (read_text(root, "/etc/hostname") or "").strip() or None,
        "hosts_line": next((line.strip() for line in hosts.splitlines() if line.split()[:1] == ["127.0.1.1"]), None),
        "machine_id": (read_text(root, "/etc/machine-id") or "").strip() or None,
        "fstab": read_text(root, "/etc/fstab"),
        "ssh_host_keys": {},
        "accounts": [],
        "groups": [],
        "missing_accounts": [],
        "sudoers": {},
    }
    ssh = inside(root, "/etc/ssh")
    if os.path.isdir(ssh):
        for name in sorted(os.listdir(ssh)):
            path = os.path.join(ssh, name)
            if name.startswith("ssh_host_") and stat.S_ISREG(os.lstat(path).st_mode):
                data["ssh_host_keys"][name] = {"mode": stat.S_IMODE(os.lstat(path).st_mode),
                                               "text": read_text(root, "/etc/ssh/" + name)}
    passwd, shadow, groups = _accounts.read_passwd(root), _accounts.read_shadow(root), _accounts.read_groups(root)
    for name in accounts:
        if name not in passwd:
            data["missing_accounts"].append(name)
            continue
        # The same description as the profile manifest's users, so restore and these fix-ups plan alike.
        user = _accounts.describe_user(name, passwd, shadow, groups)
        user["authorized_keys"] = read_text(root, user["home"].rstrip("/") + "/.ssh/authorized_keys")
        data["accounts"].append(user)
    data["groups"] = _accounts.supplementary_groups(data["accounts"], groups)
    sudoers = inside(root, "/etc/sudoers.d")
    names = [account["name"] for account in data["accounts"]]
    if names and os.path.isdir(sudoers):
        for entry in sorted(os.listdir(sudoers)):
            # sudo itself skips names with a dot or ending in ~.
            if "." in entry or entry.endswith("~"):
                continue
            text = read_text(root, "/etc/sudoers.d/" + entry)
            if text and any(re.search(r"(^|[\s,])%s([\s,=]|$)" % re.escape(n), line)
                            for n in names for line in text.splitlines() if not line.lstrip().startswith("#")):
                data["sudoers"][entry] = text
    return data


def looks_like_root(root):
    return os.path.isfile(inside(root, "/etc/passwd")) and os.path.isdir(inside(root, "/usr"))


def save_carry(store, data):
    store.ensure_dir("inplace/carry")
    atomic_write_json(store.path(CARRY), data)


def load_carry(store):
    data = read_json(store.path(CARRY))
    if data is not None and data.get("version") != CARRY_VERSION:
        raise MigrationError("%s has format version %s; this collection reads version %d." % (
            store.path(CARRY), data.get("version"), CARRY_VERSION))
    return data


# fstab -----------------------------------------------------------------------------------------------

def _entries(text):
    for line in (text or "").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#") or len(fields) < 3:
            yield line, None
        else:
            yield line, fields


def is_device_spec(spec):
    return spec.startswith(DEVICE_PREFIXES)


def merge_fstab(new_text, old_text, root_uuid, root_type, resolve, excluded, store_specs):
    """The new system's fstab: its root by UUID, its own entries whose devices exist here, and the old
    system's entries for partitions that survive (never the store, never the partition just written).

    ``resolve(spec)`` gives the device paths a spec names on this machine now; ``excluded``
    maps the device paths of the new root and the store to what they are; ``store_specs``
    holds the specs that name the store (its UUID=, LABEL=, PARTUUID=).
    Returns (text, report).
    """
    options, passno = ("errors=remount-ro", 1) if root_type.startswith("ext") else ("defaults", 0)
    lines = list(FSTAB_HEADER) + ["UUID=%s\t/\t%s\t%s\t0\t%d" % (root_uuid, root_type, options, passno)]
    report = {"root": "UUID=" + root_uuid, "kept": [], "carried": [], "dropped": []}
    taken = {"/"}

    def key(fields):
        return ("swap", fields[0]) if fields[2] == "swap" else fields[1]

    def verdict(fields):
        spec = fields[0]
        if fields[1] == "/":
            return "the root is the new filesystem"
        if spec in store_specs:
            return "the store"
        if fields[2] in PSEUDO_FSTYPES or not is_device_spec(spec):
            return None
        devices = resolve(spec)
        if not devices:
            return "no such device here"
        for device in devices:
            if device in excluded:
                return excluded[device]
        return None

    def take(line, fields, kind, already):
        why = verdict(fields)
        if why or key(fields) in taken:
            source = "" if kind == "kept" else " from the old system"
            report["dropped"].append("%s%s (%s)" % (" ".join(fields[:2]), source, why or already))
            return
        taken.add(key(fields))
        lines.append(line)
        report[kind].append(" ".join(fields[:2]))

    for line, fields in _entries(new_text):
        if fields is None:
            if line.strip() and "UNCONFIGURED FSTAB" not in line and line not in FSTAB_HEADER:
                lines.append(line)
        else:
            take(line, fields, "kept", "already mounted there")
    for line, fields in _entries(old_text):
        if fields is not None and fields[1] != "/" and fields[2] not in PSEUDO_FSTYPES and is_device_spec(fields[0]):
            take(line, fields, "carried", "image has it")
    return "\n".join(lines) + "\n", report


def fix_fstab(root, carry, root_uuid, root_type, resolve, excluded, store_specs):
    path = inside(root, "/etc/fstab")
    text, report = merge_fstab(read_text(root, "/etc/fstab"), (carry or {}).get("fstab"), root_uuid, root_type,
                               resolve, excluded, store_specs)
    if not os.path.isdir(os.path.dirname(path)):
        raise MigrationError("the new system has no /etc.")
    atomic_write(path, text.encode("utf-8"), 0o644)
    return report


# A /boot partition ---------------------------------------------------------------------------------------

# Kept on a /boot partition the new system takes over: the maintenance files, which cleanup zeroes
# before it removes them (the overlay holds the PC's host keys), and the filesystem's own directory.
BOOT_KEPT = ("inplace", "lost+found")
BOOT_FSTYPES = ("ext2", "ext3", "ext4")


def boot_partition(root, resolve, excluded):
    """The partition the new system's fstab mounts at /boot, as ``{"spec", "device"}``; None when its /boot is
    a directory of the root."""
    spec = fstab_boot_spec(read_text(root, "/etc/fstab"))
    if spec is None:
        return None
    devices = sorted(set(os.path.realpath(path) for path in resolve(spec))) if is_device_spec(spec) else []
    if len(devices) != 1 or devices[0] in excluded:
        raise MigrationError("the new system's fstab mounts /boot from %s, which names %s here; GRUB must be "
                             "installed on the partition the new system mounts at /boot, so correct that fstab "
                             "line (or set fstab=true to carry the old system's)." % (
                                 spec, excluded.get(devices[0]) if len(devices) == 1 else
                                 "%d devices" % len(devices) if devices else "no device"))
    return {"spec": spec, "device": devices[0]}


def _allocated(path):
    """Bytes the files under ``path`` take on a filesystem (directories included)."""
    info = os.lstat(path)
    total = info.st_blocks * 512
    if stat.S_ISDIR(info.st_mode):
        for base, directories, files in os.walk(path):
            for name in directories + files:
                total += os.lstat(os.path.join(base, name)).st_blocks * 512
    return total


def fill_boot(runner, source, target):
    """Make the /boot partition mounted at ``target`` hold the new system's /boot (``source``, the image's own
    /boot directory, which stays as it is underneath the mount): the old system's kernels and GRUB
    files go, the maintenance files stay. A rerun does the same again from the same source."""
    old = [name for name in sorted(os.listdir(target)) if name not in BOOT_KEPT]
    new = sorted(os.listdir(source)) if os.path.isdir(source) else []
    needed = sum(_allocated(os.path.join(source, name)) for name in new if name not in BOOT_KEPT)
    usage = os.statvfs(target)
    room = usage.f_bavail * usage.f_frsize + sum(_allocated(os.path.join(target, name)) for name in old)
    if needed > room:
        raise MigrationError("the /boot partition has room for %s and the new system's /boot needs %s; make the "
                             "/boot partition larger before migrating." % (human(room), human(needed)))
    for name in old:
        path = os.path.join(target, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    if new:
        runner.run(["cp", "-a", "--", source.rstrip("/") + "/.", target])
    return {"status": "done", "removed": old, "copied": new, "bytes": needed}


# Host identity -----------------------------------------------------------------------------------------

def hosts_text(current, line):
    """/etc/hosts with its 127.0.1.1 line replaced by ``line`` (or added after 127.0.0.1)."""
    rows = (current or "127.0.0.1\tlocalhost\n").splitlines()
    replaced = [line if row.split()[:1] == ["127.0.1.1"] else row for row in rows]
    if replaced == rows and line not in rows:
        position = next((i + 1 for i, row in enumerate(rows) if row.split()[:1] == ["127.0.0.1"]), 0)
        replaced.insert(position, line)
    return "\n".join(replaced) + "\n"


def fix_hostname(root, carry):
    name = (carry or {}).get("hostname")
    if not name:
        return {"status": "skipped", "reason": "the old system's hostname is not known"}
    atomic_write(inside(root, "/etc/hostname"), (name + "\n").encode("utf-8"), 0o644)
    line = carry.get("hosts_line") or "127.0.1.1\t%s" % name
    hosts = inside(root, "/etc/hosts")
    atomic_write(hosts, hosts_text(read_text(root, "/etc/hosts"), line).encode("utf-8"), 0o644)
    return {"status": "done", "hostname": name, "hosts": line}


def fix_ssh_host_keys(root, carry):
    keys = (carry or {}).get("ssh_host_keys") or {}
    if not keys:
        return {"status": "skipped", "reason": "the old system had no SSH host keys, or they are not known"}
    directory = inside(root, "/etc/ssh")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    removed = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("ssh_host_") and name not in keys:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    for name, key in sorted(keys.items()):
        path = os.path.join(directory, name)
        atomic_write(path, key["text"].encode("utf-8"), key["mode"])
        os.chown(path, 0, 0)
    return {"status": "done", "keys": sorted(keys), "removed_from_image": removed}


def fix_machine_id(root, carry, mode):
    path = inside(root, "/etc/machine-id")
    dbus = inside(root, "/var/lib/dbus/machine-id")
    if mode == "regenerate":
        # Empty: systemd makes a new one on the first boot (machine-id(5)).
        atomic_write(path, b"", 0o444)
        if os.path.isfile(dbus) and not os.path.islink(dbus):
            os.unlink(dbus)
        return {"status": "done", "machine_id": "regenerated at first boot"}
    value = (carry or {}).get("machine_id")
    if not value:
        return {"status": "skipped", "reason": "the old system's machine-id is not known"}
    atomic_write(path, (value + "\n").encode("utf-8"), 0o444)
    if os.path.isfile(dbus) and not os.path.islink(dbus):
        atomic_write(dbus, (value + "\n").encode("utf-8"), 0o444)
    return {"status": "done", "machine_id": "kept"}


# Accounts -------------------------------------------------------------------------------------------------

def fix_accounts(runner, root, carry):
    """The carried accounts (and the groups they need) in the new system, with their SSH keys and sudo rules."""
    carried = (carry or {}).get("accounts") or []
    missing = (carry or {}).get("missing_accounts") or []
    if not carried:
        return {"status": "skipped", "reason": "no account to carry" + (
            " (not on the old system: %s)" % ", ".join(missing) if missing else ""), "accounts": []}
    plan = _accounts.ensure(root, carried, carry.get("groups") or [])
    report = dict(plan.report(), status="done", missing=missing, sudoers=[], authorized_keys=[], accounts=[
        {"name": u.name, "status": "created" if u.create else "exists in the image", "uid": u.uid, "gid": u.gid,
         "home": u.home} for u in plan.users])
    for account in carried:
        if _accounts.give_access(root, plan.user(account["name"]), account.get("authorized_keys")):
            report["authorized_keys"].append(account["name"])
    for name, text in sorted(carry.get("sudoers", {}).items()):
        if SUDOERS_NAME.match(name):
            _accounts.install_sudoers(runner, root, name, text)
            report["sudoers"].append(name)
    return report
