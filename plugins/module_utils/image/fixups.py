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
import stat
import time

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.rootfs import inside, read_text
from ansible_collections.inplace.migration.plugins.module_utils.state.files import atomic_write, atomic_write_json, read_json

CARRY = "inplace/carry/carry.json"
CARRY_VERSION = 1
PSEUDO_FSTYPES = {"tmpfs", "proc", "sysfs", "devpts", "devtmpfs", "efivarfs", "debugfs", "securityfs", "cgroup",
                  "cgroup2", "mqueue", "hugetlbfs", "overlay", "binfmt_misc", "configfs", "fusectl", "tracefs"}
DEVICE_PREFIXES = ("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=", "/dev/")
FSTAB_HEADER = ("# /etc/fstab, written by inplace.migration image_deploy: the root by its filesystem UUID,",
                "# the image's own entries whose devices exist, and those of the old system that survive it.")
BIOS_BOOT_TYPE = "21686148-6449-6e6f-744e-656564454649"
SUDOERS_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def table(text, fields):
    """Lines of a colon-separated file (passwd, group, shadow, gshadow) as lists, skipping what does not parse."""
    rows = []
    for line in (text or "").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        row = line.split(":")
        if len(row) >= fields:
            rows.append(row)
    return rows


def members(row):
    return [name for name in row[3].split(",") if name]


# Carry: read from the old system before anything is written -------------------------------------

def gather(root, accounts):
    """What the fix-ups need of the old system whose root is mounted (read-only) at ``root``."""
    etc = {name: read_text(root, "/etc/" + name) for name in ("passwd", "group", "shadow", "gshadow")}
    passwd, groups = table(etc["passwd"], 7), table(etc["group"], 4)
    shadow = {row[0]: row for row in table(etc["shadow"], 2)}
    gshadow = {row[0]: row for row in table(etc["gshadow"], 4)}
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
    for name in accounts:
        row = next((r for r in passwd if r[0] == name), None)
        if row is None:
            data["missing_accounts"].append(name)
            continue
        primary = next((g for g in groups if g[2] == row[3]), None)
        supplementary = [g for g in groups if name in members(g) and g is not primary]
        data["accounts"].append({
            "passwd": row,
            "shadow": shadow.get(name),
            "groups": [{"group": g, "gshadow": gshadow.get(g[0]), "primary": g is primary}
                       for g in ([primary] if primary else []) + supplementary],
            "authorized_keys": read_text(root, row[5].rstrip("/") + "/.ssh/authorized_keys"),
        })
    sudoers = inside(root, "/etc/sudoers.d")
    names = [account["passwd"][0] for account in data["accounts"]]
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

    for line, fields in _entries(new_text):
        if fields is None:
            if line.strip() and "UNCONFIGURED FSTAB" not in line and line not in FSTAB_HEADER:
                lines.append(line)
            continue
        why = verdict(fields)
        if why or key(fields) in taken:
            report["dropped"].append("%s (%s)" % (" ".join(fields[:2]), why or "already mounted there"))
            continue
        taken.add(key(fields))
        lines.append(line)
        report["kept"].append(" ".join(fields[:2]))
    for line, fields in _entries(old_text):
        if fields is None or fields[1] == "/" or fields[2] in PSEUDO_FSTYPES or not is_device_spec(fields[0]):
            continue
        why = verdict(fields)
        if why or key(fields) in taken:
            report["dropped"].append("%s from the old system (%s)" % (" ".join(fields[:2]), why or "image has it"))
            continue
        taken.add(key(fields))
        lines.append(line)
        report["carried"].append(" ".join(fields[:2]))
    return "\n".join(lines) + "\n", report


def fix_fstab(root, carry, root_uuid, root_type, resolve, excluded, store_specs):
    path = inside(root, "/etc/fstab")
    text, report = merge_fstab(read_text(root, "/etc/fstab"), (carry or {}).get("fstab"), root_uuid, root_type,
                               resolve, excluded, store_specs)
    if not os.path.isdir(os.path.dirname(path)):
        raise MigrationError("the new system has no /etc.")
    atomic_write(path, text.encode("utf-8"), 0o644)
    return report


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

def _free_id(used, wanted, system):
    if wanted not in used:
        return wanted
    candidates = range(999, 99, -1) if system else range(1000, 60000)
    for candidate in candidates:
        if candidate not in used:
            return candidate
    raise MigrationError("no free %s id left in the new system." % ("system" if system else "user"))


def _rewrite(root, name, rows, original_path_mode=0o644):
    path = inside(root, "/etc/" + name)
    try:
        info = os.stat(path)
        mode, owner, group = stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
    except FileNotFoundError:
        mode, owner, group = original_path_mode, 0, 0
    atomic_write(path, ("\n".join(":".join(row) for row in rows) + "\n").encode("utf-8"), mode)
    os.chown(path, owner, group)


def merge_accounts(files, carried):
    """Add the ``carried`` accounts to the new system's account ``files`` (passwd, group, shadow, gshadow rows).

    Same UID and GID where free in the new system, else the next free id of the same kind
    (system below 1000, regular from 1000); an account or group the image already has keeps
    the image's entry, and only gains the memberships. Returns (files, report); ``files`` is
    changed in place.
    """
    report = []
    for account in carried:
        old = list(account["passwd"])
        name = old[0]
        entry = {"name": name}
        gid_for = {}
        for item in account["groups"]:
            row = item["group"]
            existing = next((g for g in files["group"] if g[0] == row[0]), None)
            if existing is None:
                gid = _free_id({int(g[2]) for g in files["group"] if g[2].isdigit()}, int(row[2]), int(row[2]) < 1000)
                existing = [row[0], "x", str(gid), ""]
                files["group"].append(existing)
                shadow_row = list(item["gshadow"]) if item["gshadow"] else [row[0], "!", "", ""]
                shadow_row[3] = ""
                files["gshadow"].append(shadow_row[:4])
                entry.setdefault("groups_created", []).append("%s (%d)" % (row[0], gid))
            gid_for[row[0]] = existing[2]
            if not item["primary"] and name not in members(existing):
                existing[3] = ",".join(members(existing) + [name])
                shadow_row = next((g for g in files["gshadow"] if g[0] == row[0]), None)
                if shadow_row is not None and name not in members(shadow_row):
                    shadow_row[3] = ",".join(members(shadow_row) + [name])
        present = next((p for p in files["passwd"] if p[0] == name), None)
        if present is not None:
            entry.update(status="exists in the image", uid=int(present[2]), gid=int(present[3]), home=present[5])
        else:
            primary = next((item["group"][0] for item in account["groups"] if item["primary"]), None)
            uid = _free_id({int(p[2]) for p in files["passwd"] if p[2].isdigit()}, int(old[2]), int(old[2]) < 1000)
            gid = gid_for.get(primary, old[3])
            row = [name, "x", str(uid), str(gid)] + old[4:7]
            files["passwd"].append(row)
            shadow = list(account["shadow"]) if account["shadow"] else [name, "!", "", "", "", "", "", "", ""]
            files["shadow"] = [s for s in files["shadow"] if s[0] != name] + [shadow]
            entry.update(status="created", uid=uid, gid=int(gid), home=old[5],
                         same_ids=(uid == int(old[2]) and int(gid) == int(old[3])))
        report.append(entry)
    return files, report


def fix_accounts(runner, root, carry):
    carried = (carry or {}).get("accounts") or []
    missing = (carry or {}).get("missing_accounts") or []
    if not carried:
        return {"status": "skipped", "reason": "no account to carry" + (
            " (not on the old system: %s)" % ", ".join(missing) if missing else ""), "accounts": []}
    files = {name: table(read_text(root, "/etc/" + name), fields)
             for name, fields in (("passwd", 7), ("group", 4), ("shadow", 2), ("gshadow", 4))}
    files, report = merge_accounts(files, carried)
    for name, mode in (("passwd", 0o644), ("group", 0o644), ("shadow", 0o640), ("gshadow", 0o640)):
        _rewrite(root, name, files[name], mode)
    for account, entry in zip(carried, report):
        keys = account.get("authorized_keys")
        home = inside(root, entry["home"])
        if not os.path.isdir(home):
            os.makedirs(home, mode=0o700)
            os.chown(home, entry["uid"], entry["gid"])
        if keys:
            ssh = os.path.join(home, ".ssh")
            if not os.path.isdir(ssh):
                os.mkdir(ssh, 0o700)
            os.chown(ssh, entry["uid"], entry["gid"])
            os.chmod(ssh, 0o700)
            path = os.path.join(ssh, "authorized_keys")
            atomic_write(path, keys.encode("utf-8"), 0o600)
            os.chown(path, entry["uid"], entry["gid"])
            entry["authorized_keys"] = True
    sudoers = []
    for name, text in sorted(((carry or {}).get("sudoers") or {}).items()):
        if not SUDOERS_NAME.match(name):
            continue
        directory = inside(root, "/etc/sudoers.d")
        os.makedirs(directory, mode=0o750, exist_ok=True)
        path = os.path.join(directory, name)
        atomic_write(path, text.encode("utf-8"), 0o440)
        os.chown(path, 0, 0)
        if runner.has("visudo"):
            rc, out, err = runner.run(["visudo", "-c", "-q", "-f", path], ok=None)
            if rc != 0:
                os.unlink(path)
                raise MigrationError("the sudo rule /etc/sudoers.d/%s carried from the old system does not pass "
                                     "visudo -c: %s" % (name, (err or out).strip()[-200:]))
        sudoers.append(name)
    return {"status": "done", "accounts": report, "sudoers": sudoers, "missing": missing}
