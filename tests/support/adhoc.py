"""Run a collection module through Ansible itself and get its result back as a dict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def collections_root():
    """A directory holding ansible_collections/inplace/migration -> this checkout (made once per process)."""
    root = os.path.join(tempfile.gettempdir(), "inplace-collections-%d" % os.getpid())
    link = os.path.join(root, "ansible_collections", "inplace", "migration")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(REPO, link)
    return root


def environment():
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": collections_root(),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
    })
    return env


def module(name, args, check=False, diff=False):
    """Run ``inplace.migration.<name>`` on localhost; return its result (with ``rc`` of the ansible run)."""
    with tempfile.TemporaryDirectory(prefix="inplace-tree-") as tree:
        command = ["ansible", "localhost", "-c", "local", "-m", "inplace.migration." + name,
                   "-a", json.dumps(args), "--tree", tree]
        if check:
            command.append("--check")
        if diff:
            command.append("--diff")
        proc = subprocess.run(command, capture_output=True, text=True, env=environment(), check=False)
        path = os.path.join(tree, "localhost")
        if not os.path.exists(path):
            raise AssertionError("ansible produced no result (rc %d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr))
        with open(path) as handle:
            result = json.load(handle)
    result["rc"] = proc.returncode
    result["stdout"] = proc.stdout
    return result
