"""Every module's documentation renders with ansible-doc."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support import adhoc

MODULES = sorted(name[:-3] for name in os.listdir(os.path.join(adhoc.REPO, "plugins", "modules"))
                 if name.endswith(".py") and not name.startswith("_"))


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders(module):
    proc = subprocess.run(["ansible-doc", "inplace.migration." + module], capture_output=True, text=True,
                          env=adhoc.environment(), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "inplace.migration.%s" % module in proc.stdout
    assert "EXAMPLES:" in proc.stdout and "RETURN VALUES:" in proc.stdout
    assert "[WARNING]" not in proc.stderr, proc.stderr
