# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""profile_capture's work: choose users, walk their homes, archive, verify, write the manifest last."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import zlib

from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.profiles import accounts as _accounts
from ansible_collections.inplace.migration.plugins.module_utils.profiles import archive as _archive
from ansible_collections.inplace.migration.plugins.module_utils.profiles import homes as _homes
from ansible_collections.inplace.migration.plugins.module_utils.profiles import manifest as _manifest
from ansible_collections.inplace.migration.plugins.module_utils.profiles import walk as _walk
from ansible_collections.inplace.migration.plugins.module_utils.profiles import standalone as _standalone
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.state.store import (
    MANIFEST, PROFILES, Store, atomic_write_json, fsync_directory, read_json,
)
from ansible_collections.inplace.migration.plugins.module_utils.common.units import MiB, human

SETTINGS_ARCHIVE = "settings.tar.zst"
# Per archive member, what tar's pax headers cost after compression, roughly.
HEADER_BYTES = 512
ESTIMATE_MARGIN = 0.10
ESTIMATE_FIXED = 64 * MiB
WORK_DIR = "inplace/profiles/.work"


def _os_release(root):
    values = {}
    for relative in ("etc/os-release", "usr/lib/os-release"):
        try:
            with open(os.path.join(root, relative)) as handle:
                for line in handle:
                    key, sep, value = line.strip().partition("=")
                    if sep:
                        values[key] = value.strip('"')
            break
        except OSError:
            continue
    return {k: values.get(k) for k in ("ID", "VERSION_ID", "PRETTY_NAME")}


def _hostname(root):
    try:
        with open(os.path.join(root, "etc/hostname")) as handle:
            return handle.read().strip() or None
    except OSError:
        return socket.gethostname() if root == "/" else None


def _check_root(root):
    if not os.path.isdir(root) or not os.access(os.path.join(root, "etc/passwd"), os.R_OK):
        raise MigrationError("root %s is not readable or holds no etc/passwd; mount the old system there first." % root)


# Without the zstd command the sample goes through zlib at this level, which every python3 has: preflight
# runs on the old system, and a stock Debian 12 PC may have no zstd. On samples of system files (code,
# libraries, documentation, icons) zlib -6 came out from 4 % below to 29 % above zstd -3, mostly a few
# percent above; ESTIMATE_MARGIN covers the shortfall.
ZLIB_LEVEL = 6


def _sample_data(samples):
    """The sampled files' first bytes, file by file; files that cannot be read are left out."""
    for path, size in samples:
        try:
            with open(path, "rb") as handle:
                yield handle.read(min(size, _walk.SAMPLE_BYTES_PER_FILE))
        except OSError:
            continue


def _zstd_ratio(zstd, samples, level):
    proc = subprocess.Popen([zstd, "-q", "-c", "-T0", "-%d" % level], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    fed = 0
    compressed = 0

    def drain():
        nonlocal compressed
        while True:
            chunk = proc.stdout.read(_archive.CHUNK)
            if not chunk:
                return
            compressed += len(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        for data in _sample_data(samples):
            proc.stdin.write(data)
            fed += len(data)
    finally:
        proc.stdin.close()
        reader.join()
        proc.wait()
    return compressed / fed if fed else 1.0


def _zlib_ratio(samples):
    compressor = zlib.compressobj(ZLIB_LEVEL)
    fed = compressed = 0
    for data in _sample_data(samples):
        fed += len(data)
        compressed += len(compressor.compress(data))
    compressed += len(compressor.flush())
    return compressed / fed if fed else 1.0


def estimate_ratio(runner, samples, level):
    """(compressed/raw ratio of the sampled files' first bytes, what measured it: ``zstd`` or ``zlib``).

    zstd at ``level`` is what the capture will use; zlib stands in where the command is missing.
    """
    if not samples:
        return 1.0, None
    if runner.has("zstd"):
        return _zstd_ratio(runner.path("zstd"), samples, level), "zstd"
    return _zlib_ratio(samples), "zlib"


class Capture:
    def __init__(self, runner, root, store, users=None, exclude_users=None, include=None, exclude=None,
                 max_file_size=None, skip_preserved_mounts=True, settings=None, compression=3):
        self.home_paths = {}  # name -> the home's directory on this host, for users whose home is archived
        self.selection = []  # every selected user's name, in order
        self._scan = None
        self.runner = runner
        self.root = root
        self.store = Store(store)
        self.users = users or ["auto"]
        self.exclude_users = exclude_users or []
        self.rules = _walk.Rules(include, exclude, max_file_size)
        self.rules_spec = {"include": include or [], "exclude": _walk.DEFAULT_EXCLUDE if exclude is None else exclude,
                           "max_file_size": max_file_size}
        self.skip_preserved_mounts = skip_preserved_mounts
        self.settings = settings or []
        self.compression = compression

    def _select(self):
        """(users whose home is archived, users recorded without an archive, the groups of all of them).

        Every selected account is one or the other: none is left out of the manifest.
        """
        selected, groups = _accounts.select_users(self.root, self.users, self.exclude_users)
        self.selection = [u["name"] for u in selected]
        homes = _homes.Homes(self.root, resolve=self._resolve_spec)
        named = self.users != ["auto"]
        archived, others = [], []
        for user in selected:
            if "/" in user["name"] or user["name"].startswith("."):
                raise MigrationError("user name %r cannot name an archive file." % user["name"])
            home = homes.locate(user, named, keep_preserved=self.skip_preserved_mounts)
            if home.state == "archive":
                self.home_paths[user["name"]] = home.path
                archived.append(dict(user, home_archived=True, home_source=home.seen_as))
            else:
                others.append(dict(user, home_archived=False, home_state=home.state, reason=home.reason))
        return archived, others, _accounts.supplementary_groups(selected, groups)

    def _resolve_spec(self, spec):
        """The devices an fstab spec names on this host (blkid, read once and only when asked)."""
        if self._scan is None:
            self._scan = _devices.Scan(self.runner)
        return self._scan.matching(spec)

    def _walk_all(self, users, listings):
        scans = {}
        for user in users:
            home = self.home_paths[user["name"]]
            if listings is None:
                scans[user["name"]] = _walk.walk(home, self.rules)
            else:
                with open(os.path.join(listings, user["name"] + ".list"), "wb") as listing:
                    scans[user["name"]] = _walk.walk(home, self.rules, listing)
        return scans

    def _fingerprint(self, users, groups, scans, settings_paths):
        digest = hashlib.sha256()
        digest.update(json.dumps({"users": users, "groups": groups, "rules": self.rules_spec,
                                  "settings": self.settings, "compression": self.compression},
                                 sort_keys=True).encode("utf-8"))
        for name in sorted(scans):
            digest.update(scans[name].fingerprint.digest())
        for relative in settings_paths:
            try:
                info = os.lstat(os.path.join(os.fsencode(self.root), relative))
            except OSError:
                continue
            digest.update(b"%s %d %d\n" % (relative, info.st_size, info.st_mtime_ns))
        return digest.hexdigest()

    def _estimate(self, users, scans):
        samples = [s for scan in scans.values() for s in scan.samples]
        ratio, estimator = estimate_ratio(self.runner, samples, self.compression)
        per_user = {}
        for user in users:
            scan = scans[user["name"]]
            per_user[user["name"]] = int(scan.allocated * ratio) + scan.files * HEADER_BYTES
        archives = sum(per_user.values())
        needed = int(archives * (1 + ESTIMATE_MARGIN)) + ESTIMATE_FIXED
        return ratio, estimator, per_user, archives, needed

    def run(self, check_mode=False, force=False):
        _check_root(self.root)
        if not check_mode:
            self.store.check(writable=True)
        users, others, groups = self._select()
        settings_paths = _walk.settings_paths(self.root, self.settings, [u["name"] for u in users + others])
        not_archived = [{k: u[k] for k in ("name", "uid", "home", "source", "home_state", "reason")} for u in others]
        result = {"changed": False, "users": [], "homes_not_archived": not_archived, "settings": {
            "groups": self.settings, "paths": [os.fsdecode(p) for p in settings_paths]}}

        if check_mode:
            scans = self._walk_all(users, None)
        else:
            work = self.store.ensure_dir(WORK_DIR)
            scans = self._walk_all(users, work)
        for user in users:
            result["users"].append(dict(name=user["name"], uid=user["uid"], home=user["home"], source=user["source"],
                                        **scans[user["name"]].summary()))
        fingerprint = self._fingerprint(users + others, groups, scans, settings_paths)
        manifest_path = self.store.path(MANIFEST)

        if check_mode:
            # Only the estimate reads file contents (a sample); a real run needs none of it.
            ratio, estimator, per_user, archives, needed = self._estimate(users, scans)
            for summary in result["users"]:
                summary["estimated_archive_bytes"] = per_user[summary["name"]]
            result.update(compression_ratio=round(ratio, 4), compression_estimator=estimator,
                          estimated_archive_bytes=archives,
                          store_bytes_needed=needed)
            existing = read_json(manifest_path) if os.path.isdir(self.store.root) else None
            result["changed"] = force or not self._is_current(existing, fingerprint)
            return result
        existing = read_json(manifest_path)
        if not force and self._is_current(existing, fingerprint):
            shutil.rmtree(self.store.path(WORK_DIR), ignore_errors=True)
            result["manifest"] = manifest_path
            return result

        result["changed"] = True
        if existing is not None:
            # From here on no manifest may claim a capture that is being replaced.
            os.unlink(manifest_path)
            fsync_directory(os.path.dirname(manifest_path))
        profiles = self.store.path(PROFILES)
        work = self.store.path(WORK_DIR)
        written = []
        manifest_users = []
        for user, summary in zip(users, result["users"]):
            name = user["name"]
            destination = os.path.join(profiles, name + ".tar.zst")
            try:
                archive = _archive.create_archive(self.runner, self.home_paths[name], os.path.join(
                    work, name + ".list"), destination, self.compression)
            except _archive.StoreFull:
                for path in written:
                    os.unlink(path)
                shutil.rmtree(work, ignore_errors=True)
                unused_ratio, unused_estimator, per_user, archives, unused_needed = self._estimate(users, scans)
                raise MigrationError("the store %s is full: the archives need about %s, and %s is free with this "
                                     "capture's archives removed; make it about %s larger." % (
                                         self.store.root, human(archives), human(self.store.free_bytes()),
                                         human(max(MiB, archives - self.store.free_bytes()))), **result)
            written.append(destination)
            summary.update(archive=os.path.basename(destination), archive_bytes=archive["bytes"],
                           sha256=archive["sha256"], warnings=archive["warnings"])
            manifest_users.append(dict(user, archive=os.path.basename(destination), sha256=archive["sha256"],
                                       bytes=archive["bytes"], files=scans[name].files, data_bytes=scans[name].bytes,
                                       skipped=summary["skipped"], excluded=summary["excluded"]))
        settings_record = self._capture_settings(settings_paths, work, result)
        for entry in manifest_users + ([settings_record] if settings_record else []):
            _archive.verify(os.path.join(profiles, entry["archive"]), entry["sha256"], entry["bytes"], from_device=True)
        shutil.rmtree(work, ignore_errors=True)
        _standalone.write_restore_program(self.store)
        manifest_users = sorted(manifest_users + others, key=lambda u: self.selection.index(u["name"]))
        manifest = {
            "format": _manifest.FORMAT, "complete": True, "verified": True, "created": time.time(),
            "fingerprint": fingerprint,
            "source": {"root": self.root, "hostname": _hostname(self.root), "os_release": _os_release(self.root)},
            "rules": self.rules_spec, "compression": self.compression,
            "users": manifest_users, "groups": groups, "settings": settings_record,
        }
        atomic_write_json(manifest_path, manifest)
        result.update(manifest=manifest_path, archive_bytes=sum(
            u["bytes"] for u in _manifest.archive_entries(manifest)))
        return result

    def _capture_settings(self, paths, work, result):
        if not self.settings:
            return None
        listing = os.path.join(work, "settings.list")
        with open(listing, "wb") as handle:
            for relative in paths:
                handle.write(relative + b"\0")
        destination = self.store.path(PROFILES, SETTINGS_ARCHIVE)
        archive = _archive.create_archive(self.runner, self.root, listing, destination, self.compression)
        record = {"groups": self.settings, "archive": SETTINGS_ARCHIVE, "sha256": archive["sha256"],
                  "bytes": archive["bytes"], "files": len(paths), "paths": [os.fsdecode(p) for p in paths]}
        result["settings"].update(record)
        return record

    def _is_current(self, manifest, fingerprint):
        if manifest is None or _manifest.problem(self.store, manifest, check_archives=True):
            return False
        return manifest.get("format") == _manifest.FORMAT and manifest.get("fingerprint") == fingerprint
