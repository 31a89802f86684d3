# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""profile_restore's work: accounts, then each user's files, then the settings asked for.

Each archive is checked against the manifest's sha256 before any of it is
extracted, extracted into a staging directory beside the home (same filesystem),
then moved into place by the conflict rule. A user is marked restored only once all
of that is done and synced to disk, in the target root first (``restored.Marker``,
which decides what a rerun does: a root written again starts over) and then in the
store's journal (which reports it), so a rerun skips exactly the finished users.
"""

from __future__ import annotations

import os
import shutil
import time

from ansible_collections.inplace.migration.plugins.module_utils.profiles import accounts as _accounts
from ansible_collections.inplace.migration.plugins.module_utils.profiles import archive as _archive
from ansible_collections.inplace.migration.plugins.module_utils.profiles import manifest as _manifest
from ansible_collections.inplace.migration.plugins.module_utils.profiles import restored as _restored
from ansible_collections.inplace.migration.plugins.module_utils.profiles import walk as _walk
from ansible_collections.inplace.migration.plugins.module_utils.profiles.tree import is_real_dir, merge, reown
from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.rootfs import inside
from ansible_collections.inplace.migration.plugins.module_utils.state.lock import pc_lock
from ansible_collections.inplace.migration.plugins.module_utils.state.store import PROFILES, Store

JOURNAL_KEY = "profile_restore"
STAGING_PREFIX = b".inplace-restore-"


class Restore:
    def __init__(self, runner, store, root="/", users=None, accounts="create", conflict="overwrite", settings=None,
                 lock_timeout=0):
        self.runner = runner
        self.lock_timeout = lock_timeout
        self.store = Store(store)
        self.root = root
        self.users = users
        self.accounts = accounts
        self.conflict = conflict
        self.settings = settings or []

    def run(self, check_mode=False):
        self.store.check(writable=not check_mode)
        if not os.path.isdir(self.root):
            raise MigrationError("root %s does not exist; mount the new system there first." % self.root)
        manifest = _manifest.load(self.store)
        captured = {u["name"]: u for u in manifest["users"]}
        names = list(captured) if not self.users else self.users
        unknown = [n for n in names if n not in captured]
        if unknown:
            raise MigrationError("%s %s not captured on this store (captured: %s); name only captured users in users." % (
                ", ".join(unknown), "is" if len(unknown) == 1 else "are", ", ".join(captured) or "nobody"))
        available = (manifest.get("settings") or {}).get("groups", [])
        missing = [g for g in self.settings if g not in available]
        if missing:
            raise MigrationError("settings %s were not captured (captured: %s); leave them out of settings." % (
                ", ".join(missing), ", ".join(available) or "none"))
        journal = self.store.journal
        # What this root holds decides what is done; the store's journal only reports it.
        marker = _restored.Marker(self.root, manifest)
        todo = [captured[n] for n in names if not marker.user_restored(n)]
        settings_todo = [g for g in self.settings if not marker.settings_restored(g)]
        report = {"changed": bool(todo or settings_todo), "restored": [], "failed_users": {}, "already_restored": [
            n for n in names if marker.user_restored(n)], "accounts_created": [],
            "accounts_kept": [], "groups_created": [], "remapped_users": {}, "remapped_groups": {},
            "shells_replaced": {}, "memberships_added": {}, "directory_users": [], "conflicts": {},
            "homes_reowned": [], "settings_restored": []}
        if self.accounts == "require":
            passwd = _accounts.read_passwd(self.root)
            absent = [u["name"] for u in todo if u["source"] == "local" and u["name"] not in passwd]
            if absent:
                raise MigrationError("accounts=require, and %s %s no account in %s; create the accounts first or use accounts=create." % (
                    ", ".join(absent), "has" if len(absent) == 1 else "have", self.root))
        if not report["changed"]:
            return self._with_bytes(report, captured)
        if check_mode:
            self._accounts(manifest, todo, marker, report, check_mode=True)
            return report
        with pc_lock("restore", self.store, wait=self.lock_timeout):
            # The first-boot hook may have restored while this waited for the lock.
            marker = _restored.Marker(self.root, manifest)
            todo = [u for u in todo if not marker.user_restored(u["name"])]
            settings_todo = [g for g in settings_todo if not marker.settings_restored(g)]
            if not todo and not settings_todo:
                report.update(changed=False, already_restored=names)
                return self._with_bytes(report, captured)
            record = journal.get(JOURNAL_KEY) or {}
            record.setdefault("users", {})
            record.setdefault("settings", {})
            uid_map, gid_map, homes = self._accounts(manifest, todo, marker, report)
            for user in todo:
                name = user["name"]
                try:
                    if _manifest.archived(user):
                        self._restore_user(user, homes[name], uid_map, gid_map, report)
                    else:
                        self._settle_kept_home(user, homes[name], uid_map, gid_map, report)
                except MigrationError as error:
                    report["failed_users"][name] = str(error)
                    continue
                self._mark(marker, record, "user", name, {"uid": uid_map.get(user["uid"], user["uid"]),
                                                          "home": homes[name]}, uid_map, gid_map)
                report["restored"].append(name)
            for group in settings_todo:
                self._restore_settings(manifest, group, uid_map, gid_map)
                self._mark(marker, record, "settings", group, {}, uid_map, gid_map)
                report["settings_restored"].append(group)
            everyone = all(marker.user_restored(n) for n in captured)
            record["complete"] = everyone and not report["failed_users"]
            journal.put(JOURNAL_KEY, record)
        return self._with_bytes(report, captured)

    def _mark(self, marker, record, kind, name, entry, uid_map, gid_map):
        """Record ``name`` restored: its files made durable first, then the target root's marker, then the
        store's journal (for the report)."""
        os.sync()  # the restored tree may span filesystems (a kept /home): all of them
        entry = dict(entry, time=time.time())
        marker.record(kind, name, entry, uid_map, gid_map)
        record["users" if kind == "user" else "settings"][name] = dict(entry, restored=True, root=self.root)
        record.update(uid_map=marker.data["uid_map"], gid_map=marker.data["gid_map"])
        self.store.journal.put(JOURNAL_KEY, record)

    @staticmethod
    def _with_bytes(report, captured):
        done = report["restored"] + report["already_restored"]
        report["restored_bytes"] = sum(captured[name].get("data_bytes", 0) for name in done)
        return report

    def _accounts(self, manifest, todo, marker, report, check_mode=False):
        """Plan (and unless ``check_mode``, make) the accounts of ``todo``; the id maps and homes that follow."""
        uid_map, gid_map = marker.id_maps()
        homes = {u["name"]: u["home"] for u in todo}
        if self.accounts == "skip":
            return uid_map, gid_map, homes
        report["directory_users"] = [u["name"] for u in todo if u["source"] == "directory"]
        # With accounts=require every local account is known to exist: only groups and memberships are added.
        plan = _accounts.ensure(self.root, [u for u in todo if u["source"] == "local"], manifest.get("groups", []),
                                check_mode=check_mode)
        report.update(plan.report())
        uid_map.update(plan.uid_map())
        gid_map.update(plan.gid_map())
        homes.update((u.name, u.home) for u in plan.users)
        return uid_map, gid_map, homes

    def _restore_user(self, user, home, uid_map, gid_map, report):
        archive = self.store.path(PROFILES, user["archive"])
        _archive.verify(archive, user["sha256"], user["bytes"])
        target = os.path.join(os.fsencode(self.root), os.fsencode(home.lstrip("/")))
        parent = os.path.dirname(target)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        staging = os.path.join(parent, STAGING_PREFIX + os.fsencode(user["name"]))
        if os.path.lexists(staging):
            shutil.rmtree(staging)  # left by an interrupted run; the journal says this user is not done
        os.mkdir(staging, 0o700)
        try:
            _archive.extract_archive(self.runner, archive, os.fsdecode(staging))
            reown(staging, uid_map, gid_map)
            met = merge(staging, target, self.conflict)
        finally:
            if os.path.lexists(staging):
                shutil.rmtree(staging)
        if met:
            report["conflicts"][user["name"]] = {"rule": self.conflict, "paths": met}

    def _settle_kept_home(self, user, home, uid_map, gid_map, report):
        """A home the reimage kept (not archived) is where it was: its files follow remapped ids."""
        if user.get("home_state") != "kept":
            return  # no home at all: the account is all there is
        target = inside(self.root, home)
        if not os.path.isdir(target):
            raise MigrationError("the home %s of %s is not in %s although the reimage kept it (%s); mount it there, "
                                 "as the new system's fstab should, and run again." % (
                                     home, user["name"], self.root, user["reason"]))
        if uid_map or gid_map:
            reown(target, uid_map, gid_map)
            report["homes_reowned"].append(user["name"])

    def _restore_settings(self, manifest, group, uid_map, gid_map):
        settings = manifest["settings"]
        archive = self.store.path(PROFILES, settings["archive"])
        _archive.verify(archive, settings["sha256"], settings["bytes"])
        root = os.fsencode(self.root)
        staging = os.path.join(root, STAGING_PREFIX + b"settings")
        if os.path.lexists(staging):
            shutil.rmtree(staging)
        os.mkdir(staging, 0o700)
        try:
            _archive.extract_archive(self.runner, archive, os.fsdecode(staging))
            reown(staging, uid_map, gid_map)
            users = [u["name"] for u in manifest["users"]]
            for relative in _walk.settings_paths(staging, [group], users):
                source = os.path.join(staging, relative)
                if not os.path.lexists(source):
                    continue  # moved with the directory above it
                destination = os.path.join(root, relative)
                os.makedirs(os.path.dirname(destination), mode=0o755, exist_ok=True)
                if is_real_dir(source):
                    merge(source, destination, "overwrite")
                else:
                    self._replace(source, destination)
            if group == "crontabs":
                self._fix_crontab_group(users)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _replace(source, destination):
        if is_real_dir(destination):
            shutil.rmtree(destination)
        os.rename(source, destination)

    def _fix_crontab_group(self, users):
        # cron reads a crontab only if it belongs to the system's own "crontab" group,
        # whose id differs between releases.
        group = _accounts.read_groups(self.root).get("crontab")
        spool = os.path.join(self.root, "var/spool/cron/crontabs")
        for name in users:
            path = os.path.join(spool, name)
            if group and os.path.isfile(path):
                os.chown(path, os.lstat(path).st_uid, group["gid"])
                os.chmod(path, 0o600)
