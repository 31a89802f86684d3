# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""preflight_facts' run: inspect the old system, estimate the profiles, plan the store, judge the image.

Each probe that fails becomes one inhibitor sentence instead of an error, so a PC is
refused with every reason at once and the playbook never has to guess at a missing
result. The store is sized once, here, and the plan for the later phases comes out whole
or not at all.
"""

from __future__ import annotations

from dataclasses import replace

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import MiB, parse_size
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk import fs as _fs
from ansible_collections.inplace.migration.plugins.module_utils.disk import lvm as _lvm
from ansible_collections.inplace.migration.plugins.module_utils.disk import model as _model
from ansible_collections.inplace.migration.plugins.module_utils.disk import planner as _planner
from ansible_collections.inplace.migration.plugins.module_utils.disk.model import SHRINKABLE
from ansible_collections.inplace.migration.plugins.module_utils.disk.space import PartitionSpace, store_partition_bytes
from ansible_collections.inplace.migration.plugins.module_utils.preflight import inhibitors as _inhibitors
from ansible_collections.inplace.migration.plugins.module_utils.preflight.inspect import inspect
from ansible_collections.inplace.migration.plugins.module_utils.profiles.capture import Capture

STORE_FSTYPE = "ext4"
# Where profile_capture will find the store; preflight only reads a manifest that may be there.
STORE_MOUNT = "/run/inplace/store"
# What is known of a system whose inspection failed (the failure is an inhibitor).
UNKNOWN_SYSTEM = {"root": {}, "boot": {}, "memory_mib": None, "on_battery": None, "inhibitors": []}


def _attempt(what, sentences, function, *args, **kwargs):
    """``function(*args, **kwargs)``, or None with the failure added to ``sentences``."""
    try:
        return function(*args, **kwargs)
    except Exception as error:  # pylint: disable=broad-except
        # Whatever a probe hits, the PC is refused with a sentence, never left with a traceback.
        sentences.append(_inhibitors.probe_failed(what, error))
        return None


def estimate_profiles(runner, users, exclude_users, exclude, root="/"):
    """profile_capture's estimate (its check mode) of the profiles of the system at ``root``."""
    result = Capture(runner, root, STORE_MOUNT, users=users, exclude_users=exclude_users,
                     exclude=exclude).run(check_mode=True)
    return {
        "users": [{key: user.get(key) for key in ("name", "uid", "files", "bytes", "estimated_archive_bytes")}
                  for user in result["users"]],
        # Accounts whose homes the reimage keeps (a partition of their own) or that have none: not archived.
        "homes_not_archived": result.get("homes_not_archived", []),
        "compression_ratio": result["compression_ratio"],
        "compression_estimator": result["compression_estimator"],
        "estimated_archive_bytes": result["estimated_archive_bytes"],
        "store_bytes_needed": result["store_bytes_needed"],
    }


def offline(disk):
    """The disk as the maintenance environment will see it: nothing of it mounted (as partition_space's
    plan_offline treats it)."""
    return disk.with_partitions(replace(p, fs=replace(p.fs, mountpoint=None)) if p.fs else p
                                for p in disk.partitions)


def plan_store(runner, disk_path, need, label, shrink, root=None):
    """partition_space's plan (check mode, plan_offline) for a store holding ``need['total']`` bytes.

    Reading the disk needs no pyparted (disk/table.py), which the old system may not have. When
    there is no room, the sentence says how much is missing: the largest store the planner can
    make on this disk is found on the same model. ``root`` (inspect's facts["root"]) names the
    root's filesystem, so a root that cannot shrink (xfs) is named as the reason.
    """
    space = PartitionSpace(runner, disk_path, label)
    try:
        return space.present(need["total"], shrink, None, STORE_FSTYPE, check_mode=True, plan_offline=True)
    except MigrationError as error:
        sentence = _no_room_sentence(runner, space, disk_path, need, label, shrink, error, root or {})
        if sentence is None:
            raise
        raise MigrationError(sentence)


def plan_store_volume(runner, disk_path, lvm, root, need, label, shrink):
    """The store as a logical volume in the root's volume group (``disk.lvm.plan_store``), for a root on LVM.

    The disk's partitions stay as they are: the volume group's free extents make the store, else the
    root's logical volume gives its end, its filesystem shrunk first (offline, in the maintenance
    environment). ``shrink=none`` takes free extents only.
    """
    if shrink not in ("auto", "none"):
        raise MigrationError("shrink=%s names a partition, and this PC's root is on the logical volume %s/%s: its "
                             "store is a logical volume, made from the volume group's free space or the root's end; "
                             "set inplace_shrink to auto or none." % (shrink, lvm["vg"], lvm["lv"]))
    group = _lvm.Lvm(runner, lvm["vg"]).read()
    root_fs = _fs.probe(runner, root["device"]) if shrink == "auto" else None
    plan = _lvm.plan_store(group, lvm["lv"], store_partition_bytes(runner, STORE_FSTYPE, need["total"]), root_fs)
    layout = _model.layout(PartitionSpace(runner, disk_path, label).read())
    return {
        "logical_volume": {"vg": group.name, "vg_uuid": group.uuid, "name": plan.name,
                           "size": plan.store_extents * group.extent, "extents": plan.store_extents,
                           "root_lv": plan.root.name, "root_lv_uuid": plan.root.uuid,
                           "root_extents_before": plan.root.size // group.extent,
                           "root_extents": plan.root_extents, "root_fs_size": plan.fs_size},
        "actions": plan.descriptions, "notes": [], "layout_before": layout, "layout_after": layout,
    }


def _no_room_sentence(runner, space, disk_path, need, label, shrink, error, root):
    """The no-room sentence when room is what is lacking; None when the planner refused for another reason."""
    unshrinkable_root = root.get("fstype") is not None and root.get("fstype") not in SHRINKABLE
    try:
        disk = offline(space.read())
        wanted = store_partition_bytes(runner, STORE_FSTYPE, need["total"])
        _planner.refuse_full_msdos(disk)  # a layout no store fits in is the problem, whatever the root
        if shrink not in ("auto", "none") and disk.find(shrink) is None:
            return None  # a shrink= that names nothing: the planner's sentence says so
        if not unshrinkable_root and not _inhibitors.store_fits(disk, MiB, label, shrink):
            return None  # not even the smallest store: the layout is the problem, and the planner says which
        largest = _inhibitors.largest_store(disk, label, shrink)
    except MigrationError:
        return None  # the planner's own sentence says it better than a second failure would
    if largest >= wanted:
        return None
    if unshrinkable_root:
        # The planner's advice (delete files) cannot help an xfs root: only room beside it can.
        return _inhibitors.unshrinkable_root_no_room(root, disk_path, wanted, largest)
    return _inhibitors.no_room(disk_path, need, wanted, largest, error)


def disk_identity(runner, disk):
    """What identifies the disk later, whatever its kernel name then (WWN, serial number, partition table UUID)."""
    identity = _devices.Scan(runner, []).disk_identity(disk)
    if not identity.get("ptuuid"):
        raise MigrationError("%s has no partition table UUID to know it by later." % disk)
    return identity


def size_or_zero(value, option):
    """Bytes in ``value`` (see parse_size); nothing, or zero, is 0."""
    if value in (None, "") or str(value).strip() == "0":
        return 0
    return parse_size(value, option)


def preflight(runner, maintenance_bytes=0, min_ram_mib=768, profiles=None, store=None, image=None):
    """Everything preflight learns about this PC, the plan for the later phases, and the inhibitors."""
    sentences = []
    facts = _attempt("inspecting the system", sentences, inspect, runner, min_ram_mib, maintenance_bytes) or dict(
        UNKNOWN_SYSTEM)
    sentences.extend(facts.pop("inhibitors"))
    result = dict(facts, image=None, profiles=None, store=None, plan=None)

    image_bytes, identity = 0, None
    if image is not None:
        image_bytes, image_sentences = _inhibitors.image_findings(image)
        sentences.extend(image_sentences)
        result["image"] = {"src": image["src"], "bytes": image_bytes}
        chain = image.get("boot_chain") or {}
        if facts.get("uefi"):
            sentences.extend(_inhibitors.secure_boot_findings(facts["uefi"]["secure_boot"],
                                                              chain if chain.get("checked") else None))
        if facts.get("lvm") and chain.get("checked") and not chain.get("lvm", True):
            sentences.append(_inhibitors.IMAGE_WITHOUT_LVM % facts["lvm"]["vg"])

    if profiles is not None:
        result["profiles"] = _attempt("estimating the profiles", sentences, estimate_profiles, runner,
                                      profiles.get("users") or ["auto"], profiles.get("exclude_users") or [],
                                      profiles.get("exclude"))

    if store is not None:
        margin = size_or_zero(store.get("margin"), "store margin")
        need = _inhibitors.store_need((result["profiles"] or {}).get("store_bytes_needed", 0), image_bytes,
                                      maintenance_bytes, margin)
        result["store"] = {"need": need}
        if facts.get("disk"):
            identity = _attempt("reading the disk's identity", sentences, disk_identity, runner, facts["disk"])
            label, shrink = store.get("label") or "INPLACE-STORE", store.get("shrink") or "auto"
            if facts.get("lvm"):
                planned = _attempt("planning the store", sentences, plan_store_volume, runner, facts["disk"],
                                   facts["lvm"], facts["root"], need, label, shrink)
            else:
                planned = _attempt("planning the store", sentences, plan_store, runner, facts["disk"], need, label,
                                   shrink, facts["root"])
                if planned is not None:
                    planned = dict(planned, partition=planned["store"])
            if planned is not None:
                result["store"].update({key: planned[key] for key in (
                    "partition", "logical_volume", "actions", "notes", "layout_before", "layout_after") if key in planned})

    result["inhibitors"] = sentences
    store_made = (result["store"] or {}).get("partition") or (result["store"] or {}).get("logical_volume")
    if not sentences and store_made:
        result["plan"] = {
            "disk": facts["disk"],
            # The kernel name above is for people; the later phases find the disk by the root's PARTUUID
            # and hold it to this identity before changing it.
            "disk_identity": identity,
            # For a root on LVM, the PARTUUID of its physical volume: what the disk is found by.
            "root_partuuid": facts["root"]["partuuid"],
            # What the root filesystem's device is found by: its partition, or its logical volume's path.
            "root_device": facts["root"].get("lv_path") or "PARTUUID=" + facts["root"]["partuuid"],
            "root_uuid": facts["root"]["uuid"],
            "store_bytes": store_made["size"],
            "lvm": result["store"].get("logical_volume"),
            "store_usable_bytes": result["store"]["need"]["total"],
            "image_bytes": image_bytes,
            "boot_separate": facts["boot"]["separate"],
            "boot_uuid": facts["boot"]["uuid"],
            "firmware": "uefi" if facts.get("uefi") else "bios",
            "esp_partuuid": (facts.get("uefi") or {}).get("esp_partuuid"),
        }
    return result
