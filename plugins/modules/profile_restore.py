#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: profile_restore
short_description: Restore captured accounts, profiles and settings from the migration store
version_added: 0.1.0
description:
  - Reads the manifest that M(inplace.migration.profile_capture) wrote on the store and restores each
    user's account and home into O(root), and the settings groups asked for.
  - Each archive's sha256 is checked against the manifest before anything of it is extracted.
  - Extraction never writes outside the user's home. Absolute names, C(..) components and any name (or
    hard link target) that would pass through a symlink, whether made earlier by the archive or already in
    the target, are refused; tar is stopped before it reads such a member. A bad archive fails that user
    with a clear message; the other users are still restored, and the result lists both.
  - Each archive is extracted into a staging directory beside the home, on the same filesystem, then moved
    into place by the O(conflict) rule.
  - A user the manifest records without an archive (its home is on a filesystem the reimage kept, or it has
    none) gets its account all the same; a kept home must be in O(root) (mounted, as the new system's fstab
    has it), and its files are re-owned when ids were remapped (RV(homes_reowned)).
  - Progress is recorded per user (and settings group) in the root restored into,
    C(/var/lib/inplace-migration/restored.json), once the restored files are synced to disk, and then, for the
    report, in the store's journal. A user that root records as restored is not restored again, so a second run
    reports no change; a root written again (the image deployed a second time) records nothing and is restored
    in full. A record left by another capture (in an image made from a migrated PC) counts for nothing.
extends_documentation_fragment:
  - inplace.migration.attributes
  - inplace.migration.archives
  - inplace.migration.lock
attributes:
  check_mode:
    details: Reports which users, accounts and settings would be restored, without extracting anything.
options:
  store:
    description: Mount point of the migration store.
    type: path
    required: true
  root:
    description:
      - The system to restore into, V(/) for the running system. Another path restores into a system mounted
        there; accounts are added to that system's own C(/etc/passwd), C(/etc/shadow), C(/etc/group) and
        C(/etc/gshadow) either way, holding the lock shadow-utils takes.
    type: path
    default: /
  users:
    description: Users to restore; all captured users when empty.
    type: list
    elements: str
    default: []
  accounts:
    description:
      - V(create) makes missing groups and users with their original UID and GID when those are free in the
        new system, and otherwise allocates new ones (system ids below C(UID_MIN)/C(GID_MIN) stay system ids),
        reports the remapping and re-owns the restored files (owners, groups and named ACL entries). All ids
        are chosen before any account is made, so an id given to one never collides with another's. An
        account's shadow entry (password hash and aging fields, kept) is written before its passwd entry. A
        shell the new system lacks becomes its default shell (reported). An account or group that already
        exists is kept as it is and only gains the captured group memberships; the files follow its ids.
      - V(require) fails if an account is missing. V(skip) restores files only, with their captured owners.
      - Users from a directory service are never created; their files keep their numeric owners.
    type: str
    choices: [create, require, skip]
    default: create
  conflict:
    description:
      - What to do with a file the new system already put in a home (skeleton dotfiles).
      - V(overwrite) replaces it with the captured one; V(keep_new) keeps the new system's file and drops the
        captured one; V(rename) keeps the new system's file and saves the captured one beside it with the
        suffix C(.inplace-old).
    type: str
    choices: [overwrite, keep_new, rename]
    default: overwrite
  settings:
    description:
      - Settings groups to apply, from those captured; none unless asked.
        See M(inplace.migration.profile_capture) for what each group holds.
    type: list
    elements: str
    choices: [hostname, network, ssh_host_keys, machine_id, timezone, locale, crontabs, printers]
    default: []
seealso:
  - module: inplace.migration.profile_capture
"""

EXAMPLES = r"""
- name: Restore every captured user into the new system
  inplace.migration.profile_restore:
    store: /mnt/store

- name: Restore two users, keep the new system's dotfiles, apply network and crontabs
  inplace.migration.profile_restore:
    store: /mnt/store
    users: [alice, bob]
    conflict: rename
    settings: [network, crontabs]
"""

RETURN = r"""
restored:
  description: Users restored in this run.
  returned: always
  type: list
  elements: str
already_restored:
  description: Users the root restored into records as restored (from this capture) before this run.
  returned: always
  type: list
  elements: str
restored_bytes:
  description: Bytes of regular files in the homes of the users restored (in this run or before).
  returned: always
  type: int
failed_users:
  description: Users that could not be restored, with the reason (a bad archive, a refused member).
  returned: always
  type: dict
accounts_created:
  description: Accounts created (or, in check mode, to be created).
  returned: always
  type: list
  elements: str
accounts_kept:
  description: Accounts that already existed in the new system and were kept.
  returned: always
  type: list
  elements: str
groups_created:
  description: Groups created.
  returned: always
  type: list
  elements: str
remapped_users:
  description: Users whose UID differs in the new system, as C(old) and C(new); their files were re-owned.
  returned: always
  type: dict
remapped_groups:
  description: Groups whose GID differs in the new system, as C(old) and C(new); their files were re-owned.
  returned: always
  type: dict
memberships_added:
  description: Per user, the groups of the new system the user was added to.
  returned: always
  type: dict
shells_replaced:
  description: Users whose shell the new system lacks, with the shell given instead.
  returned: always
  type: dict
directory_users:
  description: Directory-service users whose accounts were left to the directory.
  returned: always
  type: list
  elements: str
conflicts:
  description: Per user, the rule applied and the paths that met a file already in the new home.
  returned: always
  type: dict
homes_reowned:
  description: Users whose home the reimage kept (not archived) and whose files were re-owned to remapped ids.
  returned: always
  type: list
  elements: str
settings_restored:
  description: Settings groups applied in this run.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.profiles.restore import Restore
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner
from ansible_collections.inplace.migration.plugins.module_utils.state.lock import LOCK_ARGUMENT_SPEC

SETTINGS = ["hostname", "network", "ssh_host_keys", "machine_id", "timezone", "locale", "crontabs", "printers"]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            store=dict(type="path", required=True),
            root=dict(type="path", default="/"),
            users=dict(type="list", elements="str", default=[]),
            accounts=dict(type="str", choices=["create", "require", "skip"], default="create"),
            conflict=dict(type="str", choices=["overwrite", "keep_new", "rename"], default="overwrite"),
            settings=dict(type="list", elements="str", choices=SETTINGS, default=[]),
            **LOCK_ARGUMENT_SPEC
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = Restore(Runner(module), params["store"], root=params["root"], users=params["users"],
                         accounts=params["accounts"], conflict=params["conflict"],
                         settings=params["settings"], lock_timeout=params["lock_timeout"]).run(
                             check_mode=module.check_mode)
    except MigrationError as error:
        module.fail_json(msg=str(error), **error.partial)
    if result["failed_users"]:
        failed = result["failed_users"]
        # One sentence however many failed: each user's reason carries its own remedy.
        reasons = [failed[name].rstrip(".") if len(failed) == 1 else "%s: %s" % (name, failed[name].rstrip("."))
                   for name in sorted(failed)]
        module.fail_json(msg="could not restore %s (%s): %s." % (
            ", ".join(sorted(failed)), "the others are restored" if result["restored"] or result["already_restored"] else "no user was restored",
            "; ".join(reasons)), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
