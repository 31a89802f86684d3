# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Block devices: what the kernel and blkid say about them, and finding one by what it is.

Every lookup of a device by a spec (a path, UUID=, LABEL=, PARTUUID=, PARTLABEL=) goes
through here, reading the signatures on the devices as they are now (never blkid's
cache).
"""

from __future__ import annotations

import os

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError


def blkid(runner, device):
    """Low-level probe of the signatures on ``device`` (not blkid's cache)."""
    rc, out, unused_err = runner.run(["blkid", "-p", "-o", "export", device], ok=(0, 2))
    values = {}
    for line in out.splitlines():
        key, unused_sep, value = line.partition("=")
        values[key] = value
    if rc == 2 or values.get("USAGE") not in (None, "filesystem", "other"):
        return {}
    return values


def resolve(runner, source):
    """The device node for a device path or a LABEL=, UUID=, PARTUUID= spec."""
    if source.startswith("/"):
        return os.path.realpath(source)
    rc, out, unused_err = runner.run(["blkid", "--list-one", "--output", "device", "--match-token", source], ok=None)
    if rc != 0 or not out.strip():
        raise MigrationError("no filesystem matches %s on this host." % source)
    return out.strip()


def device_number(path):
    rdev = os.stat(path).st_rdev
    return "%d:%d" % (os.major(rdev), os.minor(rdev))


def sysfs(path):
    return os.path.realpath("/sys/dev/block/" + device_number(path))


def is_partition(path):
    return os.path.exists(os.path.join(sysfs(path), "partition"))


def parent_disk(path):
    return "/dev/" + os.path.basename(os.path.dirname(sysfs(path)))


def device_size(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(descriptor, 0, os.SEEK_END)
    finally:
        os.close(descriptor)


def holders(path):
    try:
        return sorted(os.listdir(os.path.join(sysfs(path), "holders")))
    except OSError:
        return []


class BlockIndex:
    """Every block device with content, as ``blkid -p`` reads it now (no cache)."""

    def __init__(self, runner):
        self.runner = runner
        self.devices = {}
        for name in sorted(os.listdir("/sys/class/block")):
            path = "/dev/" + name
            try:
                with open("/sys/class/block/%s/size" % name) as handle:
                    if int(handle.read().strip() or 0) == 0:
                        continue
            except (OSError, ValueError):
                continue
            if not os.path.exists(path) or name.startswith(("ram", "zram")):
                continue
            self.devices[path] = self.probe(path)

    def probe(self, path):
        rc, out, unused_err = self.runner.run(["blkid", "-p", "-o", "export", path], ok=None)
        values = {}
        for line in out.splitlines():
            key, unused_sep, value = line.partition("=")
            values[key] = value
        return values

    def resolve(self, spec):
        """The device paths ``spec`` (a path, UUID=, LABEL=, PARTUUID=, PARTLABEL=) names here now."""
        fields = {"UUID=": "UUID", "LABEL=": "LABEL", "PARTUUID=": "PART_ENTRY_UUID", "PARTLABEL=": "PART_ENTRY_NAME"}
        for prefix, field in fields.items():
            if spec.startswith(prefix):
                wanted = spec[len(prefix):].strip('"')
                if field.endswith("UUID"):  # hexadecimal: either case names the same
                    return sorted(p for p, v in self.devices.items() if v.get(field, "").lower() == wanted.lower())
                return sorted(p for p, v in self.devices.items() if v.get(field) == wanted)
        if spec.startswith("/dev/") and os.path.exists(spec):
            real = os.path.realpath(spec)
            return [real]
        return []
