# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Block devices: what the kernel and blkid say about them, and finding one by what it is.

Every lookup of a device goes through here: by a spec (a path, ``UUID=``, ``LABEL=``,
``PARTUUID=``, ``PARTLABEL=``) or by an identity recorded earlier. Signatures are read
as they are on the devices now (``blkid -p``, never blkid's cache), and a spec that two
devices match is an error naming both: nothing here takes the first of several.

The kernel's view of a device (sysfs) has its one home here too: its device number,
whether it is a partition, the disk holding it, its size and its holders.
"""

from __future__ import annotations

import os
import re
import stat

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError

SYSFS = "/sys"
DEV = "/dev"
# Never probed: RAM disks, compressed RAM, floppies and CD/DVD drives (an empty drive stalls
# the probe, and a disc's label is nothing a migration looks for).
SKIPPED = ("ram", "zram", "fd", "sr")
SCSI_CDROM = "5"
# A logical volume's UUID, read from device-mapper (blkid has no field for it): what a store or root on LVM
# is known by, as a partition is by its PARTUUID.
LV_UUID = "LVM_LV_UUID"
# (spec prefix, the blkid field it matches)
SPECS = (("PARTUUID=", "PART_ENTRY_UUID"), ("PARTLABEL=", "PART_ENTRY_NAME"), ("LVUUID=", LV_UUID), ("UUID=", "UUID"),
         ("LABEL=", "LABEL"))
# (key in a recorded identity, blkid field, spec prefix it is found by, name in messages), strongest first
IDENTITY = (("partuuid", "PART_ENTRY_UUID", "PARTUUID", "PARTUUID"),
            ("lv_uuid", LV_UUID, "LVUUID", "logical volume UUID"), ("uuid", "UUID", "UUID", "filesystem UUID"),
            ("label", "LABEL", "LABEL", "label"))
DISK_IDENTITY = (("wwn", "WWN"), ("serial", "serial number"), ("ptuuid", "partition table UUID"))


# The kernel's view --------------------------------------------------------------------------------

def read_attribute(path):
    """The text of a kernel attribute file (sysfs, procfs), stripped; None when there is none."""
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def number_text(number):
    return "%d:%d" % (os.major(number), os.minor(number))


def device_number(path):
    """The block device's ``major:minor``."""
    return number_text(os.stat(path).st_rdev)


def sysfs(path):
    """The device's directory in sysfs."""
    return os.path.realpath(os.path.join(SYSFS, "dev", "block", device_number(path)))


def is_block_device(path):
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def is_partition(path):
    return os.path.exists(os.path.join(sysfs(path), "partition"))


def _node(directory):
    return os.path.join(DEV, os.path.basename(directory).replace("!", "/"))


def parent_disk(path):
    """The whole disk holding ``path`` (``path`` itself when it is a whole disk).

    A device-mapper device (a logical volume) is on the disk all its underlying devices are on; one
    spread over several disks is on none of them, and names itself.
    """
    directory = sysfs(path)
    if os.path.exists(os.path.join(directory, "partition")):
        return _node(os.path.dirname(directory))
    disks = {parent_disk(_node(name)) for name in _listdir(os.path.join(directory, "slaves"))}
    return disks.pop() if len(disks) == 1 else os.path.realpath(path)


def _listdir(directory):
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def lv_uuid(path):
    """The UUID of the logical volume ``path`` is (as ``lvs`` prints it), or None for any other device.

    Device-mapper names an LVM volume ``LVM-<VG UUID><LV UUID>``, both without their dashes.
    """
    try:
        uuid = read_attribute(os.path.join(sysfs(path), "dm", "uuid")) or ""
    except OSError:  # no such device: not a logical volume either
        return None
    if not uuid.startswith("LVM-") or len(uuid) != 4 + 64:
        return None
    bare = uuid[4 + 32:]
    cuts = (0, 6, 10, 14, 18, 22, 26, 32)
    return "-".join(bare[start:end] for start, end in zip(cuts, cuts[1:]))


def partition_number(path):
    """The partition's number as the kernel knows it (sysfs ``partition``, lsblk's PARTN)."""
    return int(read_attribute(os.path.join(sysfs(path), "partition")))


def partition_nodes(disk):
    """{number: device node} of the partitions the kernel shows for ``disk`` now, read from sysfs.

    Asked of the kernel rather than made from the disk's name: the name rule (``model.partition_name``)
    only says what a partition will be called, and a name from an earlier boot may be another disk's now.
    """
    directory = sysfs(disk)
    found = {}
    for name in sorted(os.listdir(directory)):
        number = read_attribute(os.path.join(directory, name, "partition"))
        if number and number.isdigit():
            found[int(number)] = _node(name)
    return found


def device_size(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(descriptor, 0, os.SEEK_END)
    finally:
        os.close(descriptor)


def holders(path):
    """What holds the device (device-mapper, md): the kernel names of its holders."""
    return _listdir(os.path.join(sysfs(path), "holders"))


def device_holding(path):
    """The block device the filesystem mounted at ``path`` is on, or None (tmpfs, btrfs' own numbers)."""
    directory = os.path.join(SYSFS, "dev", "block", number_text(os.stat(path).st_dev))
    node = _node(os.path.realpath(directory)) if os.path.exists(directory) else None
    return node if node and os.path.exists(node) else None


def candidates():
    """The device nodes worth probing: every block device with a size, but RAM disks and CD-ROMs."""
    base = os.path.join(SYSFS, "class", "block")
    found = []
    for name in sorted(os.listdir(base)):
        if name.startswith(SKIPPED) or read_attribute(os.path.join(base, name, "size")) in (None, "", "0"):
            continue
        if read_attribute(os.path.join(base, name, "device", "type")) == SCSI_CDROM:
            continue
        node = _node(name)
        if os.path.exists(node):
            found.append(node)
    return found


# What blkid reads on the devices ---------------------------------------------------------------------

def parse_export(text):
    """{device: {field: value}} from ``blkid -o export`` output for one or more devices."""
    found, current = {}, None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = re.sub(r"\\(.)", r"\1", value)  # blkid escapes the shell's special characters
        if key == "DEVNAME":
            current = found.setdefault(value, {})
        elif current is not None:
            current[key] = value
    return found


def probe(runner, paths):
    """{path: the signatures blkid reads on it now} for each of ``paths`` (real paths), in one run."""
    paths = [os.path.realpath(path) for path in paths]
    if not paths:
        return {}
    unused_rc, out, unused_err = runner.run(["blkid", "-p", "-o", "export"] + paths, ok=None)
    found = parse_export(out)
    values = {path: found.get(path, {}) for path in paths}
    for path in paths:
        uuid = lv_uuid(path) if path.startswith(DEV + "/dm-") else None
        if uuid:
            values[path] = dict(values[path], **{LV_UUID: uuid})
    return values


def blkid(runner, device):
    """The filesystem (or swap) signature on ``device`` now; {} when it holds something else (RAID, LVM)."""
    values = probe(runner, [device])[os.path.realpath(device)]
    return values if values.get("USAGE") in (None, "filesystem", "other") else {}


def parse_pairs(text):
    """{column: value} from one line of ``lsblk --pairs`` output."""
    return {key: re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)
            for key, value in re.findall(r'(\w+)="([^"]*)"', text)}


# Specs -------------------------------------------------------------------------------------------------

# Names the kernel gives disks, and their partitions, in the order it finds them: after a reboot with a
# stick in, or a disk added, the same name can be another disk's (sda a stick, the system disk sdb).
KERNEL_NAME = re.compile(r"/dev/(sd[a-z]+|vd[a-z]+|hd[a-z]+|xvd[a-z]+|nvme[0-9]+n[0-9]+|mmcblk[0-9]+)(p?[0-9]+)?$")


def is_kernel_name(spec):
    """Whether ``spec`` (an fstab spec, a path) is such a kernel name rather than a lasting name (UUID=, by-id)."""
    return bool(KERNEL_NAME.match(spec))


def parse_spec(spec):
    """(blkid field, value) for a UUID=, LABEL=, PARTUUID=, PARTLABEL= or LVUUID= spec; (None, path) for a path."""
    for prefix, field in SPECS:
        if spec.startswith(prefix):
            return field, spec[len(prefix):].strip('"')
    if spec.startswith("/"):
        return None, spec
    raise MigrationError("%s names no device; give a path such as /dev/sda2, or UUID=, LABEL=, PARTUUID= or "
                         "PARTLABEL=." % spec)


def same(field, recorded, now):
    if not recorded or not now:
        return False
    if field.lower().endswith("uuid"):  # hexadecimal: either case names the same
        return recorded.lower() == now.lower()
    return recorded == now


def select(devices, spec):
    """The devices of ``devices`` ({path: blkid values}) that ``spec`` names, sorted."""
    field, wanted = parse_spec(spec)
    if field is None:
        return [os.path.realpath(wanted)] if is_block_device(wanted) else []
    return sorted(path for path, values in devices.items() if same(field, wanted, values.get(field)))


def _listing(paths):
    return ", ".join(paths[:-1]) + " and " + paths[-1]


def only_one(spec, found, what=None):
    """The one device in ``found`` (None when it is empty); two or more are an error that names them."""
    if len(found) < 2:
        return found[0] if found else None
    field, unused = parse_spec(spec)
    other = "the other one" if len(found) == 2 else "the others"
    fix = ("remove %s or give it a new UUID" if field and field.endswith("UUID") else "remove or relabel %s") % other
    raise MigrationError("%s%s names %d devices, %s, where it must name one; %s." % (
        spec, " (%s)" % what if what else "", len(found), _listing(found), fix))


# Identity ------------------------------------------------------------------------------------------------

def record(device, values, disk):
    """A device's identity from its blkid ``values`` and its ``disk``'s identity.

    ``device`` is its kernel name when recorded: for the record only, kernel names change.
    """
    identity = {"device": device}
    for key, field, unused_prefix, unused_name in IDENTITY:
        if values.get(field):
            identity[key] = values[field].lower() if key.endswith("uuid") else values[field]
    identity["disk"] = disk
    return identity


def comparable(value):
    return " ".join((value or "").lower().split())


def normal_wwn(value):
    """A WWN as lsblk (``0x5000c5...``) and sysfs (``naa.5000c5...``) both spell it: ``5000c5...``."""
    value = comparable(value)
    for prefix in ("0x", "naa.", "eui."):
        if value.startswith(prefix):
            return value[len(prefix):]
    return value


def differences(now, recorded):
    """(what, recorded value, value now) for each recorded field the device no longer has.

    A disk's WWN or serial number that cannot be read now (no udev, another driver) is not a
    difference; everything blkid reads on the disk itself must match.
    """
    found = []
    for key, unused_field, unused_prefix, name in IDENTITY:
        if recorded.get(key) and not same(key, recorded[key], now.get(key)):
            found.append((name, recorded[key], now.get(key)))
    found.extend(("its disk's " + name, wanted, have)
                 for name, wanted, have in disk_differences(now.get("disk") or {}, recorded.get("disk") or {}))
    return found


def disk_differences(now, recorded):
    """(what, recorded value, value now) for each field of a disk's recorded identity the disk no longer has."""
    found = []
    for key, name in DISK_IDENTITY:
        wanted, have = recorded.get(key), now.get(key)
        normal = normal_wwn if key == "wwn" else comparable
        if wanted and (have or key == "ptuuid") and normal(wanted) != normal(have):
            found.append((name, wanted, have))
    return found


def check_disk(disk, now, recorded, refused):
    """Refuse ``refused`` (what was about to be done to ``disk``) when the disk's identity ``now`` is not the
    ``recorded`` one."""
    problems = disk_differences(now, recorded or {})
    if problems:
        said = ["%s %s where %s was recorded" % (name, have or "none", wanted) for name, wanted, have in problems]
        raise MigrationError("%s is not the disk recorded when the migration was planned (it has %s), so %s is "
                             "refused; put the recorded disk back, or run preflight again on the old system to record "
                             "this one." % (disk, _listing(said) if len(said) > 1 else said[0], refused))


def _mismatch(device, spec, problems, what):
    said = ["%s %s where %s was recorded" % (name, now or "none", recorded) for name, recorded, now in problems]
    return "%s, found by %s%s, has %s, so it is not the device recorded; put the recorded one back or record it " \
           "again." % (device, spec, " as %s" % what if what else "", _listing(said) if len(said) > 1 else said[0])


class Scan:
    """The block devices on this host as ``blkid -p`` reads them now, and lookups among them."""

    def __init__(self, runner, paths=None):
        self.runner = runner
        self.devices = probe(runner, candidates() if paths is None else paths)

    def values(self, path):
        """What blkid reads on ``path`` (probed now when the scan has not)."""
        real = os.path.realpath(path)
        if real not in self.devices:
            self.devices.update(probe(self.runner, [real]))
        return self.devices[real]

    def matching(self, spec):
        """Every device ``spec`` names (for checks that must hold for all of them)."""
        return select(self.devices, spec)

    def lookup(self, spec, what=None):
        """The one device ``spec`` names, or None; two are an error naming both."""
        return only_one(spec, self.matching(spec), what)

    def find(self, spec, what=None):
        """The one device ``spec`` names; none, or two, are an error."""
        device = self.lookup(spec, what)
        if device is None:
            named = " (%s)" % what if what else ""
            if parse_spec(spec)[0] is None:
                raise MigrationError("%s%s is not a block device on this host; give the device's path, such as /dev/sda2, "
                                     "or a UUID=, LABEL= or PARTUUID= spec." % (spec, named))
            raise MigrationError("no device has %s%s on this host; check the name, or make or attach the device first." % (
                spec, named))
        return device

    def disk_identity(self, disk):
        """The disk's stable identity: WWN and serial number (sysfs, else lsblk), partition table UUID."""
        directory = sysfs(disk)

        def attribute(name):  # the disk's own (NVMe, virtio), else its device's (SCSI, NVMe controller)
            return read_attribute(os.path.join(directory, name)) or \
                read_attribute(os.path.join(directory, "device", name))
        wwn, serial = attribute("wwid"), attribute("serial")
        if not (wwn and serial) and self.runner.has("lsblk"):
            rc, out, unused_err = self.runner.run(["lsblk", "--nodeps", "--noheadings", "--pairs", "--output",
                                                   "WWN,SERIAL", disk], ok=None)
            pairs = parse_pairs(out) if rc == 0 else {}
            wwn, serial = wwn or pairs.get("WWN"), serial or pairs.get("SERIAL")
        found = {"device": disk, "wwn": normal_wwn(wwn), "serial": (serial or "").strip(),
                 "ptuuid": self.values(disk).get("PTUUID", "").lower()}
        return {key: value for key, value in found.items() if value}

    def identity(self, device):
        """What identifies ``device`` later: PARTUUID, filesystem UUID, label, kernel name, and its disk's."""
        device = os.path.realpath(device)
        return record(device, self.values(device), self.disk_identity(parent_disk(device)))

    def find_recorded(self, identity, what=None):
        """The device with the recorded ``identity``: found by its strongest field, held to all the others."""
        for key, unused_field, prefix, unused_name in IDENTITY:
            if identity.get(key):
                spec = "%s=%s" % (prefix, identity[key])
                break
        else:
            raise MigrationError("nothing was recorded to find %s by." % (what or "the device"))
        device = self.find(spec, what)
        problems = differences(self.identity(device), identity)
        if problems:
            raise MigrationError(_mismatch(device, spec, problems, what))
        return device

    def is_the_recorded(self, device, identity):
        return not differences(self.identity(device), identity)

    def check_disk(self, disk, recorded, refused):
        """Refuse ``refused`` unless ``disk`` has the ``recorded`` disk identity: ask before anything destructive."""
        check_disk(disk, self.disk_identity(disk), recorded, refused)

    def disk_of(self, spec):
        """The whole disk holding the one device ``spec`` names (the system disk, for the root partition)."""
        return parent_disk(self.find(spec, "the system's root partition"))

    def on_disk(self, spec, disk, what=None):
        """(the one device ``spec`` names on ``disk`` or None, the devices it names on other disks).

        Devices elsewhere (a USB stick carrying the store's label) are set aside, never taken;
        two on ``disk`` are an error naming both.
        """
        found = self.matching(spec)
        here = [device for device in found if parent_disk(device) == disk]
        return only_one(spec, here, what), [device for device in found if device not in here]


# Without a scan of their own ---------------------------------------------------------------------------

def _scan_for(runner, spec):
    # A path names itself: only a spec needs every device read.
    return Scan(runner, [] if parse_spec(spec)[0] is None else None)


def lookup(runner, spec, what=None):
    """The one device ``spec`` names on this host now, or None; two are an error naming both."""
    return _scan_for(runner, spec).lookup(spec, what)


def find(runner, spec, what=None):
    """The one device ``spec`` names on this host now; none, or two, are an error."""
    return _scan_for(runner, spec).find(spec, what)


def identity(runner, device):
    """``device``'s identity, to record now and find it by later (``find_recorded``, ``is_the_recorded``)."""
    return Scan(runner, []).identity(device)


def find_recorded(runner, recorded, what=None):
    return Scan(runner).find_recorded(recorded, what)


def is_the_recorded(runner, device, recorded):
    """Whether ``device`` is still the one ``recorded`` describes: ask before anything destructive."""
    return Scan(runner, []).is_the_recorded(device, recorded)
