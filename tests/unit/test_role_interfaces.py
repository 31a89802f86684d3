"""Role interfaces: prefixed, documented, in step with their defaults; only the playbook reads inplace_*."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from tests.support import adhoc

ROLES_DIR = os.path.join(adhoc.REPO, "roles")
ROLES = sorted(os.listdir(ROLES_DIR))
# A user-facing variable: inplace_ at the start of a name (internal facts such as __inplace_report are not).
USER_VARIABLE = re.compile(r"(?<![\w.-])inplace_[a-z0-9_]+(?![a-z0-9_]|\.yml)")


def load(*parts):
    path = os.path.join(*parts)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def role_files(role):
    for directory, unused_dirs, files in os.walk(os.path.join(ROLES_DIR, role)):
        for name in files:
            if name.endswith((".yml", ".yaml", ".j2")):
                yield os.path.join(directory, name)


@pytest.mark.parametrize("role", ROLES)
def test_roles_never_read_the_users_variables(role):
    found = {}
    for path in role_files(role):
        with open(path, encoding="utf-8") as handle:
            names = set(USER_VARIABLE.findall(handle.read()))
        if names:
            found[os.path.relpath(path, ROLES_DIR)] = sorted(names)
    assert found == {}, "the playbook maps inplace_* onto role variables; roles read their own"


@pytest.mark.parametrize("role", ROLES)
def test_options_are_prefixed_described_and_in_step_with_defaults(role):
    specs = load(ROLES_DIR, role, "meta", "argument_specs.yml")["argument_specs"]
    defaults = load(ROLES_DIR, role, "defaults", "main.yml") or {}
    options = {}
    for entry, spec in specs.items():
        assert spec.get("short_description"), "%s: %s has no short_description" % (role, entry)
        for name, option in spec.get("options", {}).items():
            options[name] = option
            assert option.get("description"), "%s: %s is not described" % (role, name)
    # A role's tasks_from entries may take another role's options (maintenance_env's to_store, for store).
    own = {name: option for name, option in options.items() if name.startswith(role + "_")}
    assert set(own) == set(options), "%s: options without the role's prefix: %s" % (role, sorted(set(options) - set(own)))
    assert set(defaults) <= set(options), "%s: defaults not in argument_specs: %s" % (role, set(defaults) - set(options))
    for name, option in options.items():
        if "default" in option and name in defaults and "{{" not in str(defaults[name]):
            assert option["default"] == defaults[name], "%s: %s's default differs from defaults/main.yml" % (role, name)
        if option.get("required"):
            assert name not in defaults, "%s: required %s has a default" % (role, name)


def test_every_user_variable_the_playbook_reads_is_documented_and_every_documented_one_is_read():
    with open(os.path.join(adhoc.REPO, "playbooks", "inplace_migrate.yml"), encoding="utf-8") as handle:
        read = set(USER_VARIABLE.findall(handle.read()))
    with open(os.path.join(adhoc.REPO, "docs", "variables.md"), encoding="utf-8") as handle:
        documented = set(re.findall(r"^\| `(inplace_[a-z0-9_]+)` \|", handle.read(), flags=re.M))
    assert read == documented
