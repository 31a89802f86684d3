"""Building the lab's disk images: the old PC (Debian 12 on a BIOS-booted disk) and the new OS image.

Every artifact is cached by a hash of its inputs (suite, packages, layout, the lab's
SSH key, and the source of this package), so a second build is a cache hit. Needs
root, mmdebstrap, qemu-img, and loop devices; only loop devices attached here are
touched, and they are detached again also when a build fails.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import subprocess

from tests.lab import cache, profiles

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = [os.path.join(HERE, name) for name in ("images.py", "profiles.py", "cache.py")] + sorted(
    glob.glob(os.path.join(HERE, "guest", "*")))
MiB = 1024 * 1024
GiB = 1024 * MiB
DISK_BYTES = 6 * GiB
# The new OS image is ours to build: the tools the later phases use are in it.
PACKAGES = [
    "linux-image-cloud-amd64", "grub-pc", "openssh-server", "python3", "python3-parted", "sudo", "acl", "attr",
    "cron", "systemd-sysv", "udev", "zstd", "e2fsprogs", "dbus", "passwd", "usr-is-merged", "kmod", "fdisk",
]
# The old PC is what users have: a plain Debian 12 install, its required, important and standard
# packages (mmdebstrap's "standard" variant, no recommends) with a kernel, GRUB, an SSH server, python3
# for Ansible and sudo for its become. No zstd, no python3-parted: the collection must not need them there.
OLD_PC_VARIANT = "standard"
OLD_PC_PACKAGES = ["linux-image-amd64", "grub-pc", "openssh-server", "python3", "sudo"]
# A UEFI PC as Debian's installer leaves it with Secure Boot in mind: shim and GRUB from the signed packages
# (the kernel package is signed already), efibootmgr for its boot entries, no grub-pc.
OLD_UEFI_PC_PACKAGES = ["linux-image-amd64", "shim-signed", "grub-efi-amd64-signed", "grub-efi-amd64-bin",
                        "grub2-common", "efibootmgr", "openssh-server", "python3", "sudo"]
# The same with lvm2, which puts LVM's tools and udev rules into the initramfs that must find the root.
OLD_UEFI_LVM_PC_PACKAGES = OLD_UEFI_PC_PACKAGES + ["lvm2"]
# The new image for UEFI PCs: shim, the signed GRUB and the tools grub-mkconfig needs, no grub-pc (the cloud kernel
# is signed too), and lvm2.
NEW_UEFI_PACKAGES = [name for name in PACKAGES if name != "grub-pc"] + [
    "shim-signed", "grub-efi-amd64-signed", "grub-efi-amd64-bin", "grub2-common", "efibootmgr",
    # For the UEFI PC whose root is a logical volume: LVM's tools and initramfs script find that root.
    "lvm2"]
DROPPED_DOCS = ["/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/locale/*"]
ADMIN = {"name": "labadmin", "uid": 900}
LAYOUTS = {
    # label, sfdisk script, number of the root partition
    "msdos": ("label: dos\nstart=2048, type=83, bootable\n", 1),
    "gpt": ("label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=bios\n"
            "start=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n", 2),
    # /boot a partition of its own in front of the root, as Debian's installer makes it ("separate /boot").
    "msdos-boot": ("label: dos\nstart=2048, size=256MiB, type=83, bootable\ntype=83\n", 2),
    # UEFI: an EFI system partition (FAT32, mounted at /boot/efi), then the root.
    "gpt-uefi": ("label: gpt\nstart=2048, size=128MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n"
                 "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n", 2),
    # UEFI with a separate /boot between the ESP and the root (the ESP mounted at /boot/efi inside it).
    "gpt-uefi-boot": ("label: gpt\nstart=2048, size=128MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n"
                      "size=256MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=boot\n"
                      "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n", 3),
    # UEFI with the root on LVM, as Debian's installer's guided LVM leaves it: the ESP, an ext4 /boot, and a
    # physical volume filling the rest whose volume group (LVM_LAYOUTS) has one logical volume, the root, with no
    # extents free.
    "gpt-uefi-lvm": ("label: gpt\nstart=2048, size=128MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n"
                     "size=256MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=boot\n"
                     "type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name=lvm\n", 3),
}
# The layouts with a separate /boot, and its partition's number.
BOOT_PARTITIONS = {"msdos-boot": 1, "gpt-uefi-boot": 2, "gpt-uefi-lvm": 2}
# The UEFI layouts: the ESP's partition number, where it starts and its size in MiB.
ESP_PARTITIONS = {"gpt-uefi": (1, 1, 128), "gpt-uefi-boot": (1, 1, 128), "gpt-uefi-lvm": (1, 1, 128)}
# The layouts whose root partition is an LVM physical volume, and the volume group and root volume on it.
LVM_LAYOUTS = {"gpt-uefi-lvm": ("labvg", "root")}
NETWORK = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"
DEFAULT_GRUB = """\
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""


def run(*argv, check=True, **kwargs):
    return subprocess.run([str(a) for a in argv], check=check, **kwargs)


def output(*argv):
    return run(*argv, stdout=subprocess.PIPE, text=True).stdout.strip()


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


def sha256_file(path):
    """Write ``path``.sha256 in sha256sum's format (read back with ``sha256sum -c``); return the digest."""
    digest = output("sha256sum", path).split()[0]
    write(path + ".sha256", "%s  %s\n" % (digest, os.path.basename(path)))
    return digest


def bootstrap(suite, destination, variant="apt", packages=None):
    """A Debian root (with kernel, GRUB, sshd, python3) by mmdebstrap, as a directory or a .tar."""
    command = ["mmdebstrap", "--variant=" + variant, "--include=" + ",".join(packages or PACKAGES)]
    command += ["--dpkgopt=path-exclude=" + pattern for pattern in DROPPED_DOCS]
    run(*command, suite, destination, stdout=subprocess.DEVNULL)


def root_tarball(suite, packages=None):
    """The cached mmdebstrap root of the old PC's ``suite`` as a tar (shared by the disk layouts of a firmware)."""
    packages = packages or OLD_PC_PACKAGES
    inputs = {"suite": suite, "variant": OLD_PC_VARIANT, "packages": packages, "drop": DROPPED_DOCS}
    directory = cache.cached("root-" + suite, cache.key(inputs, [os.path.join(HERE, "images.py")]),
                             lambda work: bootstrap(suite, os.path.join(work, "root.tar"), OLD_PC_VARIANT,
                                                    packages))
    return os.path.join(directory, "root.tar")


def enable_networkd(root):
    write(os.path.join(root, "etc/systemd/network/20-wired.network"), NETWORK)
    run("chroot", root, "systemctl", "enable", "--quiet", "systemd-networkd")


def forget_identity(root):
    """No SSH host keys and no machine-id: each machine made from this root gets its own."""
    for path in glob.glob(os.path.join(root, "etc/ssh/ssh_host_*")):
        os.unlink(path)
    write(os.path.join(root, "etc/machine-id"), "")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(root, "var/lib/dbus/machine-id"))


def add_admin(root, public_key):
    """The account Ansible connects as: the lab's key, passwordless sudo; root accepts the key too."""
    run("groupadd", "--root", root, "--system", "--gid", ADMIN["uid"], ADMIN["name"])
    run("useradd", "--root", root, "--system", "--uid", ADMIN["uid"], "--gid", ADMIN["uid"], "--create-home",
        "--shell", "/bin/bash", "--comment", "lab administrator (Ansible)", ADMIN["name"])
    home = os.path.join(root, "home", ADMIN["name"])
    for directory in (os.path.join(home, ".ssh"), os.path.join(root, "root", ".ssh")):
        owner = ADMIN["uid"] if directory.startswith(home) else 0
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chown(directory, owner, owner)
        keys = os.path.join(directory, "authorized_keys")
        write(keys, public_key, 0o600)
        os.chown(keys, owner, owner)
    write(os.path.join(root, "etc/sudoers.d/labadmin"), "%s ALL=(ALL:ALL) NOPASSWD: ALL\n" % ADMIN["name"], 0o440)


def configure_old_pc(root, uuid, public_key, boot_uuid=None, esp_uuid=None, root_name=None):
    write(os.path.join(root, "etc/fstab"), "%s / ext4 errors=remount-ro 0 1\n" % (root_name or "UUID=" + uuid) + (
        "UUID=%s /boot ext4 defaults 0 2\n" % boot_uuid if boot_uuid else "") + (
        "UUID=%s /boot/efi vfat umask=0077 0 1\n" % esp_uuid if esp_uuid else ""))
    if esp_uuid:
        os.makedirs(os.path.join(root, "boot/efi"), exist_ok=True)
    write(os.path.join(root, "etc/hostname"), "lab-base\n")
    write(os.path.join(root, "etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\tlab-base\n"
          "::1\tlocalhost ip6-localhost ip6-loopback\n")
    write(os.path.join(root, "etc/default/grub"), DEFAULT_GRUB)
    enable_networkd(root)
    add_admin(root, public_key)
    first_boot = os.path.join(root, "usr/local/lib/inplace-lab/first-boot")
    os.makedirs(os.path.dirname(first_boot), exist_ok=True)
    shutil.copyfile(os.path.join(HERE, "guest", "inplace-lab-first-boot.sh"), first_boot)
    os.chmod(first_boot, 0o755)
    shutil.copyfile(os.path.join(HERE, "guest", "inplace-lab-first-boot.service"),
                    os.path.join(root, "etc/systemd/system/inplace-lab-first-boot.service"))
    run("chroot", root, "systemctl", "enable", "--quiet", "inplace-lab-first-boot.service")
    forget_identity(root)


@contextlib.contextmanager
def attached(image):
    """``image`` as a loop device with partition nodes; always detached again."""
    device = output("losetup", "--find", "--show", image)
    try:
        run("partx", "-a", device, check=False)
        yield device
    finally:
        run("partx", "-d", device, check=False)
        run("losetup", "-d", device)


@contextlib.contextmanager
def logical_volume(partition, vg, lv):
    """Make ``partition`` a physical volume holding volume group ``vg`` with one linear volume ``lv`` over all of
    it, and yield a loop device over the volume's bytes: this host's kernel has no device-mapper, so LVM only
    writes its metadata (``--driverloaded n``) and the volume is reached where its extents lie."""
    only = ["--devices", partition]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    run("pvcreate", "--quiet", *only, partition, **quiet)
    run("vgcreate", "--quiet", "--driverloaded", "n", *only, vg, partition, **quiet)
    run("lvcreate", "--quiet", "--driverloaded", "n", "--activate", "n", "--zero", "n", "--extents", "100%FREE",
        "--name", lv, *only, vg, **quiet)
    segments = json.loads(output("lvs", "--driverloaded", "n", *only, "--segments", "--reportformat", "json",
                                 "--units", "b", "--nosuffix", "-o", "seg_pe_ranges,vg_extent_size", vg + "/" + lv))
    (segment,) = segments["report"][0]["seg"]
    first, last = (int(number) for number in segment["seg_pe_ranges"].rsplit(":", 1)[1].split("-"))
    extent = int(segment["vg_extent_size"])
    pe_start = int(json.loads(output("pvs", "--driverloaded", "n", *only, "--reportformat", "json", "--units", "b",
                                     "--nosuffix", "-o", "pe_start", partition))["report"][0]["pv"][0]["pe_start"])
    device = output("losetup", "--find", "--show", "--offset", str(pe_start + first * extent),
                    "--sizelimit", str((last - first + 1) * extent), partition)
    try:
        yield device
    finally:
        run("losetup", "-d", device)


@contextlib.contextmanager
def mounted(source, target, *options):
    run("mount", *options, source, target)
    try:
        yield target
    finally:
        run("umount", target)


@contextlib.contextmanager
def chroot_mounts(root):
    """/dev, /proc and /sys for tools like grub-install that look at the running system."""
    with contextlib.ExitStack() as stack:
        for name, options in (("dev", ("--bind",)), ("proc", ("-t", "proc")), ("sys", ("-t", "sysfs"))):
            source = "/dev" if name == "dev" else name
            stack.enter_context(mounted(source, os.path.join(root, name), *options))
        yield


def install_grub(root, device, uuid):
    """GRUB for BIOS on ``device``; grub.cfg names the root by UUID."""
    with chroot_mounts(root):
        run("chroot", root, "grub-install", "--target=i386-pc", device, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
    update_grub(root, uuid)


def update_grub(root, uuid, root_name=None):
    """/boot/grub/grub.cfg by update-grub in a chroot, naming the root by UUID, or by ``root_name`` (a root on
    LVM: its /dev/mapper name).

    Without udev there is no /dev/disk/by-uuid, so update-grub in a chroot writes root=/dev/loopNpM (for a loop
    device standing for a logical volume, the partition under it); the root's name is put in its place.
    """
    os.makedirs(os.path.join(root, "boot/grub"), exist_ok=True)
    with chroot_mounts(root):
        run("chroot", root, "update-grub", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = os.path.join(root, "boot/grub/grub.cfg")
    with open(config, encoding="utf-8") as handle:
        text = handle.read()
    text = re.sub(r"root=/dev/loop[0-9p]+ ", "root=%s " % (root_name or "UUID=" + uuid), text)
    # The menu entries' ids, where grub-mkconfig found no UUID for the loop device standing for a volume.
    text = re.sub(r"(\$menuentry_id_option 'gnulinux-[^']*)/dev/loop[0-9p]+'", r"\g<1>%s'" % uuid, text)
    left = [line.strip() for line in text.splitlines() if "/dev/loop" in line]
    if left:
        raise RuntimeError("grub.cfg still names a loop device after the root's name was put in its place: %s" %
                           "; ".join(left))
    write(config, text, 0o444)


# What Debian's grub-install --uefi-secure-boot --force-extra-removable puts on the ESP, from the root's files:
# shim as the removable-media loader beside its fallback (which makes the "debian" boot entry from BOOTX64.CSV
# when the firmware has none) and shim, the signed GRUB and MokManager under EFI/debian.
ESP_FILES = {
    "EFI/BOOT/BOOTX64.EFI": "usr/lib/shim/shimx64.efi.signed",
    "EFI/BOOT/fbx64.efi": "usr/lib/shim/fbx64.efi.signed",
    "EFI/BOOT/mmx64.efi": "usr/lib/shim/mmx64.efi.signed",
    "EFI/debian/shimx64.efi": "usr/lib/shim/shimx64.efi.signed",
    "EFI/debian/grubx64.efi": "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
    "EFI/debian/mmx64.efi": "usr/lib/shim/mmx64.efi.signed",
    "EFI/debian/BOOTX64.CSV": "usr/lib/shim/BOOTX64.CSV",
}
# The signed GRUB's built-in prefix is /EFI/debian; this is the file grub-install writes there: it finds the
# filesystem holding /boot by UUID, and GRUB's directory in it (/grub where /boot is a filesystem of its own).
ESP_GRUB_CFG = "search.fs_uuid %s root\nset prefix=($root)'%s'\nconfigfile $prefix/grub.cfg\n"


def esp_files(root, uuid, work, boot_uuid=None):
    """The ESP's files (path on the FAT -> a copy in ``work``), taken from the mounted root before it is
    unmounted, with the GRUB stub that finds /boot by ``boot_uuid`` (a separate /boot) or the root's ``uuid``."""
    files = {}
    staged = os.path.join(work, "esp")
    for esp_path, source in ESP_FILES.items():
        copy = os.path.join(staged, esp_path)
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        shutil.copyfile(os.path.join(root, source), copy)
        files[esp_path] = copy
    files["EFI/debian/grub.cfg"] = os.path.join(staged, "EFI/debian/grub.cfg")
    write(files["EFI/debian/grub.cfg"], ESP_GRUB_CFG % (boot_uuid, "/grub") if boot_uuid else
          ESP_GRUB_CFG % (uuid, "/boot/grub"))
    return files


def build_old_pc(work, layout, tarball, public_key):
    script, number = LAYOUTS[layout]
    raw = os.path.join(work, "disk.raw")
    with open(raw, "wb") as handle:
        handle.truncate(DISK_BYTES)
    run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", raw, input=script.encode())
    mountpoint = os.path.join(work, "mnt")
    os.mkdir(mountpoint)
    root_name = None
    with attached(raw) as device, contextlib.ExitStack() as volumes, contextlib.ExitStack() as stack:
        partition = "%sp%d" % (device, number)
        if layout in LVM_LAYOUTS:
            partition = volumes.enter_context(logical_volume(partition, *LVM_LAYOUTS[layout]))
            # As Debian's installer names a root on LVM, in fstab and on the kernel's command line.
            root_name = "/dev/mapper/%s-%s" % LVM_LAYOUTS[layout]
        run("mkfs.ext4", "-q", partition)
        uuid = output("blkid", "-s", "UUID", "-o", "value", partition)
        boot = boot_uuid = esp_uuid = None
        if layout in ESP_PARTITIONS:
            # FAT's volume serial is the ESP's UUID in fstab: the root's first 8 digits, so the disk is reproducible.
            serial = uuid.replace("-", "")[:8].upper()
            esp_uuid = "%s-%s" % (serial[:4], serial[4:])
        if layout in BOOT_PARTITIONS:
            boot = "%sp%d" % (device, BOOT_PARTITIONS[layout])
            run("mkfs.ext4", "-q", boot)
            boot_uuid = output("blkid", "-s", "UUID", "-o", "value", boot)
        stack.enter_context(mounted(partition, mountpoint))
        if boot:
            # Mounted before the root is unpacked, so the kernel, initramfs and GRUB land on it.
            os.makedirs(os.path.join(mountpoint, "boot"), exist_ok=True)
            stack.enter_context(mounted(boot, os.path.join(mountpoint, "boot")))
        run("tar", "-x", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "-f", tarball,
            "-C", mountpoint)
        configure_old_pc(mountpoint, uuid, public_key, boot_uuid, esp_uuid, root_name)
        users = profiles.populate(mountpoint)
        if esp_uuid:
            update_grub(mountpoint, uuid, root_name)
            files = esp_files(mountpoint, uuid, work, boot_uuid)
        else:
            install_grub(mountpoint, device, uuid)
        stack.close()
        for checked in (partition, boot) if boot else (partition,):
            run("e2fsck", "-f", "-n", checked, stdout=subprocess.DEVNULL)
    if esp_uuid:
        from tests.lab import uefi  # uefi imports machines, which imports this module
        unused_number, start_mib, size_mib = ESP_PARTITIONS[layout]
        uefi.format_esp(raw, start_mib, size_mib, files, serial)
        shutil.rmtree(os.path.join(work, "esp"))
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, os.path.join(work, "disk.qcow2"))
    os.unlink(raw)
    os.rmdir(mountpoint)
    info = {"layout": layout, "root_partition": number, "root_uuid": uuid, "disk_bytes": DISK_BYTES,
            "boot_partition": BOOT_PARTITIONS.get(layout), "boot_uuid": boot_uuid,
            "esp_partition": ESP_PARTITIONS[layout][0] if esp_uuid else None, "esp_uuid": esp_uuid,
            "admin": ADMIN, "users": users, "suite": "bookworm"}
    write(os.path.join(work, "info.json"), json.dumps(info, indent=2, sort_keys=True) + "\n")


def old_pc(layout="msdos"):
    """The cached old PC disk (qcow2, to be used as a backing file only); returns its directory."""
    tarball = root_tarball("bookworm", OLD_UEFI_LVM_PC_PACKAGES if layout in LVM_LAYOUTS else
                           OLD_UEFI_PC_PACKAGES if layout in ESP_PARTITIONS else OLD_PC_PACKAGES)
    with open(cache.ssh_key() + ".pub", encoding="utf-8") as handle:
        public_key = handle.read()
    inputs = {"layout": layout, "disk": DISK_BYTES, "root": os.path.basename(os.path.dirname(tarball)),
              "key": public_key}
    return cache.cached("old-pc-" + layout, cache.key(inputs, SOURCES),
                        lambda work: build_old_pc(work, layout, tarball, public_key))


def directory_bytes(root):
    return int(output("du", "-s", "--block-size=1", root).split()[0])


def build_new_image(work, suite, name, packages=None):
    root = os.path.join(work, "root")
    bootstrap(suite, root, packages=packages)
    enable_networkd(root)
    write(os.path.join(root, "etc/default/grub"), DEFAULT_GRUB)
    write(os.path.join(root, "etc/hostname"), "localhost\n")
    forget_identity(root)
    tar_zst = os.path.join(work, name + ".tar.zst")
    with open(tar_zst, "wb") as handle:
        tar = subprocess.Popen(["tar", "-C", root, "-c", "--xattrs", "--xattrs-include=*", "--acls",
                                "--numeric-owner", "--sort=name", "."], stdout=subprocess.PIPE)
        zstd = subprocess.Popen(["zstd", "-q", "-T0", "-10"], stdin=tar.stdout, stdout=handle)
        tar.stdout.close()
        if tar.wait() or zstd.wait():
            raise RuntimeError("packing %s failed" % tar_zst)
    used = directory_bytes(root)
    # Headroom for what the first boot and the restore write before the filesystem is grown.
    size = (used * 5 // 4 + 256 * MiB) // MiB * MiB
    raw = os.path.join(work, name + ".raw")
    with open(raw, "wb") as handle:
        handle.truncate(size)
    run("mkfs.ext4", "-q", "-d", root, "-L", "debian-" + suite, raw)
    run("e2fsck", "-f", "-n", raw, stdout=subprocess.DEVNULL)
    run("zstd", "-q", "-T0", "-10", "--rm", raw)
    shutil.rmtree(root)
    info = {"suite": suite, "tree_bytes": used, "raw_bytes": size, "files": {}}
    for path in (tar_zst, raw + ".zst"):
        info["files"][os.path.basename(path)] = {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}
    write(os.path.join(work, "info.json"), json.dumps(info, indent=2, sort_keys=True) + "\n")


def new_image(suite="trixie", firmware="bios"):
    """The cached new OS image (``<name>.tar.zst``, ``<name>.raw.zst``, each with ``.sha256``); its directory.
    ``firmware="uefi"``: the image carries Debian's signed boot chain instead of GRUB for BIOS."""
    name = {"trixie": "debian13", "bookworm": "debian12"}[suite] + ("-uefi" if firmware == "uefi" else "")
    packages = NEW_UEFI_PACKAGES if firmware == "uefi" else PACKAGES
    inputs = {"suite": suite, "packages": packages, "name": name}
    return cache.cached("new-" + name, cache.key(inputs, SOURCES),
                        lambda work: build_new_image(work, suite, name, packages))


def maintenance_base():
    """The maintenance environment's kernel and base initramfs: build_base.py's summary (it caches itself)."""
    top = os.path.dirname(os.path.dirname(HERE))
    return json.loads(output("python3", os.path.join(top, "roles", "maintenance_env", "files", "build_base.py"),
                             "--cache", os.path.dirname(cache.root())))
