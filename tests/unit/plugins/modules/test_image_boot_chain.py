"""image_boot_chain's main(): real archives (tar, tar.zst, tar.gz) made here with GNU tar, read as a stream; only the
boot files are extracted and the scratch directory goes afterwards."""

from __future__ import annotations

import glob
import os
import subprocess
import tempfile

import pytest

from ansible_collections.inplace.migration.plugins.modules import image_boot_chain
from tests.support.efi_samples import pe_header

WHOLE = {"checked": True, "shim": "/usr/lib/shim/shimx64.efi.signed",
         "grub": "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
         "kernels": ["/boot/vmlinuz-6.12.0-1-amd64"], "unsigned_kernels": [], "missing": []}


def make_root(root, shim=True, kernel_signed=True, lvm=False):
    files = {"boot/vmlinuz-6.12.0-1-amd64": pe_header(signed=kernel_signed) + bytes(3000),
             "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed": pe_header() + bytes(3000),
             "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", "usr/bin/big": os.urandom(1 << 20)}
    if shim:
        files["usr/lib/shim/shimx64.efi.signed"] = pe_header() + bytes(3000)
    if lvm:
        files["usr/sbin/lvm"] = b"\x7fELF" + bytes(100)
    for name, data in files.items():
        os.makedirs(str(root / os.path.dirname(name)), exist_ok=True)
        (root / name).write_bytes(data)
    os.symlink("boot/vmlinuz-6.12.0-1-amd64", str(root / "vmlinuz"))
    return root


def archive(tmp_path, name, root, compress=None):
    path = tmp_path / name
    with open(str(path), "wb") as handle:
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        if compress:
            subprocess.run(compress, stdin=tar.stdout, stdout=handle, check=True)
        else:
            handle.write(tar.stdout.read())
        tar.stdout.close()
        assert tar.wait() == 0
    return str(path)


def scratch_left():
    return glob.glob(os.path.join(tempfile.gettempdir(), "inplace-boot-chain-*"))


@pytest.mark.parametrize("name,compress", [("debian13.tar.zst", ["zstd", "-q", "-c"]), ("debian13.tar", None),
                                           ("debian13.tar.gz", ["gzip", "-c"])])
def test_a_whole_signed_chain_is_found_in_the_archive(run_module, tmp_path, name, compress):
    before = scratch_left()
    path = archive(tmp_path, name, make_root(tmp_path / "root"), compress)
    result = run_module(image_boot_chain, {"path": path}, check_mode=True)
    assert not result.get("failed") and result["changed"] is False
    assert {key: result[key] for key in WHOLE} == WHOLE
    assert result["lvm"] is False
    assert scratch_left() == before


def test_lvm_s_tool_is_looked_for_too(run_module, tmp_path):
    path = archive(tmp_path, "debian13.tar.zst", make_root(tmp_path / "root", lvm=True), ["zstd", "-q", "-c"])
    result = run_module(image_boot_chain, {"path": path})
    assert result["checked"] is True and result["lvm"] is True and result["missing"] == []


def test_what_the_chain_lacks_is_named(run_module, tmp_path):
    path = archive(tmp_path, "debian13.tar.zst", make_root(tmp_path / "root", shim=False, kernel_signed=False),
                   ["zstd", "-q", "-c"])
    result = run_module(image_boot_chain, {"path": path})
    assert result["checked"] is True and result["shim"] is None
    assert result["unsigned_kernels"] == ["/boot/vmlinuz-6.12.0-1-amd64"]
    assert result["missing"] == ["shim (/usr/lib/shim/shimx64.efi.signed, from shim-signed)",
                                 "a signed kernel (none of /boot/vmlinuz-6.12.0-1-amd64 carries a signature)"]


def test_a_raw_image_is_not_looked_into(run_module, tmp_path):
    path = tmp_path / "debian13.raw.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(100))
    result = run_module(image_boot_chain, {"path": str(path)})
    assert result == {"changed": False, "checked": False, "exit_code": 0, "invocation": result["invocation"],
                      "reason": "debian13.raw.zst is not a root-filesystem archive (.tar, .tar.zst, .tar.gz, .tar.xz), "
                                "whose boot files are read here"}


def test_a_broken_archive_and_a_missing_file_are_one_sentence(run_module, tmp_path):
    path = tmp_path / "debian13.tar.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(200))
    result = run_module(image_boot_chain, {"path": str(path)})
    assert result["failed"] and result["msg"].startswith(
        "the image %s could not be decompressed to look for its boot chain (" % path)
    missing = run_module(image_boot_chain, {"path": str(tmp_path / "none.tar")})
    assert missing["failed"] and missing["msg"] == (
        "the image %s is not a file on this host; give the path of the local copy." % (tmp_path / "none.tar"))
