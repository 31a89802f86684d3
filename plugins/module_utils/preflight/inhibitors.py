# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preflight's findings as sentences: what the controller learnt about the image, what the store
needs, and how a probe that failed is told to the user.

Pure functions only (no device, no network), so every sentence a PC can be refused with
is reached by a unit test.
"""

from __future__ import annotations

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import MiB, human
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk.planner import plan_present

HTTP_OK = 200
SEPARATE_BOOT_FSTYPES = ("ext2", "ext3", "ext4")


def is_url(src):
    return str(src).startswith(("http://", "https://"))


def image_findings(image):
    """The image's size and the inhibitors about it, from what the playbook's probes found.

    ``image`` holds ``src`` and ``checksum`` (as asked for), ``url_status``, ``url_error`` and
    ``url_bytes`` (this PC's HEAD request, for a URL) and ``file`` (the controller's ``stat`` of
    its local copy, when it checked one). Returns ``(bytes, inhibitors)``; an unknown size is 0.
    """
    src = image["src"]
    found = image.get("file")
    inhibitors = []
    if is_url(src):
        if image.get("url_status") != HTTP_OK:
            inhibitors.append(image_unreachable(src, image.get("url_error") or image.get("url_status")))
        size = int(image.get("url_bytes") or 0)
    else:
        size = int(found.get("size") or 0) if found and found.get("exists") else 0
    if found is not None:
        sha256 = found.get("checksum") if found.get("exists") else None
        if ("sha256:%s" % (sha256 or "")).lower() != str(image["checksum"]).lower():
            inhibitors.append(image_checksum_mismatch(found.get("path") or src, sha256, image["checksum"]))
    return size, inhibitors


def image_unreachable(src, why):
    return "the image %s is not reachable from this PC (%s)." % (src, why or "no answer")


def image_checksum_mismatch(path, sha256, wanted):
    return "the image %s has sha256 %s, not the %s asked for." % (
        path, sha256 or "none: it does not exist", wanted)


def kernel_name_mounts(entries):
    """One sentence for each fstab entry (``homes.read_fstab``) other than the root's that names its device by
    a kernel name: the new system keeps the old system's mounts, and after a reboot with a stick in that name
    can be the stick's, which would then be mounted and written."""
    return ["the old system's fstab mounts %s by the kernel name %s, which can name another disk (a USB stick) "
            "after a reboot; write UUID= with the UUID blkid shows for %s there instead." % (
                entry["point"], entry["spec"], entry["spec"])
            for entry in entries if entry["point"] != "/" and _devices.is_kernel_name(entry["spec"])]


def store_need(profiles_bytes, image_bytes, maintenance_bytes, margin_bytes):
    """What the store must hold (usable bytes), and of what."""
    parts = {"profiles": int(profiles_bytes), "image": int(image_bytes), "maintenance": int(maintenance_bytes),
             "margin": int(margin_bytes)}
    return dict(parts, total=sum(parts.values()))


def describe_need(need):
    return "profiles %s, image %s, maintenance files %s, margin %s" % (
        human(need["profiles"]), human(need["image"]), human(need["maintenance"]), human(need["margin"]))


def store_fits(disk, partition_bytes, label, shrink):
    """Whether the planner makes room for a store partition of ``partition_bytes`` on ``disk``."""
    try:
        plan_present(disk, partition_bytes, label=label, shrink=shrink)
    except MigrationError:
        return False
    return True


def largest_store(disk, label, shrink):
    """The largest store partition (whole MiB) the planner can make room for on ``disk``; 0 if none.

    Bisection over the pure planner: a larger store never fits where a smaller one does not.
    """
    low, high = 0, disk.size // MiB
    while low < high:
        middle = (low + high + 1) // 2
        if store_fits(disk, middle * MiB, label, shrink):
            low = middle
        else:
            high = middle - 1
    return low * MiB


def no_room(disk_path, need, partition_bytes, largest, reason):
    """The sentence for a disk that cannot give the store what it needs."""
    return ("there is no room for the store on %s: it needs a partition of %s to hold %s (%s), at most %s can be "
            "made, so %s is missing (%s)." % (
                disk_path, human(partition_bytes), human(need["total"]), describe_need(need), human(largest),
                human(partition_bytes - largest), str(reason).rstrip(".")))


def unshrinkable_root_no_room(root, disk_path, partition_bytes, largest):
    """The sentence for a root whose filesystem cannot shrink (xfs) on a disk with no other room for the store."""
    missing = partition_bytes - largest
    return ("the root filesystem on %s is %s, which cannot be shrunk, and the rest of %s has room for a store of "
            "at most %s where %s is needed; leave %s more of unallocated space on %s, or give it a /home (ext4 or "
            "btrfs) on a partition of its own with %s free to shrink." % (
                root["device"], root["fstype"], disk_path, human(largest), human(partition_bytes), human(missing),
                disk_path, human(missing)))


def probe_failed(what, error):
    """One sentence for a probe that failed: our own refusals as they are, anything else named."""
    if isinstance(error, MigrationError):
        return str(error)
    return "%s failed unexpectedly (%s: %s)." % (what, type(error).__name__, error)


def uefi_findings(uefi):
    """The inhibitors for a UEFI PC from what preflight found of its boot (``inspect.uefi_facts``): the ESP whose
    GRUB stub the migration rewrites must be known, mounted where its GRUB can be read, and hold Debian's signed
    GRUB (docs/architecture.md, "Booting: UEFI"). Secure Boot is judged with the image (``secure_boot_findings``)."""
    if not uefi["esp"]:
        return ["this PC boots through UEFI but its system disk has no EFI system partition, so the migration has no "
                "boot loader to hand over to; boot it from an ESP on that disk first."]
    if not uefi.get("esp_mounted"):
        return ["this PC boots through UEFI and its EFI system partition (%s) is not mounted at /boot/efi, where "
                "preflight reads which GRUB it boots; mount the one it boots from there (as Debian's installer does) "
                "and run again." % ", ".join(uefi["esp"])]
    if uefi.get("vendor_error"):
        return [uefi["vendor_error"]]
    return []


IMAGE_WITHOUT_LVM = ("the root is a logical volume in %s and the image has no LVM tools (/usr/sbin/lvm), so its "
                     "initramfs could not find its root; build the image with lvm2.")
LUKS = ("the root filesystem is inside LUKS encryption, which an in-place migration refuses: the unattended "
        "maintenance environment has no passphrase to open it, and the image would be written over it unencrypted.")
MD_RAID = ("the root filesystem is on md RAID, which an in-place migration refuses: the image is written to one "
           "device and the store made on one disk, which would leave the array's other members out of step.")


def stacked_root_findings(kinds, lvm=None):
    """The inhibitors for a root on stacked block devices.

    ``kinds`` names what lies between the root's filesystem and its disk (``inspect.STACKED``'s
    values, outermost first); ``lvm`` is ``disk.lvm.facts`` when the root is a logical volume. What
    is refused for good (LUKS, md RAID, a volume group over several disks) is said; a volume group on one
    disk is supported (the store becomes a logical volume, ``disk.lvm``).
    """
    if not kinds:
        return []
    if "LUKS encryption" in kinds:
        return [LUKS]
    if "md RAID" in kinds:
        return [MD_RAID]
    if "LVM" in kinds:
        if lvm and len(lvm["disks"]) > 1:
            return ["the root's volume group %s spans the disks %s; the store and the new system are kept on one "
                    "disk, so the volume group must lie on the system disk alone." % (
                        lvm["vg"], ", ".join(lvm["disks"]))]
        return []
    return ["the root filesystem is on %s, which an in-place migration does not support yet." % kinds[0]]


def separate_boot_findings(boot, root_disk):
    """The inhibitors for a /boot of its own (``boot``: inspect's facts), on a PC whose root is on ``root_disk``.

    The maintenance environment mounts that /boot to copy its files, GRUB is installed to the
    root's disk with its core reading /boot, and the new system takes the partition over.
    """
    if not boot.get("separate"):
        return []
    if not boot.get("disk"):
        return ["/boot is on %s, which is not a partition of a disk; a separate /boot must be a partition of the "
                "system disk." % (boot.get("device") or "a device this tool cannot follow")]
    if boot["disk"] != root_disk:
        return ["/boot is on %s and the root on %s; a separate /boot must be a partition of the system disk, where "
                "GRUB is installed." % (boot["disk"], root_disk)]
    if boot.get("fstype") not in SEPARATE_BOOT_FSTYPES:
        return ["/boot is %s; a separate /boot must be ext2, ext3 or ext4, which GRUB and the maintenance environment "
                "read and write." % (boot.get("fstype") or "of an unknown filesystem")]
    return []


SIGNED_CHAIN_FIX = ("build the image with shim-signed, grub-efi-amd64-signed and a signed linux-image (Debian's "
                    "linux-image-amd64), or switch Secure Boot off in the PC's firmware")


def secure_boot_findings(secure_boot, chain):
    """The inhibitor when Secure Boot is on and the image cannot be booted through a signed chain.

    ``secure_boot`` is the PC's state (True, False, None for no Secure Boot); ``chain`` is
    ``boot.efi.signed_boot_chain`` of the image's root, or None when the image was not looked into,
    which with Secure Boot on is refused too: nothing unsigned is booted, and nothing unproven.
    """
    if secure_boot is not True:
        return []
    if chain is None:
        return ["Secure Boot is on and the image's boot chain was not checked for signatures; %s." % SIGNED_CHAIN_FIX]
    if not chain["missing"]:
        return []
    return ["Secure Boot is on and the image has no signed boot chain (missing %s); %s." % (
        "; ".join(chain["missing"]), SIGNED_CHAIN_FIX)]
