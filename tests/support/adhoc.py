"""Run a collection module through Ansible itself and get its result back as a dict."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_collections_root = None


def collections_root():
    """A directory holding ansible_collections/inplace/migration -> this checkout (made once per process,
    removed when the process ends)."""
    global _collections_root
    if _collections_root is None:
        root = tempfile.mkdtemp(prefix="inplace-collections-")
        atexit.register(shutil.rmtree, root, True)
        link = os.path.join(root, "ansible_collections", "inplace", "migration")
        os.makedirs(os.path.dirname(link))
        os.symlink(REPO, link)
        _collections_root = root
    return _collections_root


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


def assert_one_sentence_naming_the_fix(result, words):
    """A refusal as a user should see it: one sentence, holding every one of ``words`` (the option, the remedy),
    not a traceback or a tool's raw output."""
    message = result.get("msg") or ""
    assert result["rc"] != 0 and result.get("failed", True), "not refused: %s" % result
    for noise in ("MODULE FAILURE", "Traceback", "Module failed", "[Errno", "\n"):
        assert noise not in message, "%r in %r" % (noise, message)
    assert message.endswith("."), "not a sentence: %r" % message
    assert not re.search(r"[.!?]\s+[A-Z]", message[:-1]), "more than one sentence: %r" % message
    for word in words:
        assert word in message, "%r not in %r" % (word, message)


def playbook_command(path, check=False):
    command = ["ansible-playbook", "-c", "local", "-i", "localhost,", path]
    return command + ["--check"] if check else command


def playbook(path, check=False):
    """Run the playbook at ``path`` on localhost; return the finished process (stdout, stderr, returncode)."""
    return subprocess.run(playbook_command(path, check), capture_output=True, text=True, env=environment(), check=False)
