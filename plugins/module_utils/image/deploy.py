# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""image_deploy's run: refuse what is unsafe, then verify, carry, write, grow, fix up, hand over the boot.

Every refusal comes before the first byte is written to the partition, the lack of a complete,
verified profile capture on the store included (unless require_capture is off). The journal
on the store records each step (fsync'd), so a rerun continues where the last run
stopped: a raw write from its last checkpoint, an archive from mkfs, a finished
write from its fix-ups; a completed deploy of the same image is left alone.
"""

from __future__ import annotations

import json
import os
import resource
import time

from ansible_collections.inplace.migration.plugins.module_utils.image import fixups as _fixups
from ansible_collections.inplace.migration.plugins.module_utils.disk import devices as _devices
from ansible_collections.inplace.migration.plugins.module_utils.disk import fs as _fs
from ansible_collections.inplace.migration.plugins.module_utils.disk import mount as _mount
from ansible_collections.inplace.migration.plugins.module_utils.image import checksums as _checksums
from ansible_collections.inplace.migration.plugins.module_utils.image import formats as _formats
from ansible_collections.inplace.migration.plugins.module_utils.image import framing as _framing
from ansible_collections.inplace.migration.plugins.module_utils.image import pipeline as _pipeline
from ansible_collections.inplace.migration.plugins.module_utils.image import sources as _sources
from ansible_collections.inplace.migration.plugins.module_utils.image import target as _target
from ansible_collections.inplace.migration.plugins.module_utils.image.handover import HandOver, now
from ansible_collections.inplace.migration.plugins.module_utils.image import writer as _writer
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.profiles import manifest as _manifest
from ansible_collections.inplace.migration.plugins.module_utils.profiles import standalone as _standalone
from ansible_collections.inplace.migration.plugins.module_utils.state.store import Store
from ansible_collections.inplace.migration.plugins.module_utils.common.units import human

KEY = "image_deploy"
WRITTEN_STATES = ("writing", "invalid", "written", "fixups", "bootloader")
MKFS = {"ext2": ["mkfs.ext2", "-F", "-q"], "ext3": ["mkfs.ext3", "-F", "-q"], "ext4": ["mkfs.ext4", "-F", "-q"],
        "btrfs": ["mkfs.btrfs", "-f", "-q"], "xfs": ["mkfs.xfs", "-f", "-q"]}


class Deploy(HandOver):
    def __init__(self, runner, params, check_mode=False):
        self.runner = runner
        self.params = params
        self.check_mode = check_mode
        self.store = Store(params["store"])
        self.journal = self.store.journal
        self.source = _sources.Source(params["src"])
        self.result = {"changed": False, "src": params["src"], "timings": {}, "fixups": {}}

    # -- small helpers

    def tool(self, name):
        return self.runner.path(name)

    def timed(self, name):
        started = time.monotonic()
        outer = self

        class Timer:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                outer.result["timings"][name] = round(time.monotonic() - started, 3)
                return False
        return Timer()

    def record(self, **fields):
        fields["updated"] = now()
        return self.journal.update(KEY, **fields)

    # -- what the image is

    def inspect(self):
        """(format, compression, bytes the partition must hold or None) from the image's first bytes."""
        fmt = self.params["format"]
        head = self.source.head()
        compression = _formats.compression_of(head)
        if fmt == "qcow2" or (fmt == "auto" and compression == "qcow2"):
            if compression != "qcow2":
                raise MigrationError("src %s is not a qcow2 image (no QFI magic); set format=auto or the image's own "
                                     "format." % self.params["src"])
            if self.source.is_url:
                raise MigrationError("a qcow2 image is read at random by qemu-img, so it must be a local file; "
                                     "stage %s on the store first." % self.params["src"])
            info = self.runner.output(["qemu-img", "info", "--output=json", "-f", "qcow2", self.source.path])
            return "qcow2", None, int(json.loads(info)["virtual-size"])
        inner = None
        if compression in _pipeline.DECOMPRESSORS:
            inner = _pipeline.decompressed_head(self.source, compression, self.tool)
        if fmt == "auto":
            fmt = _formats.detect(head, inner)
            if fmt is None:
                raise MigrationError("the format of %s is unknown: it is neither a zstd, gzip or xz stream, a qcow2 "
                                     "image, a tar archive nor a raw ext, btrfs or xfs filesystem; set format." %
                                     self.params["src"])
        kind, wanted = _formats.split_format(fmt)
        if wanted != compression and not (wanted is None and compression is None):
            raise MigrationError("src %s is %s, not %s as format=%s says." % (
                self.params["src"], ("%s-compressed" % compression) if compression else "not compressed", wanted, fmt))
        content = inner if compression else head
        if kind == "tar":
            if not _formats.is_tar(content or b""):
                raise MigrationError("src %s is not a tar archive (format=%s)." % (self.params["src"], fmt))
            return fmt, compression, None
        sizes = []
        found = _formats.filesystem_of(content or b"")
        if found:
            sizes.append(found[1])
        if compression is None and self.source.size() is not None:
            sizes.append(self.source.size())
        if compression == "zst":
            declared = _formats.zstd_content_size(head)
            if declared:
                sizes.append(declared)
        return fmt, compression, max(sizes) if sizes else None

    # -- the steps

    def check_disk(self, device, refused):
        """Refuse ``refused`` unless the disk holding ``device`` has the recorded identity (read afresh)."""
        if self.params.get("disk_identity"):
            scan = _devices.Scan(self.runner, [])
            scan.check_disk(_devices.parent_disk(device), self.params["disk_identity"], refused)

    def verify(self, expected, compression):
        """The checksum gate of a local image, then its framing (a file cut before its checksum was taken)."""
        if self.source.is_url:
            return None
        with self.timed("verify"):
            identity = self.source.identity()
            actual = _checksums.file_sha256(self.source.path)
            if actual != expected:
                raise MigrationError("the sha256 of %s is %s, not %s as checksum says, so nothing was written; fetch "
                                     "the image again (a cut download is shorter) or correct checksum." % (
                                         self.params["src"], actual, expected))
            _framing.check(self.source.path, compression, self.params["src"])
        return identity

    def carry(self, scan, device, pristine):
        """Copy what the fix-ups need from the old root on ``device`` into the store (nothing is written to it)."""
        wanted = self.params.get("carry_accounts") or []
        if pristine:
            values = scan.values(device)
            fstype = values.get("TYPE")
            if fstype in ("ext2", "ext3", "ext4", "btrfs", "xfs"):
                try:
                    # Read-only, but a journal a crash left is replayed: reading without the replay can
                    # return stale or garbled files (the partition is about to be overwritten anyway).
                    with _mount.temporary_mount(self.runner, device, fstype, readonly=True) as root:
                        if _fixups.looks_like_root(root):
                            data = _fixups.gather(root, wanted)
                            data.update(source=device, partuuid=(values.get("PART_ENTRY_UUID") or "").lower())
                            _fixups.save_carry(self.store, data)
                            return {"source": "the old system on " + device, "accounts": [
                                a["name"] for a in data["accounts"]], "missing_accounts": data["missing_accounts"]}
                except MigrationError:
                    pass
        data = _fixups.load_carry(self.store)
        if data is None:
            return {"source": None, "reason": "dest holds no recognisable old system and the store has no copy"}
        return {"source": "the store's copy (%s, %s)" % (data.get("source"), data.get("time")),
                "accounts": [a["name"] for a in data["accounts"]], "missing_accounts": data["missing_accounts"]}

    def check_source(self, device, digest, expected, identity):
        """After a write: a streamed image must have hashed right, a local one must not have changed meanwhile."""
        if digest is not None and digest != expected:
            problem = "the sha256 of the image streamed from %s is %s, not %s as checksum says" % (
                self.params["src"], digest, expected)
        elif identity is not None and self.source.identity() != identity:
            problem = "%s changed while it was written" % self.params["src"]
        else:
            return
        self.record(state="invalid", error=problem)
        raise MigrationError("%s; %s now holds no valid system." % (problem, device))

    def write_raw(self, device, compression, expected, skip, identity, size):
        stream = _pipeline.Pipeline(self.source, compression, self.tool, hash_source=self.source.is_url)
        descriptor, direct = _writer.open_for_writing(device)
        checkpoint = self.params["checkpoint"]
        writer = _writer.ImageWriter(descriptor, size, skip=skip, checkpoint=checkpoint, direct=direct,
                                     on_checkpoint=lambda offset: self.record(offset=offset))
        try:
            try:
                length = writer.write(stream)
            except MigrationError as error:  # the image does not fit: running again cannot help
                self.record(state="invalid", error=str(error))
                raise
            digest = stream.finish()
        except BaseException:
            stream.abort()
            raise
        finally:
            os.close(descriptor)
        self.check_source(device, digest, expected, identity)
        return {"image_bytes": length, "written_bytes": writer.written, "zeroed_bytes": writer.zeroed,
                "resumed_from": skip, "direct_io": direct}

    def write_qcow2(self, device, identity):
        descriptor, unused_direct = _writer.open_for_writing(device)  # refuses a device in use
        os.close(descriptor)
        self.runner.run(["qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", "-t", "none", self.source.path,
                         device])
        descriptor = os.open(device, os.O_WRONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        self.check_source(device, None, None, identity)
        return {"image_bytes": None, "resumed_from": 0}

    def write_archive(self, device, compression, expected, identity):
        fstype = self.params["fstype"]
        descriptor, unused_direct = _writer.open_for_writing(device)
        os.close(descriptor)
        self.runner.run(["wipefs", "-a", "-q", device])
        command = list(MKFS[fstype])
        if self.params.get("label"):
            command += ["-L", self.params["label"]]
        self.runner.run(command + [device])
        with _mount.temporary_mount(self.runner, device, fstype) as root:
            tar = [self.tool("tar"), "-C", root] + _formats.TAR_EXTRACT
            stream = _pipeline.Pipeline(self.source, compression, self.tool, hash_source=self.source.is_url,
                                        consumer=tar)
            try:
                digest = stream.finish()
            except BaseException:
                stream.abort()
                raise
        self.check_source(device, digest, expected, identity)
        return {"image_bytes": None, "resumed_from": 0}

    def grow(self, device, fstype):
        before = self.fs_size(device)
        if self.params["grow"]:
            _fs.kind(fstype).grow(self.runner, device, None)
        return {"grown": bool(self.params["grow"]), "size_before": before, "size": self.fs_size(device),
                "partition_size": _devices.device_size(device)}

    def fs_size(self, device):
        with open(device, "rb") as handle:
            found = _formats.filesystem_of(handle.read(_formats.HEAD_BYTES))
        return found[1] if found else None

    # -- the whole run

    def run(self):
        params = self.params
        self.store.check(writable=not self.check_mode)
        self.source.check()
        if params.get("restore_options") is not None and not self.check_mode:
            if _standalone.put_restore_options(self.store, params["restore_options"]):
                self.result["changed"] = True
        self.expected = expected = _checksums.expected_sha256(params["checksum"], params["src"])
        scan = _devices.Scan(self.runner)
        record = self.journal.get(KEY)
        device, dest_id = _target.find_dest(scan, params["dest"], record)
        self.result["dest"] = dict(dest_id, device=device, spec=params["dest"])
        _target.refuse(scan, device, params["dest"], self.store.root, params.get("protect"))
        same = bool(record and record.get("checksum") == "sha256:" + expected and _target.is_dest(record, dest_id))
        if same and record.get("state") == "complete":
            self.result.update(state="complete", format=record.get("format"), filesystem=record.get("filesystem"),
                               message="this image was already deployed to %s (%s)." % (device, record.get("updated")))
            return self.rearm_first_boot(scan, device, record)
        started = bool(_target.is_dest(record, dest_id) and (
            record.get("touched") or record.get("state") in WRITTEN_STATES))
        if params.get("require_capture", True) and not started:
            # Nothing is written over the old system before its profiles are safely on the store; a rerun
            # after the write started must finish whatever the store holds by now.
            _manifest.require_capture(self.store)
        fmt, compression, needed = self.inspect()
        self.result["format"] = fmt
        size = _devices.device_size(device)
        if needed is not None and needed > size:
            raise MigrationError("the image needs %s but dest=%s (%s) holds %s." % (
                human(needed), params["dest"], device, human(size)))
        disk = _target.bootloader_disk(scan, device, params["bootloader"])
        if params["bootloader"] == "grub-efi":
            self.esp_device(scan, device)  # refused before anything is written when the ESP is not decided
        self.check_disk(device, "writing the new system to %s" % device)
        if self.check_mode:
            self.verify(expected, compression)
            self.result.update(changed=True, state="planned", image_bytes=needed)
            return self.result
        return self._run_locked(scan, device, dest_id, disk, fmt, compression, expected, size)

    def _run_locked(self, scan, device, dest_id, disk, fmt, compression, expected, size):
        params = self.params
        record = self.journal.get(KEY)
        same = bool(record and record.get("checksum") == "sha256:" + expected and _target.is_dest(record, dest_id)
                    and record.get("format") == fmt)
        ours = _target.is_dest(record, dest_id)
        touched = bool(ours and record.get("state") != "complete" and (
            record.get("touched") or record.get("state") in WRITTEN_STATES))
        state = record.get("state") if same else None
        # A local image is verified before anything is recorded or written: a mismatch changes nothing.
        identity = self.verify(expected, compression)
        if not same:
            # "verifying": the image is verified, the old system's data is being carried; dest is untouched.
            record = dict(dest_id, dest=params["dest"], device=device, src=params["src"],
                          checksum="sha256:" + expected, format=fmt, state="verifying", touched=touched,
                          started=now(), updated=now())
            self.journal.put(KEY, record)
        self.result["changed"] = True
        try:
            store_device = _devices.device_holding(self.store.root)
            if state in ("written", "fixups", "bootloader"):
                written = {"resumed_from": "fix-ups (the image was written before)"}
                self.result["carry"] = self.carry(scan, device, pristine=False)
            else:
                # Only a raw stream resumes part-way; qcow2 and archives start over.
                resumable = state == "writing" and fmt in ("raw", "raw.zst", "raw.gz", "raw.xz")
                with self.timed("carry"):
                    self.result["carry"] = self.carry(scan, device, pristine=not touched)
                skip = (record.get("offset") or 0) if resumable else 0
                # Every start of the write, with the offset it starts from: the fault matrix counts
                # the starts from 0 to tell a resumed write from the image written twice.
                starts = (self.journal.get(KEY) or {}).get("write_starts", []) + [skip]
                if resumable:
                    self.record(write_starts=starts)
                else:
                    self.record(state="writing", touched=True, offset=0, write_starts=starts)
                with self.timed("write"):
                    if fmt == "qcow2":
                        written = self.write_qcow2(device, identity)
                    elif fmt in _formats.ARCHIVE_FORMATS:
                        written = self.write_archive(device, compression, expected, identity)
                    else:
                        written = self.write_raw(device, compression, expected, skip, identity, size)
            self.result.update(written)
            if state not in ("written", "fixups", "bootloader"):
                self.record(state="written", image_bytes=written.get("image_bytes"))
            found = _devices.blkid(self.runner, device)
            fs = {"type": found.get("TYPE"), "uuid": found.get("UUID")}
            if fs["type"] not in _fs.KINDS:
                raise MigrationError("the image written to %s holds no ext2/3/4, btrfs or xfs filesystem (%s)." % (
                    device, fs["type"] or "none found"))
            with self.timed("grow"):
                self.result["grow"] = self.grow(device, fs["type"])
            fs["size"] = self.result["grow"]["size"]
            self.result["filesystem"] = fs
            self.record(state="fixups", filesystem=fs)
            if any(params[name] for name in ("fstab", "hostname", "ssh_host_keys", "firstboot")) or \
                    params["carry_accounts"] or params["bootloader"] != "none":
                with self.timed("fixups"):
                    self.fixups(scan, device, disk, fs, store_device)
            self.record(state="complete", completed=now(), offset=None)
            self.result["state"] = "complete"
            self.result["peak_rss"] = {
                "module": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}
            return self.result
        except MigrationError as error:
            error.partial.update(self.result)
            error.partial["state"] = (self.journal.get(KEY) or {}).get("state")
            raise
