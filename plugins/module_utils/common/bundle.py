# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Programs the collection leaves on a PC that has no Ansible: one zip application each.

The new system's first-boot hook and the restore program on the store run the same
module_utils code the modules run. Each is a zip application (a shebang line, then a
zip whose ``__main__.py`` imports the collection's modules by their full names), made
from the running code with exactly the modules its entry point imports, followed
transitively, so nothing unused (such as the partition planner) is shipped.
"""

from __future__ import annotations

import ast
import importlib
import io
import zipfile

PACKAGE = "ansible_collections.inplace.migration.plugins.module_utils"
SHEBANG = b"#!/usr/bin/python3\n"
# A fixed timestamp: the same code makes the same bytes, so a rerun sees nothing changed.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _source(name):
    module = importlib.import_module(name)
    loader = getattr(module, "__loader__", None)
    source = loader.get_source(name) if loader is not None and hasattr(loader, "get_source") else None
    if source is None:
        with open(module.__file__) as handle:
            source = handle.read()
    return source


def _is_package(name):
    return hasattr(importlib.import_module(name), "__path__")


def _imports(source):
    """The collection modules ``source`` imports, by full name."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            if _is_package(node.module):
                found.update("%s.%s" % (node.module, alias.name) for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE + "."))
    return found


def closure(main_source):
    """Every collection module ``main_source`` needs, directly or through another, sorted."""
    needed, pending = set(), _imports(main_source)
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        pending |= _imports(_source(name)) - needed
    return sorted(needed)


def _entry(archive, path, data):
    info = zipfile.ZipInfo(path, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def zipapp(main_source):
    """The program's bytes: shebang, then a zip of ``__main__.py`` and the modules it needs."""
    modules = closure(main_source)
    buffer = io.BytesIO()
    buffer.write(SHEBANG)  # before the zip, as zipapp does, so the zip's offsets count it
    with zipfile.ZipFile(buffer, "w") as archive:
        _entry(archive, "__main__.py", main_source)
        packages = set()
        for name in modules:
            parts = name.split(".")
            packages.update(".".join(parts[:depth]) for depth in range(1, len(parts)))
        for package in sorted(packages):
            _entry(archive, package.replace(".", "/") + "/__init__.py", "")
        for name in modules:
            _entry(archive, name.replace(".", "/") + ".py", _source(name))
    return buffer.getvalue()
