# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store as a logical volume, for a root on LVM: read the volume group, plan where the store's
extents come from, make the store and take it away again.

Sizes are whole extents. Shrinking goes filesystem first, then the logical volume; growing goes
logical volume first, then the filesystem: a logical volume smaller than its filesystem cuts off the
filesystem's tail. The store is found again by its volume group's and its own UUID, as a partition
store is by its PARTUUID.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Tuple

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import align_down, align_up, human
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk import fs as _fs
from ansible_collections.inplace.migration.plugins.module_utils.disk.model import FS_GRAIN, OFFLINE_SHRINK_ONLY
from ansible_collections.inplace.migration.plugins.module_utils.disk.planner import default_headroom
from ansible_collections.inplace.migration.plugins.module_utils.disk.space import store_partition_bytes

STORE_LV = "inplace-store"
REPORT = ["--reportformat", "json", "--units", "b", "--nosuffix"]
VG_FIELDS = "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count"
LV_FIELDS = "lv_name,lv_uuid,lv_path,lv_size,segtype,lv_tags"
PV_FIELDS = "pv_name,pv_uuid,pv_size"
# Without udev (the maintenance environment), LVM makes the device nodes itself instead of waiting
# for udev's rules to make them.
NO_UDEV = ["--config", "activation{udev_sync=0 udev_rules=0} devices{obtain_device_list_from_udev=0}"]
UDEV_CONTROL = "/run/udev/control"
# Tags on the store's logical volume saying what the root was before it: cleanup grows the root back to
# that and no further, leaving free what was free (tags hold letters, digits and _+.-/=!:&#).
ROOT_LV_TAG = "inplace_root_lv="
ROOT_EXTENTS_TAG = "inplace_root_extents="


def options_here(control=UDEV_CONTROL):
    """LVM's options on this host: ``NO_UDEV`` where udev does not run."""
    return [] if os.path.exists(control) else list(NO_UDEV)


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    uuid: str
    path: str
    size: int
    segtype: str = "linear"
    tags: Tuple[str, ...] = ()

    def tag(self, prefix):
        """The value of this volume's tag ``prefix``<value>, or None."""
        return next((tag[len(prefix):] for tag in self.tags if tag.startswith(prefix)), None)


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    uuid: str
    extent: int
    extents: int
    free_extents: int
    lvs: Tuple[LogicalVolume, ...]
    pvs: Tuple[str, ...]

    @property
    def free(self):
        return self.free_extents * self.extent

    def lv(self, name):
        return next((lv for lv in self.lvs if lv.name == name), None)


def _rows(text, kind):
    return json.loads(text)["report"][0][kind]


def parse_layout(vgs, lvs, pvs):
    """The volume group from the JSON of ``vgs``, ``lvs`` and ``pvs`` (``REPORT`` options) for one group."""
    rows = _rows(vgs, "vg")
    if len(rows) != 1:
        raise MigrationError("LVM reported %d volume groups where one was asked for." % len(rows))
    vg = rows[0]
    return VolumeGroup(
        name=vg["vg_name"], uuid=vg["vg_uuid"], extent=int(vg["vg_extent_size"]), extents=int(vg["vg_extent_count"]),
        free_extents=int(vg["vg_free_count"]),
        lvs=tuple(LogicalVolume(name=lv["lv_name"], uuid=lv["lv_uuid"], path=lv["lv_path"], size=int(lv["lv_size"]),
                                segtype=lv.get("segtype", "linear"),
                                tags=tuple(tag for tag in lv.get("lv_tags", "").split(",") if tag))
                  for lv in _rows(lvs, "lv")),
        pvs=tuple(pv["pv_name"] for pv in _rows(pvs, "pv")))


def root_volume(runner, device, resolve=None):
    """(volume group, logical volume) names of the logical volume whose device is ``device`` (a real path:
    /dev/dm-N, which LVM's own names lead to)."""
    resolve = resolve or os.path.realpath
    rows = _rows(runner.output(["lvs"] + REPORT + ["-o", "vg_name,lv_name,lv_path,lv_dm_path"]), "lv")
    found = [row for row in rows if device in (resolve(row["lv_path"]), resolve(row["lv_dm_path"]))]
    if len(found) != 1:
        raise MigrationError("LVM lists %d logical volumes for the root's device %s, not one." % (len(found), device))
    return found[0]["vg_name"], found[0]["lv_name"]


def facts(vg, lv_name, disk_of):
    """What preflight reports of a root on the logical volume ``lv_name``; ``disk_of`` maps a PV to its disk."""
    root = _root_lv(vg, lv_name)
    return {"vg": vg.name, "vg_uuid": vg.uuid, "lv": root.name, "lv_uuid": root.uuid, "lv_bytes": root.size,
            "extent_bytes": vg.extent, "free_extents": vg.free_extents, "free_bytes": vg.free, "pvs": list(vg.pvs),
            "disks": sorted({disk_of(pv) for pv in vg.pvs})}


class Lvm:
    """LVM's tools for one volume group; ``options`` go to every command (``NO_UDEV`` where udev does not run)."""

    def __init__(self, runner, vg, options=()):
        self.runner = runner
        self.vg = vg
        self.options = list(options)

    def _run(self, command, *args):
        return self.runner.run([command] + self.options + list(args))

    def read(self):
        def report(command, fields, which):
            return self.runner.output([command] + self.options + REPORT + ["-o", fields] + which)
        # pvs takes PV names as arguments, not a volume group's.
        return parse_layout(report("vgs", VG_FIELDS, [self.vg]), report("lvs", LV_FIELDS, [self.vg]),
                            report("pvs", PV_FIELDS, ["--select", "vg_name=%s" % self.vg]))

    def activate(self):
        """Activate the group's logical volumes (udev may have done so already; it is harmless twice)."""
        self._run("vgchange", "--activate", "y", self.vg)

    def create(self, name, extents, wipe=True, tags=()):
        tagging = [option for tag in tags for option in ("--addtag", tag)]
        self._run("lvcreate", "--yes", "--wipesignatures", "y" if wipe else "n", "--zero", "y" if wipe else "n",
                  "--extents", str(extents), *tagging, "--name", name, self.vg)

    def reduce(self, name, extents):
        self._run("lvreduce", "--yes", "--extents", str(extents), "%s/%s" % (self.vg, name))

    def extend(self, name, extents):
        self._run("lvextend", "--extents", str(extents), "%s/%s" % (self.vg, name))

    def remove(self, name):
        self._run("lvremove", "--yes", "%s/%s" % (self.vg, name))


@dataclass(frozen=True)
class StorePlan:
    vg: VolumeGroup
    root: LogicalVolume
    name: str
    store_extents: int
    root_extents: int  # the root logical volume's extents after the plan; unchanged when free extents suffice
    fs_size: Optional[int]  # the root filesystem's size to shrink to first; None when it keeps its size
    exists: bool = False

    @property
    def shrinks(self):
        return self.root_extents * self.vg.extent < self.root.size

    @property
    def descriptions(self):
        steps = []
        if self.exists:
            return steps
        if self.fs_size is not None:
            steps.append("shrink the filesystem on %s to %s" % (self.root.path, human(self.fs_size)))
        if self.shrinks:
            steps.append("reduce the logical volume %s/%s from %s to %s" % (
                self.vg.name, self.root.name, human(self.root.size), human(self.root_extents * self.vg.extent)))
        steps.append("create the logical volume %s/%s of %s and format it" % (
            self.vg.name, self.name, human(self.store_extents * self.vg.extent)))
        return steps


def _root_lv(vg, root_name):
    root = vg.lv(root_name)
    if root is None:
        raise MigrationError("the volume group %s has no logical volume %s." % (vg.name, root_name))
    return root


def _lowest_root_bytes(vg, root_fs, min_free):
    """The smallest the root logical volume can become (whole extents), or None when its filesystem
    cannot shrink."""
    if root_fs is None or root_fs.type not in OFFLINE_SHRINK_ONLY or root_fs.min_size is None or root_fs.size is None:
        return None
    headroom = default_headroom(root_fs.used) if min_free is None else min_free
    return align_up(align_up(root_fs.min_size + headroom, FS_GRAIN), vg.extent)


def largest_store(vg, root_name, root_fs, min_free=None):
    """Bytes (whole extents) the largest store logical volume could have: the free extents plus what the
    root could give."""
    root = _root_lv(vg, root_name)
    lowest = _lowest_root_bytes(vg, root_fs, min_free)
    give = max(0, root.size - lowest) if lowest is not None else 0
    return vg.free + give


def plan_store(vg, root_name, store_bytes, root_fs, min_free=None, name=STORE_LV):
    """Where a store logical volume of at least ``store_bytes`` comes from: the volume group's free extents,
    else the end of the root logical volume, whose (ext, offline) filesystem ``root_fs`` shrinks first."""
    root = _root_lv(vg, root_name)
    root_extents = root.size // vg.extent
    existing = vg.lv(name)
    if existing is not None:
        if existing.size < store_bytes:
            raise MigrationError("the logical volume %s/%s is %s, smaller than the %s the store needs; remove it "
                                 "(lvremove %s/%s) and run again." % (vg.name, name, human(existing.size),
                                                                      human(store_bytes), vg.name, name))
        return StorePlan(vg, root, name, existing.size // vg.extent, root_extents, None, exists=True)
    store_extents = -(-store_bytes // vg.extent)
    if store_extents <= vg.free_extents:
        return StorePlan(vg, root, name, store_extents, root_extents, None)
    if root.segtype != "linear":
        raise MigrationError("the volume group %s has %s free, less than the store's %s, and its root logical "
                             "volume %s is %s, not linear, so it is not shrunk; free space in the volume group "
                             "(vgextend, or lvreduce another volume)." % (
                                 vg.name, human(vg.free), human(store_bytes), root.name, root.segtype))
    new_root = (root_extents - (store_extents - vg.free_extents)) * vg.extent
    lowest = _lowest_root_bytes(vg, root_fs, min_free)
    if lowest is None:
        raise MigrationError("the volume group %s has %s free, less than the store's %s, and the %s filesystem on "
                             "%s cannot be shrunk offline here; free space in the volume group." % (
                                 vg.name, human(vg.free), human(store_bytes),
                                 root_fs.type if root_fs else "unknown", root.path))
    if new_root < lowest:
        raise MigrationError("there is no room for the store in the volume group %s: it needs %s, %s are free and "
                             "%s can give %s (its filesystem needs %s plus headroom), so %s is missing." % (
                                 vg.name, human(store_extents * vg.extent), human(vg.free), root.path,
                                 human(max(0, root.size - lowest)), human(root_fs.min_size),
                                 human(store_extents * vg.extent - largest_store(vg, root_name, root_fs, min_free))))
    fs_size = align_down(new_root, FS_GRAIN) if root_fs.size > new_root else None
    return StorePlan(vg, root, name, store_extents, new_root // vg.extent, fs_size)


def make_store(lvm, plan, label, fstype="ext4", root_extents_before=None):
    """Carry out ``plan`` (root unmounted): shrink the root's filesystem, then its logical volume, then create
    and format the store, tagged with the root's size before (``root_extents_before``, default its size now).
    Returns the store's logical volume as read back. A store made by a run cut off before it was formatted
    is formatted now; one with a filesystem labelled ``label`` is left as it is."""
    if plan.exists:
        store = plan.vg.lv(plan.name)
        found = _devices.blkid(lvm.runner, store.path)
        if not found.get("TYPE"):
            _fs.make(lvm.runner, store.path, fstype, label)
        elif found.get("LABEL") != label:
            raise MigrationError("the logical volume %s/%s holds a %s filesystem labelled %s, not the store's %s; "
                                 "remove it (lvremove %s/%s) if it is not needed, and run again." % (
                                     plan.vg.name, plan.name, found["TYPE"], found.get("LABEL") or "(none)", label,
                                     plan.vg.name, plan.name))
        return store
    if plan.fs_size is not None:
        _fs.kind("ext4").shrink(lvm.runner, plan.root.path, plan.fs_size, None)
        size = _fs.key_values(lvm.runner.output(["dumpe2fs", "-h", plan.root.path]))
        if int(size["Block count"]) * int(size["Block size"]) > plan.root_extents * plan.vg.extent:
            raise MigrationError("the filesystem on %s is still larger than %s after resize2fs; the logical volume "
                                 "was not reduced." % (plan.root.path, human(plan.root_extents * plan.vg.extent)))
    if plan.shrinks:
        lvm.reduce(plan.root.name, plan.root_extents)
    before = plan.root.size // plan.vg.extent if root_extents_before is None else root_extents_before
    lvm.create(plan.name, plan.store_extents, tags=(ROOT_LV_TAG + plan.root.name, ROOT_EXTENTS_TAG + str(before)))
    after = lvm.read()
    store, root = after.lv(plan.name), after.lv(plan.root.name)
    if store is None or store.size < plan.store_extents * plan.vg.extent or root.size != plan.root_extents * after.extent:
        raise MigrationError("after making the store the volume group %s is not as planned (root %s, store %s); "
                             "stopping." % (after.name, human(root.size) if root else "gone",
                                            human(store.size) if store else "missing"))
    _fs.make(lvm.runner, store.path, fstype, label)
    return store


def remove_store(lvm, root_name, root_extents, name=STORE_LV, root_mountpoint=None):
    """Remove the store logical volume and grow the root back to ``root_extents`` (its size before the store,
    as recorded when the store was planned), the logical volume first and then its filesystem; free extents
    the volume group had before stay free. Returns the root's logical volume as read back; safe to run again."""
    vg = lvm.read()
    store = vg.lv(name)
    if store is not None:
        # Leave no store label for blkid to find if the extents are handed out again.
        lvm.runner.run(["wipefs", "-a", "-q", store.path])
        lvm.remove(name)
        vg = lvm.read()
    root = _root_lv(vg, root_name)
    if root.size // vg.extent < root_extents:
        if root_extents - root.size // vg.extent > vg.free_extents:
            raise MigrationError("the volume group %s has %d free extents and the root %s needs %d to grow back to "
                                 "its size before the store; stopping." % (
                                     vg.name, vg.free_extents, root.path, root_extents - root.size // vg.extent))
        lvm.extend(root_name, root_extents)
        root = _root_lv(lvm.read(), root_name)
    _fs.kind("ext4").grow(lvm.runner, root.path, root_mountpoint)
    return root


def group_layout(vg):
    """The volume group as plain dicts, for module results and the report."""
    return {"vg": vg.name, "extent_bytes": vg.extent, "free_bytes": vg.free,
            "volumes": [{"name": lv.name, "size": lv.size} for lv in vg.lvs]}


def render_group(vg):
    """The volume group as text, one line per logical volume and the free space, for --diff."""
    lines = ["%-20s %12s" % (lv.name, human(lv.size)) for lv in vg.lvs]
    return "\n".join(lines + ["%-20s %12s" % ("(free)", human(vg.free))]) + "\n"


def _planned_group(plan):
    """The volume group as ``plan`` leaves it."""
    if plan.exists:
        return plan.vg
    root = LogicalVolume(plan.root.name, plan.root.uuid, plan.root.path, plan.root_extents * plan.vg.extent,
                         plan.root.segtype, plan.root.tags)
    store = LogicalVolume(plan.name, "", "/dev/%s/%s" % (plan.vg.name, plan.name), plan.store_extents * plan.vg.extent)
    lvs = tuple(root if lv.name == root.name else lv for lv in plan.vg.lvs) + (store,)
    used = sum(lv.size for lv in lvs) // plan.vg.extent
    return VolumeGroup(plan.vg.name, plan.vg.uuid, plan.vg.extent, plan.vg.extents, plan.vg.extents - used, lvs,
                       plan.vg.pvs)


def store_volume(runner, vg_name, root_name, usable, label, vg_uuid=None, shrink=True, min_free=None,
                 check_mode=False, fstype="ext4"):
    """store_volume's run: the store as a logical volume holding ``usable`` bytes of data (see ``plan_store``)."""
    lvm = Lvm(runner, vg_name, options_here())
    if not check_mode:
        lvm.activate()
    group = lvm.read()
    if vg_uuid and group.uuid.lower() != vg_uuid.lower():
        raise MigrationError("the volume group %s has the UUID %s where %s was recorded when the migration was "
                             "planned, so it is not the root's; making the store is refused." % (
                                 vg_name, group.uuid, vg_uuid))
    root = _root_lv(group, root_name)
    root_fs = _fs.probe(runner, root.path) if shrink else None
    # Sized as a store partition is: the filesystem's own overhead measured with this host's mkfs.
    plan = plan_store(group, root_name, store_partition_bytes(runner, fstype, usable), root_fs, min_free)
    planned = _planned_group(plan)
    result = {"changed": not plan.exists, "actions": plan.descriptions, "layout_before": group_layout(group),
              "diff": {"before": render_group(group), "after": render_group(planned),
                       "before_header": vg_name, "after_header": vg_name}}
    if check_mode:
        store = planned.lv(plan.name)
        return dict(result, layout_after=group_layout(planned), store={
            "device": None, "path": store.path, "lv_uuid": store.uuid or None, "size": store.size, "label": label,
            "uuid": None})
    store = make_store(lvm, plan, label, fstype)
    after = lvm.read()
    found = _devices.blkid(runner, store.path)
    return dict(result, layout_after=group_layout(after), store={
        "device": os.path.realpath(store.path), "path": store.path, "lv_uuid": store.uuid, "size": store.size,
        "label": found.get("LABEL"), "uuid": found.get("UUID")})


def volume_of(runner, lv_uuid):
    """(Lvm for its volume group, the logical volume) with the UUID ``lv_uuid``, or (None, None) when LVM lists
    none: a store removed already."""
    options = options_here()
    rows = _rows(runner.output(["lvs"] + options + REPORT + ["-o", "vg_name,lv_uuid", "--select",
                                                             "lv_uuid=%s" % lv_uuid]), "lv")
    if not rows:
        return None, None
    lvm = Lvm(runner, rows[0]["vg_name"], options)
    return lvm, next(lv for lv in lvm.read().lvs if lv.uuid.lower() == lv_uuid.lower())


def root_to_restore(store):
    """``{"vg", "lv", "extents"}``: the root and its size before the store, from the store's tags; None when the
    store carries none (it was made by hand)."""
    lv, extents = store.tag(ROOT_LV_TAG), store.tag(ROOT_EXTENTS_TAG)
    if not lv or not (extents or "").isdigit():
        return None
    return {"lv": lv, "extents": int(extents)}
