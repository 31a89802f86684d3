"""Preflight's profile estimate is profile_capture's own check mode, on a small made-up system."""

from __future__ import annotations

import os
import shutil

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.preflight import check as _check

from .conftest import HOME_FILES

pytestmark = pytest.mark.skipif(not shutil.which("zstd"), reason="needs zstd")


def test_the_estimate_reports_what_the_store_needs(old_system):
    estimate = _check.estimate_profiles(ProcessRunner(), ["auto"], [], None, root=str(old_system))
    assert [user["name"] for user in estimate["users"]] == ["alice"]
    assert estimate["users"][0]["uid"] == os.getuid()
    # The default rules leave the cache out.
    kept = sum(len(data) for path, data in HOME_FILES.items() if not path.startswith(".cache/"))
    assert estimate["users"][0]["bytes"] == kept
    assert estimate["homes_not_archived"] == []
    assert 0 < estimate["estimated_archive_bytes"] < estimate["store_bytes_needed"]


def test_an_unreadable_root_is_a_sentence_for_preflight(tmp_path):
    sentences = []
    assert _check._attempt("estimating the profiles", sentences, _check.estimate_profiles, ProcessRunner(),
                           ["auto"], [], None, root=str(tmp_path)) is None
    assert sentences == ["root %s is not readable or holds no etc/passwd; mount the old system there first." % tmp_path]
