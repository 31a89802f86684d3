#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: profile_capture
short_description: Capture users' profiles and system settings onto the migration store
version_added: 0.1.0
description:
  - Archives each chosen user's home from O(root) (the running system, or an old system root mounted
    read-only) into the store as C(inplace/profiles/<user>.tar.zst), the chosen O(settings) into
    C(inplace/profiles/settings.tar.zst), and writes C(inplace/profiles/manifest.json) last, atomically.
  - Archives are GNU tar pax archives streamed through C(zstd -T0) (all cores). They keep file bytes,
    numeric owners, modes including setuid, setgid and sticky bits, nanosecond mtimes, POSIX ACLs (access
    and default), extended attributes (user and security), hard links, sparse files, symlinks (dangling
    and absolute too), FIFOs, empty directories, and names of any bytes and length.
    Sockets and device nodes are skipped and listed in the result.
  - Every archive's sha256, size and file count are recorded, then every archive is read back and checked
    against its recorded sha256 before the manifest is written. A manifest that exists therefore describes
    a complete, verified capture; this is the gate before any destructive step.
  - The manifest carries, for each user, name, UID, primary GID and group name, supplementary groups,
    shell, gecos, home, password hash and shadow aging fields, so profile_restore can recreate the account.
    The store is root-only (0700), as it holds password hashes.
  - No chosen user is left out. A home reached through a symbolic link or a bind mount of the old system
    (its fstab) is archived from where its files are, resolved inside O(root), never on the host. A user
    whose home lies on a filesystem the reimage keeps (a partition of its own such as a separate C(/home),
    or a network filesystem), or who has no home at all (with O(users=auto) only), is recorded in the
    manifest with C(home_archived=false), its account data and the reason, and profile_restore recreates
    the account all the same (RV(homes_not_archived)).
  - A user named in O(users) whose home does not exist is an error, as is a home on a mount of the old root's
    own device (a btrfs subvolume) that is not mounted under O(root), which the reimage would overwrite.
  - In check mode nothing is written and no file is read except a sample; the result is an estimate of
    bytes and files per user, what the rules exclude, and RV(store_bytes_needed) for
    M(inplace.migration.partition_space).
  - A complete, verified capture of the same source (same accounts, same files by name, size, mode, owner
    and mtime, same rules) is not redone unless O(force).
extends_documentation_fragment:
  - inplace.migration.attributes
  - inplace.migration.archives
  - inplace.migration.lock
attributes:
  check_mode:
    details: Estimates sizes; reads only a sample of file contents.
options:
  root:
    description:
      - The system whose profiles are captured. V(/) for the running system, or the mount point of the old
        system's root filesystem (mounted read-only, so nothing changes while it is read).
    type: path
    default: /
  store:
    description:
      - Mount point of the migration store. Not needed to exist in check mode.
    type: path
    required: true
  users:
    description:
      - V(auto) captures the accounts whose UID lies in the old system's C(login.defs) range (UID_MIN to
        UID_MAX); one without a home is recorded without an archive.
      - Otherwise a list of user names. A name that is not a local account is taken as a directory service
        (LDAP, sssd) user whose home is C(/home/<name>); it is captured with numeric owners and its
        account is left to the directory.
    type: list
    elements: str
    default: [auto]
  exclude_users:
    description: Users not to capture.
    type: list
    elements: str
    default: []
  include:
    description:
      - Shell globs relative to each home; when given, only matching entries (and everything below a matching
        directory) are captured. C(*) also matches C(/).
    type: list
    elements: str
    default: []
  exclude:
    description:
      - Shell globs relative to each home that are not captured; a matching directory is skipped whole.
        Exclusion wins over inclusion.
      - The default skips caches, the trash and thumbnails.
    type: list
    elements: str
    default: [.cache, .local/share/Trash, .thumbnails]
  max_file_size:
    description: Skip regular files larger than this (bytes or with a unit such as V(2GiB)); listed in the result.
    type: str
  skip_preserved_mounts:
    description:
      - Do not archive a home that lives on a filesystem the reimage keeps (a partition of its own, separately
        mounted or a mount point in the old system's fstab such as C(/home), or a network filesystem); its user
        is recorded in the manifest without an archive and its account is recreated by profile_restore.
      - V(false) archives such a home too when it is mounted under O(root).
    type: bool
    default: true
  settings:
    description:
      - System settings groups to capture into C(settings.tar.zst).
      - V(hostname) C(/etc/hostname), C(/etc/hosts); V(network) NetworkManager system connections and ifupdown
        interfaces; V(ssh_host_keys) C(/etc/ssh/ssh_host_*); V(machine_id) C(/etc/machine-id); V(timezone)
        C(/etc/timezone), C(/etc/localtime); V(locale) C(/etc/default/locale), C(/etc/locale.gen); V(crontabs)
        the captured users' crontabs; V(printers) CUPS printers, classes and PPDs.
    type: list
    elements: str
    choices: [hostname, network, ssh_host_keys, machine_id, timezone, locale, crontabs, printers]
    default: []
  compression:
    description: zstd compression level (1 fastest, 19 smallest).
    type: int
    default: 3
  force:
    description: Capture again even when the store holds a complete, verified capture of the same source.
    type: bool
    default: false
seealso:
  - module: inplace.migration.profile_restore
  - module: inplace.migration.partition_space
"""

EXAMPLES = r"""
- name: Estimate how much room the profiles need (nothing is written)
  inplace.migration.profile_capture:
    store: /mnt/store
  check_mode: true
  register: profile_estimate

- name: Make the store that large
  inplace.migration.partition_space:
    disk: /dev/sda
    size: "{{ profile_estimate.store_bytes_needed }}"

- name: Capture from the old system mounted read-only, with settings
  inplace.migration.profile_capture:
    root: /mnt/old
    store: /mnt/store
    exclude_users: [kiosk]
    exclude: [.cache, .local/share/Trash, .thumbnails, "Downloads/*.iso"]
    max_file_size: 4GiB
    settings: [hostname, network, ssh_host_keys, timezone, locale, crontabs, printers]
"""

RETURN = r"""
users:
  description: Per captured user, what was (or in check mode would be) captured.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: User name.
      type: str
    uid:
      description: UID in the old system.
      type: int
    source:
      description: V(local) (account in the old system's files) or V(directory).
      type: str
    files:
      description: Entries captured (files, directories, links, FIFOs).
      type: int
    bytes:
      description: Apparent size of the regular files captured.
      type: int
    allocated_bytes:
      description: Bytes those files hold on disk (a sparse file counts what it holds).
      type: int
    excluded:
      description: Per rule (pattern or V(max_file_size)), the entries and bytes it kept out.
      type: dict
    skipped:
      description: Sockets and device nodes, which are not captured, as C(path) and C(kind).
      type: list
      elements: dict
    estimated_archive_bytes:
      description: Estimated compressed archive size (check mode).
      type: int
    archive_bytes:
      description: Size of the archive written (not in check mode).
      type: int
    sha256:
      description: sha256 of the archive written (not in check mode).
      type: str
homes_not_archived:
  description:
    - Users chosen whose home is not archived, recorded in the manifest with their account data so that
      profile_restore recreates their accounts; C(home_state) is V(kept) (the home is on a filesystem the
      reimage keeps) or V(none) (no home), and C(reason) says which.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "bob", "uid": 1001, "home": "/home/bob", "source": "local", "home_state": "kept",
            "reason": "its home /home/bob is on /home (UUID=0b1c...), a partition the reimage keeps"}]
settings:
  description: The settings groups and the paths they captured.
  returned: always
  type: dict
store_bytes_needed:
  description: Store size (usable bytes) to ask of partition_space; the archive estimate plus 10 % and 64 MiB.
  returned: in check mode
  type: int
estimated_archive_bytes:
  description: Estimated size of all archives together.
  returned: in check mode
  type: int
compression_ratio:
  description: Compressed to raw ratio measured on a sample of the files.
  returned: in check mode
  type: float
compression_estimator:
  description:
    - What measured RV(compression_ratio) - V(zstd) at O(compression), or V(zlib) at level 6 where the zstd command
      is missing (its ratio comes out a few percent higher); V(null) when there was nothing to sample.
  returned: in check mode
  type: str
archive_bytes:
  description: Bytes of archives written in this run.
  returned: when changed and not in check mode
  type: int
manifest:
  description: Path of the manifest.
  returned: when not in check mode
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.inplace.migration.plugins.module_utils.profiles.capture import Capture
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import Runner
from ansible_collections.inplace.migration.plugins.module_utils.common.units import parse_size
from ansible_collections.inplace.migration.plugins.module_utils.state.lock import LOCK_ARGUMENT_SPEC, pc_lock
from ansible_collections.inplace.migration.plugins.module_utils.state.store import Store

SETTINGS = ["hostname", "network", "ssh_host_keys", "machine_id", "timezone", "locale", "crontabs", "printers"]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", default="/"),
            store=dict(type="path", required=True),
            users=dict(type="list", elements="str", default=["auto"]),
            exclude_users=dict(type="list", elements="str", default=[]),
            include=dict(type="list", elements="str", default=[]),
            exclude=dict(type="list", elements="str", default=[".cache", ".local/share/Trash", ".thumbnails"]),
            max_file_size=dict(type="str"),
            skip_preserved_mounts=dict(type="bool", default=True),
            settings=dict(type="list", elements="str", choices=SETTINGS, default=[]),
            compression=dict(type="int", default=3),
            force=dict(type="bool", default=False),
            **LOCK_ARGUMENT_SPEC
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not 1 <= params["compression"] <= 19:
        module.fail_json(msg="compression=%d is not a zstd level; use 1 to 19." % params["compression"])
    try:
        max_file_size = parse_size(params["max_file_size"], "max_file_size") if params["max_file_size"] else None
        capture = Capture(Runner(module), params["root"], params["store"], users=params["users"],
                          exclude_users=params["exclude_users"], include=params["include"], exclude=params["exclude"],
                          max_file_size=max_file_size, skip_preserved_mounts=params["skip_preserved_mounts"],
                          settings=params["settings"], compression=params["compression"])
        with pc_lock("capture", Store(params["store"]), wait=params["lock_timeout"], check_mode=module.check_mode):
            result = capture.run(check_mode=module.check_mode, force=params["force"])
    except MigrationError as error:
        module.fail_json(msg=str(error), **error.partial)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
