"""Running a module's main() in-process, as ansible-core's own module tests do.

ansible-core 2.19 reads module arguments through ``patch_module_args``; exit_json and
fail_json print the result as JSON and raise SystemExit, which ``run_module`` catches.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from ansible.module_utils.testing import patch_module_args


@pytest.fixture
def run_module(capsys):
    """``run_module(module, args, check_mode=False, diff=False)`` -> the result, with ``exit_code`` added."""
    def run(module, args, check_mode=False, diff=False):
        internal = {"_ansible_check_mode": check_mode, "_ansible_diff": diff}
        capsys.readouterr()
        with patch_module_args(dict(args, **internal)):
            with pytest.raises(SystemExit) as exited:
                module.main()
        out = capsys.readouterr().out
        result = json.loads(out)
        result["exit_code"] = exited.value.code
        assert (exited.value.code == 1) == bool(result.get("failed")), out
        return result
    return run


def tree_state(top):
    """{relative path: (mode, size, sha256 or link target)} of everything under ``top`` (absent: None)."""
    if not os.path.lexists(top):
        return None
    state = {}
    for base, dirs, files in os.walk(top):
        for name in [""] + dirs + files:
            path = os.path.join(base, name) if name else base
            info = os.lstat(path)
            if os.path.islink(path):
                content = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    content = hashlib.sha256(handle.read()).hexdigest()
            else:
                content = None
            state[os.path.relpath(path, top)] = (info.st_mode, info.st_size if content else None, content)
    return state


def write_accounts(root, users):
    """etc/passwd, group, shadow and login.defs of a made-up system at ``root`` for ``users`` ({name: uid})."""
    etc = os.path.join(root, "etc")
    os.makedirs(etc, exist_ok=True)
    gid = os.getgid()
    with open(os.path.join(etc, "passwd"), "w") as handle:
        # As root this process's uid is 0 too, and the range below holds it: then alice is the only account.
        if 0 not in users.values():
            handle.write("root:x:0:0:root:/root:/bin/bash\n")
        for name, uid in users.items():
            handle.write("%s:x:%d:%d:%s:/home/%s:/bin/sh\n" % (name, uid, gid, name.title(), name))
    with open(os.path.join(etc, "group"), "w") as handle:
        handle.write("root:x:0:\n" if gid == 0 else "root:x:0:\nstaff:x:%d:\n" % gid)
    with open(os.path.join(etc, "shadow"), "w") as handle:
        for name in users:
            handle.write("%s:$6$salt$%s:19000:0:99999:7:::\n" % (name, name))
    # The range holds this process's uid, whatever it is (0 as root, 65534 as nobody).
    low, high = min(list(users.values()) + [1000]), max(list(users.values()) + [60000])
    with open(os.path.join(etc, "login.defs"), "w") as handle:
        handle.write("UID_MIN %d\nUID_MAX %d\n" % (low, high))


HOME_FILES = {
    "Documents/notes.txt": b"shopping: milk\n",
    "Documents/report.odt": bytes(range(256)) * 64,
    ".bashrc": b"alias ll='ls -l'\n",
    ".cache/thumbnails/t.png": b"\x89PNG" + b"x" * 5000,
}


@pytest.fixture
def old_system(tmp_path):
    """An old system root where alice (this process's own uid, so no root is needed) has a small home."""
    root = tmp_path / "old"
    write_accounts(str(root), {"alice": os.getuid()})
    home = root / "home" / "alice"
    for relative, data in HOME_FILES.items():
        path = home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.chmod(home / ".bashrc", 0o600)
    os.symlink("Documents/notes.txt", home / "notes")
    (home / "empty").mkdir()
    return root
