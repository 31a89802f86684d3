"""The lab's build cache: one directory per artifact, named by a hash of everything that made it.

A build goes into a temporary directory beside its final place and is renamed into
place only when it is complete, under a lock, so an interrupted or concurrent build
never leaves a half-made artifact that a later run would trust.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def root():
    base = os.environ.get("INPLACE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inplace-migration")
    path = os.path.join(base, "lab")
    os.makedirs(path, exist_ok=True)
    return path


def key(inputs, files=()):
    """A short hash of ``inputs`` (anything JSON can say) and the contents of ``files``."""
    sha = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode())
    for path in sorted(files):
        sha.update(os.path.relpath(path, HERE).encode() + b"\0")
        with open(path, "rb") as handle:
            sha.update(handle.read())
    return sha.hexdigest()[:16]


@contextlib.contextmanager
def _locked(name):
    with open(os.path.join(root(), ".%s.lock" % name), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def cached(name, inputs_key, build):
    """The directory ``<cache>/<name>-<key>``, made by ``build(directory)`` unless it already exists."""
    final = os.path.join(root(), "%s-%s" % (name, inputs_key))
    with _locked(name):
        if os.path.isdir(final):
            return final
        work = tempfile.mkdtemp(prefix=".%s-%s." % (name, inputs_key), dir=root())
        try:
            build(work)
            os.chmod(work, 0o755)
            os.rename(work, final)
        finally:
            if os.path.exists(work):
                shutil.rmtree(work)
    return final


def ssh_key():
    """The lab's own SSH key pair (made once): the admin account on every lab PC accepts it."""
    path = os.path.join(root(), "ssh", "id_ed25519")
    with _locked("ssh"):
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "inplace-migration lab",
                            "-f", path], check=True)
    return path
