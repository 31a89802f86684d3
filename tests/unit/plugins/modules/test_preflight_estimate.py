"""Preflight's profile estimate is profile_capture's own check mode, on a small made-up system, with
the zstd command and, as on a stock Debian 12 PC, without it."""

from __future__ import annotations

import glob
import os
import shutil

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.preflight import check as _check
from ansible_collections.inplace.migration.plugins.module_utils.profiles import capture as _capture
from ansible_collections.inplace.migration.plugins.module_utils.preflight import inhibitors as _inhibitors
from ansible_collections.inplace.migration.plugins.module_utils.profiles import walk as _walk
from tests.support.stock import OLD_SYSTEM_TOOLS, SBIN, disk_without_pyparted

from .conftest import HOME_FILES

MiB = 1024 * 1024
needs_zstd = pytest.mark.skipif(not shutil.which("zstd"), reason="needs zstd")


class WithoutZstd(ProcessRunner):
    """A PC whose PATH has no zstd, as a stock Debian 12 install may not."""

    def _find(self, tool):
        return None if tool == "zstd" else super()._find(tool)


def test_the_estimate_reports_what_the_store_needs(old_system):
    estimate = _check.estimate_profiles(ProcessRunner(), ["auto"], [], None, root=str(old_system))
    assert [user["name"] for user in estimate["users"]] == ["alice"]
    assert estimate["users"][0]["uid"] == os.getuid()
    # The default rules leave the cache out.
    kept = sum(len(data) for path, data in HOME_FILES.items() if not path.startswith(".cache/"))
    assert estimate["users"][0]["bytes"] == kept
    assert estimate["homes_not_archived"] == []
    assert 0 < estimate["estimated_archive_bytes"] < estimate["store_bytes_needed"]
    assert estimate["compression_estimator"] == ("zstd" if shutil.which("zstd") else "zlib")


def test_without_zstd_the_estimate_is_made_with_zlib(old_system):
    runner = WithoutZstd()
    assert not runner.has("zstd")
    estimate = _check.estimate_profiles(runner, ["auto"], [], None, root=str(old_system))
    assert estimate["compression_estimator"] == "zlib"
    # report.odt (16 KiB of one repeated pattern) dominates the sample and compresses to almost nothing.
    assert 0 < estimate["compression_ratio"] < 0.1
    assert 0 < estimate["estimated_archive_bytes"] < estimate["store_bytes_needed"]


def test_a_preflight_without_zstd_has_an_estimate_and_no_inhibitor_about_it(old_system, monkeypatch):
    monkeypatch.setattr(_check, "inspect", lambda runner, ram, boot: dict(_check.UNKNOWN_SYSTEM, inhibitors=[]))
    estimate = _check.estimate_profiles
    monkeypatch.setattr(_check, "estimate_profiles", lambda runner, users, exclude_users, exclude: (
        estimate(runner, users, exclude_users, exclude, root=str(old_system))))
    result = _check.preflight(WithoutZstd(), profiles={"users": ["auto"]})
    assert result["inhibitors"] == []
    assert result["profiles"]["compression_estimator"] == "zlib"
    assert [user["name"] for user in result["profiles"]["users"]] == ["alice"]


def sample_files(directory, contents):
    samples = []
    for number, data in enumerate(contents):
        path = directory / ("sample-%d" % number)
        path.write_bytes(data)
        samples.append((str(path), len(data)))
    return samples


@needs_zstd
@pytest.mark.parametrize("pattern", ["*.py", os.path.join("lib-dynload", "*.so")])
def test_zlib_stands_in_for_zstd_within_the_estimates_margin(pattern):
    """Real files (Python's own library: code, and compiled modules) through both compressors."""
    paths = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), pattern)))[:_walk.SAMPLE_FILES]
    if len(paths) < 20:
        pytest.skip("too few files match %s here" % pattern)
    samples = [(path, os.path.getsize(path)) for path in paths]
    with_zstd, zstd_name = _capture.estimate_ratio(ProcessRunner(), samples, 3)
    with_zlib, zlib_name = _capture.estimate_ratio(WithoutZstd(), samples, 3)
    assert (zstd_name, zlib_name) == ("zstd", "zlib")
    # Where zlib comes out below zstd, the estimate's margin has to cover the difference.
    assert with_zstd * (1 - _capture.ESTIMATE_MARGIN) <= with_zlib <= with_zstd * 1.35, (with_zstd, with_zlib)


def test_unreadable_samples_are_left_out_and_nothing_read_is_ratio_one(tmp_path):
    samples = sample_files(tmp_path, [b"a" * 4096])
    assert _capture.estimate_ratio(WithoutZstd(), samples + [(str(tmp_path / "gone"), 100)], 3)[0] < 0.05
    assert _capture.estimate_ratio(WithoutZstd(), [(str(tmp_path / "gone"), 100)], 3) == (1.0, "zlib")
    assert _capture.estimate_ratio(WithoutZstd(), [], 3) == (1.0, None)


def test_an_unreadable_root_is_a_sentence_for_preflight(tmp_path):
    sentences = []
    assert _check._attempt("estimating the profiles", sentences, _check.estimate_profiles, ProcessRunner(),
                           ["auto"], [], None, root=str(tmp_path)) is None
    assert sentences == ["root %s is not readable or holds no etc/passwd; mount the old system there first." % tmp_path]


class Recording(WithoutZstd):
    """Records every tool looked up (and has no zstd)."""

    def __init__(self):
        super().__init__()
        self.tools = set()

    def _find(self, tool):
        self.tools.add(tool)
        return super()._find(tool)


@pytest.mark.skipif(not (shutil.which("sfdisk", path=SBIN) and shutil.which("mkfs.ext4", path=SBIN)
                         and shutil.which("lsblk", path=SBIN)), reason="needs sfdisk, mkfs.ext4 and lsblk")
def test_preflight_calls_only_tools_a_plain_debian_install_has(tmp_path, monkeypatch, old_system):
    disk = disk_without_pyparted(tmp_path, monkeypatch)
    runner = Recording()
    _check.inspect(runner)
    _check.estimate_profiles(runner, ["auto"], [], None, root=str(old_system))
    _check.plan_store(runner, disk, _inhibitors.store_need(0, 0, 0, 32 * MiB), "INPLACE-STORE", "auto")
    assert {"lsblk", "findmnt", "mkfs.ext4", "dumpe2fs", "zstd"} <= runner.tools
    assert runner.tools - {"zstd"} <= set(OLD_SYSTEM_TOOLS), "add the tool to tests/support/stock.py, or do without"
