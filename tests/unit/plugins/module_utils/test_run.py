"""The runner outside Ansible (used by programs the collection installs on hosts)."""

from __future__ import annotations

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner


def test_runs_with_c_locale_and_returns_output():
    rc, out, err = ProcessRunner().run(["sh", "-c", "echo $LC_ALL; echo oops >&2"])
    assert (rc, out, err) == (0, "C\n", "oops\n")


def test_failure_names_the_command_and_its_last_words():
    with pytest.raises(MigrationError, match=r"sh -c echo bad >&2; exit 3 failed with exit code 3: bad"):
        ProcessRunner().run(["sh", "-c", "echo bad >&2; exit 3"])


def test_missing_tool_names_its_package():
    with pytest.raises(MigrationError, match="xfs_growfs is not installed on this host; install the xfsprogs package"):
        runner = ProcessRunner()
        runner._find = lambda tool: None
        runner.path("xfs_growfs")


def test_input_is_passed_on_stdin():
    assert ProcessRunner().run(["cat"], data="abc")[1] == "abc"
