"""OS images for image_deploy's tests and benchmark, built from small trees (or a cached Debian root).

Raw images are ``mkfs.ext4 -d`` of a tree into a sparse file, then compressed with the
system's tools or converted to qcow2; archives are GNU tar with owners, ACLs and xattrs.
The Debian root (kernel, grub-pc, python3) comes from mmdebstrap once and is cached
under ~/.cache/inplace-migration, keyed by what it is built from.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import socketserver
import tempfile
import threading
import time

from tests.support.loopdisk import MiB, run

CACHE = os.environ.get("INPLACE_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inplace-migration")
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("linux-image-cloud-amd64", "grub-pc", "systemd-sysv", "udev", "kmod", "initramfs-tools",
                   "python3-minimal")
DEBIAN_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")


def sha256(path, length=None):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        remaining = length
        while remaining is None or remaining > 0:
            block = handle.read(4 * MiB if remaining is None else min(4 * MiB, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest.hexdigest()


def ext4_image(path, tree, size=64 * MiB, label=None):
    """A raw ext4 image of ``size`` bytes holding ``tree`` (a sparse file: free space reads as zeros)."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    run("mkfs.ext4", "-q", "-F", "-d", tree, *(["-L", label] if label else []), path)
    return path


def convert(raw, fmt, directory=None):
    """``raw`` in ``fmt`` (raw, raw.zst, raw.gz, raw.xz, qcow2) as a new file; returns its path."""
    out = os.path.join(directory or os.path.dirname(raw), os.path.basename(raw) + "." + fmt.replace("raw.", ""))
    if fmt == "raw":
        shutil.copyfile(raw, out)
    elif fmt == "raw.zst":
        run("zstd", "-q", "-f", "-T0", raw, "-o", out)
    elif fmt == "raw.gz":
        with open(out, "wb") as handle:
            run_to(handle, "gzip", "-1", "-c", raw)
    elif fmt == "raw.xz":
        with open(out, "wb") as handle:
            run_to(handle, "xz", "-0", "-T0", "-c", raw)
    elif fmt == "qcow2":
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out)
    else:
        raise ValueError(fmt)
    return out


def run_to(handle, *args):
    import subprocess
    subprocess.run([str(a) for a in args], stdout=handle, check=True)


def tar_archive(tree, out, compression=None):
    """GNU tar of ``tree`` with numeric owners, ACLs and xattrs, optionally through zstd."""
    tar = ["tar", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "-C", tree, "-cf", "-", "."]
    import subprocess
    with open(out, "wb") as handle:
        if compression == "zst":
            producer = subprocess.Popen(tar, stdout=subprocess.PIPE)
            subprocess.run(["zstd", "-q", "-T0", "-c"], stdin=producer.stdout, stdout=handle, check=True)
            producer.stdout.close()
            assert producer.wait() == 0
        else:
            subprocess.run(tar, stdout=handle, check=True)
    return out


def write_root(root, hostname, users=(), extra_groups=(), files=None):
    """A minimal system root: /etc with accounts and identity, /usr, plus ``files`` {path: text}."""
    passwd = ["root:x:0:0:root:/root:/bin/bash"]
    group = ["root:x:0:", "sudo:x:27:%s" % ",".join(u[0] for u in users if u[3])]
    shadow = ["root:*:19000:0:99999:7:::"]
    gshadow = ["root:*::", "sudo:*::%s" % ",".join(u[0] for u in users if u[3])]
    for name, uid, gid, unused_sudo in users:
        passwd.append("%s:x:%d:%d:%s:/home/%s:/bin/bash" % (name, uid, gid, name, name))
        group.append("%s:x:%d:" % (name, gid))
        shadow.append("%s:$y$j9T$salt$hash%s:19000:0:99999:7:::" % (name, name))
        gshadow.append("%s:!::" % name)
    for name, gid, member_list in extra_groups:
        group.append("%s:x:%d:%s" % (name, gid, member_list))
        gshadow.append("%s:!::%s" % (name, member_list))
    content = {
        "etc/passwd": "\n".join(passwd) + "\n",
        "etc/group": "\n".join(group) + "\n",
        "etc/shadow": "\n".join(shadow) + "\n",
        "etc/gshadow": "\n".join(gshadow) + "\n",
        "etc/hostname": hostname + "\n",
        "etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\t%s.lab %s\n::1\tlocalhost ip6-localhost\n" % (hostname, hostname),
        "usr/bin/true": "",
        # The shell its accounts name: a carried account whose shell is missing gets the default one.
        "bin/bash": "",
    }
    content.update(files or {})
    for relative, text in content.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
    for name in ("shadow", "gshadow"):
        os.chmod(os.path.join(root, "etc", name), 0o640)
    return root


def debian_root():
    """A bookworm root tarball with a kernel, grub-pc and python3 (mmdebstrap, cached by its inputs)."""
    key = hashlib.sha256(repr((DEBIAN_SUITE, DEBIAN_PACKAGES, DEBIAN_EXCLUDES, 1)).encode()).hexdigest()[:12]
    path = os.path.join(CACHE, "debian-root-%s-%s.tar" % (DEBIAN_SUITE, key))
    if os.path.exists(path):
        return path
    os.makedirs(CACHE, exist_ok=True)
    partial = path[:-4] + ".part.tar"  # mmdebstrap chooses the output format by the name's ending
    args = ["mmdebstrap", "--variant=essential", "--include=" + ",".join(DEBIAN_PACKAGES)]
    args += ["--dpkgopt=path-exclude=" + pattern for pattern in DEBIAN_EXCLUDES]
    run(*(args + [DEBIAN_SUITE, partial]))
    os.rename(partial, path)
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    delay = 0.0  # seconds per MiB sent, for the first request of a file only
    slowed = set()

    def log_message(self, *args):
        pass

    def copyfile(self, source, outputfile):
        slow = self.delay and self.path not in self.slowed
        if slow:
            self.slowed.add(self.path)
        while True:
            block = source.read(1 * MiB)
            if not block:
                break
            try:
                outputfile.write(block)
            except (BrokenPipeError, ConnectionResetError):
                return
            if slow:
                time.sleep(self.delay)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@contextlib.contextmanager
def http_server(directory, delay=0.0):
    """Serve ``directory`` on 127.0.0.1 (a free port) for the block; yields the base URL.

    With ``delay``, the first request of each file is sent at one MiB per ``delay`` seconds.
    """
    handler = type("Handler", (_Handler,), {"delay": delay, "slowed": set()})
    server = _Server(("127.0.0.1", 0), functools.partial(handler, directory=directory))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def scratch(prefix="inplace-images-"):
    return tempfile.mkdtemp(prefix=prefix)
