# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the maintenance environment's base on the controller: a kernel and a zstd initramfs.

    python3 build_base.py [--cache DIR] [--level N]

The initramfs carries a small Debian userland made with mmdebstrap; the kernel boots
it as its root file system (no ``root=``), with systemd as ``/init``. It is the same
for every PC: each PC's own hostname, SSH host keys, admin account and network file
come in a second, small archive (the per-host overlay) that the kernel unpacks over
it. The result is cached under ``DIR/maintenance/<hash of the inputs>`` (the inputs include
the setup program's bytes, so a change to the collection code it bundles makes a new base)
and a JSON summary (paths, sizes, kernel version) is printed. Needs root, mmdebstrap, cpio, zstd.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import functools
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SETUP_SCRIPT = os.path.join(HERE, "maintenance_setup.py")
SETUP_PROGRAM = "usr/lib/inplace-maintenance/setup.pyz"
SUITE = "bookworm"
KERNEL_PACKAGE = "linux-image-amd64"
PACKAGES = [
    "python3", "python3-parted", "parted", "e2fsprogs", "btrfs-progs", "xfsprogs", "zstd", "openssh-server", "sudo",
    "qemu-utils", "grub-pc-bin", "grub2-common", "util-linux", "fdisk", "acl", "attr", "tar", "iproute2",
    "procps", "kmod", "udev", "systemd-sysv", "passwd",
    # A root on LVM (its store can be a logical volume) and a UEFI PC's boot entries.
    "lvm2", "efibootmgr",
    # Stands in for usrmerge (and its perl), which the essential set brings and customize() purges.
    "usr-is-merged",
]
DROPPED_DOCS = ["/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/locale/*",
                "/usr/share/lintian/*"]
# Paths (relative to the root) the maintenance work never needs; the RAM they would take is the PC's.
DROPPED_PATHS = [
    "boot", "var/cache/apt", "var/lib/apt/lists", "var/log/apt", "usr/share/zoneinfo",
    "usr/lib/udev/hwdb.bin", "usr/lib/udev/hwdb.d", "etc/udev/hwdb.bin", "usr/lib/x86_64-linux-gnu/gconv",
    "usr/share/i18n", "usr/share/bash-completion", "usr/share/grub/themes",
]
DROPPED_PYTHON_PARTS = ["test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data"]
# Kernel modules (paths under lib/modules/<version>/kernel) a PC needs here: disks, USB keyboards
# and disks, common wired NICs, virtio, the filesystems we handle; their dependencies are added.
KEPT_MODULES = [
    "drivers/ata/", "drivers/nvme/host/nvme.ko", "drivers/nvme/host/nvme-core.ko", "drivers/scsi/sd_mod.ko", "drivers/scsi/sr_mod.ko", "drivers/scsi/sg.ko",
    "drivers/scsi/virtio_scsi.ko", "drivers/block/virtio_blk.ko", "drivers/block/loop.ko",
    "drivers/block/nbd.ko", "drivers/virtio/", "drivers/char/hw_random/virtio-rng.ko",
    "drivers/firmware/qemu_fw_cfg.ko", "drivers/mmc/host/sdhci-pci.ko", "drivers/mmc/core/mmc_block.ko",
    "drivers/usb/host/", "drivers/usb/storage/", "drivers/hid/usbhid/", "drivers/hid/hid-generic.ko",
    "drivers/input/evdev.ko",
    "drivers/net/virtio_net.ko", "drivers/net/ethernet/intel/e1000/", "drivers/net/ethernet/intel/e1000e/",
    "drivers/net/ethernet/intel/igb/", "drivers/net/ethernet/intel/igc/", "drivers/net/ethernet/realtek/",
    "drivers/net/ethernet/broadcom/tg3.ko", "drivers/net/ethernet/atheros/",
    "drivers/net/usb/r8152.ko", "drivers/net/usb/cdc_ether.ko", "drivers/net/usb/ax88179_178a.ko",
    "fs/ext4/", "fs/btrfs/", "fs/xfs/", "fs/fat/", "fs/nls/nls_cp437.ko", "fs/nls/nls_ascii.ko", "fs/nls/nls_utf8.ko",
    "fs/efivarfs/", "fs/isofs/", "drivers/md/dm-mod.ko",
    "crypto/crc32c_generic.ko", "crypto/xxhash_generic.ko", "crypto/sha256_generic.ko",
    "crypto/blake2b_generic.ko", "arch/x86/crypto/crc32c-intel.ko",
]
MASKED_UNITS = [
    "e2scrub_reap.service", "e2scrub_all.timer", "getty-static.service", "fstrim.timer",
    "systemd-firstboot.service", "systemd-machine-id-commit.service", "systemd-hwdb-update.service",
    "ldconfig.service", "dpkg-db-backup.timer", "systemd-tmpfiles-clean.timer", "apt-daily.timer",
    "apt-daily-upgrade.timer", "remote-fs.target", "systemd-pstore.service",
]
# Full perl comes only with usrmerge; debconf and dpkg need perl-base alone.
PURGED_PACKAGES = re.compile(r"^(usrmerge|perl|libperl[0-9.]+|perl-modules-[0-9.]+|lib[a-z0-9-]+-perl)$")
MARKER = "etc/inplace-maintenance"
NETWORK_FILE = """\
# Any wired NIC, by DHCP. A per-host overlay may add a 10-*.network file that wins.
[Match]
Name=en* eth*

[Network]
DHCP=yes
"""
SETUP_UNIT = """\
[Unit]
Description=Apply this PC's maintenance overlay (admin account, working space)
DefaultDependencies=no
After=systemd-sysusers.service systemd-tmpfiles-setup.service
Before=ssh.service sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/python3 /%s
StandardError=journal+console

[Install]
WantedBy=sysinit.target
""" % SETUP_PROGRAM
# No SSH into an environment whose overlay or base did not arrive whole.
SSH_NEEDS_SETUP = """\
[Unit]
Requires=inplace-maintenance-setup.service
After=inplace-maintenance-setup.service
"""
SSHD_CONFIG = """\
# Keys only: the admin account's password hash may come from the PC, but nothing here needs it.
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


def log(message):
    sys.stderr.write("build_base: %s\n" % message)
    sys.stderr.flush()


@functools.lru_cache(maxsize=None)
def setup_program():
    """maintenance_setup.py as a zip application with the collection modules it imports (``common.bundle``)."""
    # Importable by its full name from wherever this checkout is, as tests/support/adhoc.py does it.
    top = tempfile.mkdtemp(prefix="inplace-collections-")
    atexit.register(shutil.rmtree, top, True)
    os.makedirs(os.path.join(top, "ansible_collections", "inplace"))
    os.symlink(COLLECTION, os.path.join(top, "ansible_collections", "inplace", "migration"))
    sys.path.insert(0, top)
    bundle = importlib.import_module("ansible_collections.inplace.migration.plugins.module_utils.common.bundle")
    with open(SETUP_SCRIPT, encoding="utf-8") as handle:
        return bundle.zipapp(handle.read())


def inputs_key():
    sha = hashlib.sha256()
    description = {"suite": SUITE, "kernel": KERNEL_PACKAGE, "packages": PACKAGES, "modules": KEPT_MODULES}
    sha.update(json.dumps(description, sort_keys=True).encode())
    with open(os.path.abspath(__file__), "rb") as handle:
        sha.update(handle.read())
    sha.update(setup_program())
    return sha.hexdigest()[:16]


def default_cache():
    base = os.environ.get("INPLACE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inplace-migration")
    return base


def bootstrap(root):
    command = ["mmdebstrap", "--variant=essential", "--include=" + ",".join([KERNEL_PACKAGE] + PACKAGES)]
    command += ["--dpkgopt=path-exclude=" + pattern for pattern in DROPPED_DOCS]
    command += [SUITE, root]
    # The kernel's postinst would build an initramfs-tools image we never use.
    subprocess.run(command, check=True, env=dict(os.environ, INITRD="No"), stdout=subprocess.DEVNULL)


def write_bytes(root, relative, data, mode=0o644):
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def write(root, relative, text, mode=0o644):
    write_bytes(root, relative, text.encode("utf-8"), mode)


def remove(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def kernel_version(root):
    versions = os.listdir(os.path.join(root, "lib", "modules"))
    if len(versions) != 1:
        raise SystemExit("expected one kernel in the image, found %s" % versions)
    return versions[0]


def kept_modules(modules_dep, modules_softdep):
    """The modules (paths as modules.dep names them) KEPT_MODULES and their symbol and soft dependencies make."""
    dependencies = {}
    for line in modules_dep.splitlines():
        module, _colon, needs = line.partition(":")
        dependencies[module] = needs.split()
    by_name = {os.path.basename(path).split(".ko")[0].replace("-", "_"): path for path in dependencies}
    for line in modules_softdep.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] == "softdep" and words[1].replace("-", "_") in by_name:
            wanted = [by_name[word.replace("-", "_")] for word in words[2:]
                      if word.replace("-", "_") in by_name]
            dependencies[by_name[words[1].replace("-", "_")]] += wanted
    wanted = [path for path in dependencies
              if any(path.startswith("kernel/" + prefix) for prefix in KEPT_MODULES)]
    kept = set()
    while wanted:
        path = wanted.pop()
        if path not in kept:
            kept.add(path)
            wanted.extend(dependencies.get(path, []))
    return kept, list(dependencies)


def prune_modules(root, version):
    """Keep KEPT_MODULES and everything they need (symbol and soft dependencies); rebuild modules.dep."""
    moddir = os.path.join(root, "lib", "modules", version)
    texts = []
    for name in ("modules.dep", "modules.softdep"):
        with open(os.path.join(moddir, name), encoding="utf-8") as handle:
            texts.append(handle.read())
    kept, every = kept_modules(*texts)
    for path in every:
        if path not in kept:
            os.unlink(os.path.join(moddir, path))
    subprocess.run(["find", os.path.join(moddir, "kernel"), "-type", "d", "-empty", "-delete"], check=True)
    subprocess.run(["chroot", root, "depmod", "-a", version], check=True)
    return len(kept)


def purge_unneeded_packages(root):
    installed = subprocess.run(["chroot", root, "dpkg-query", "-W", "-f", "${Package}\\n"], check=True,
                               stdout=subprocess.PIPE, text=True).stdout.split()
    unneeded = [name for name in installed if PURGED_PACKAGES.match(name)]
    if unneeded:
        subprocess.run(["chroot", root, "dpkg", "--purge"] + unneeded, check=True, stdout=subprocess.DEVNULL)


def customize(root):
    purge_unneeded_packages(root)
    for relative in DROPPED_PATHS:
        remove(os.path.join(root, relative))
    for python_lib in os.listdir(os.path.join(root, "usr", "lib")):
        if python_lib.startswith("python3."):
            for part in DROPPED_PYTHON_PARTS:
                remove(os.path.join(root, "usr", "lib", python_lib, part))
    for key in os.listdir(os.path.join(root, "etc", "ssh")):
        if key.startswith("ssh_host_"):
            os.unlink(os.path.join(root, "etc", "ssh", key))
    write(root, MARKER, "inplace.migration maintenance environment %s\n" % inputs_key())
    write(root, "etc/hostname", "maintenance\n")
    write(root, "etc/machine-id", "")
    write(root, "etc/fstab", "# Everything runs from RAM; nothing is mounted from disk at boot.\n")
    write(root, "etc/systemd/network/90-inplace-dhcp.network", NETWORK_FILE)
    write(root, "etc/ssh/sshd_config.d/inplace-maintenance.conf", SSHD_CONFIG)
    write_bytes(root, SETUP_PROGRAM, setup_program(), 0o755)
    write(root, "etc/systemd/system/inplace-maintenance-setup.service", SETUP_UNIT)
    write(root, "etc/systemd/system/ssh.service.d/inplace-maintenance.conf", SSH_NEEDS_SETUP)
    subprocess.run(["chroot", root, "systemctl", "enable", "--quiet", "systemd-networkd",
                    "inplace-maintenance-setup.service"], check=True)
    subprocess.run(["chroot", root, "systemctl", "mask", "--quiet"] + MASKED_UNITS, check=True)
    remove(os.path.join(root, "init"))
    os.symlink("/lib/systemd/systemd", os.path.join(root, "init"))


def pack(root, destination, level):
    """cpio (newc) of the whole root in a stable order, through zstd, straight to ``destination``."""
    with open(destination, "wb") as output:
        names = subprocess.run("find . -print0 | LC_ALL=C sort -z", shell=True, cwd=root, check=True,
                               stdout=subprocess.PIPE).stdout
        cpio = subprocess.Popen(["cpio", "--null", "--create", "--format=newc", "--reproducible", "--quiet"],
                                cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        zstd = subprocess.Popen(["zstd", "-q", "-T0", "-%d" % level], stdin=cpio.stdout, stdout=output)
        cpio.stdout.close()
        cpio.stdin.write(names)
        cpio.stdin.close()
        if cpio.wait() or zstd.wait():
            raise SystemExit("packing the initramfs failed (cpio %s, zstd %s)" % (cpio.returncode, zstd.returncode))
        # The kernel looks for a following archive (the overlay) only at a 4-byte boundary; it skips zeros.
        output.write(b"\0" * (-output.tell() % 4))


def tree_bytes(root):
    total = 0
    for base, _dirs, files in os.walk(root):
        for name in files:
            total += os.lstat(os.path.join(base, name)).st_size
    return total


@contextlib.contextmanager
def locked(path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build(cache, level):
    key = inputs_key()
    top = os.path.join(cache, "maintenance")
    out = os.path.join(top, key)
    summary_file = os.path.join(out, "summary.json")
    os.makedirs(top, exist_ok=True)
    with locked(os.path.join(top, ".lock")):
        if os.path.exists(summary_file):
            with open(summary_file, encoding="utf-8") as handle:
                return dict(json.load(handle), cached=True)
        started = time.monotonic()
        work = tempfile.mkdtemp(prefix=key + ".", dir=top)
        try:
            root = os.path.join(work, "root")
            log("mmdebstrap %s into %s" % (SUITE, root))
            bootstrap(root)
            bootstrapped = time.monotonic()
            version = kernel_version(root)
            staged = os.path.join(work, "out")
            os.makedirs(staged)
            shutil.copyfile(os.path.join(root, "boot", "vmlinuz-" + version), os.path.join(staged, "vmlinuz"))
            modules = prune_modules(root, version)
            customize(root)
            unpacked = tree_bytes(root)
            log("packing %d MiB with zstd -%d" % (unpacked >> 20, level))
            pack(root, os.path.join(staged, "initrd.img"), level)
            summary = {
                "key": key,
                "suite": SUITE,
                "kernel_version": version,
                "kernel": os.path.join(out, "vmlinuz"),
                "initrd": os.path.join(out, "initrd.img"),
                "kernel_bytes": os.path.getsize(os.path.join(staged, "vmlinuz")),
                "initrd_bytes": os.path.getsize(os.path.join(staged, "initrd.img")),
                "unpacked_bytes": unpacked,
                "kernel_modules": modules,
                "zstd_level": level,
                "seconds": {"mmdebstrap": round(bootstrapped - started, 1),
                            "total": round(time.monotonic() - started, 1)},
            }
            with open(os.path.join(staged, "summary.json"), "w", encoding="utf-8") as handle:
                json.dump(summary, handle, indent=2, sort_keys=True)
            os.rename(staged, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return dict(summary, cached=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=default_cache(), help="cache directory (default: %(default)s)")
    # Measured on the base: -3 gives 65 MB in 0.7 s, -9 57 MB in 5 s, -15 56.5 MB in 35 s.
    parser.add_argument("--level", type=int, default=9, help="zstd level (default: %(default)s)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: mmdebstrap and chroot need it")
    print(json.dumps(build(os.path.abspath(args.cache), args.level), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
