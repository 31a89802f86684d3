# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PC's migration lock (module_utils/state/lock.py), held by every module that writes."""

from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  lock_timeout:
    description:
      - The module holds the PC's one migration lock while it writes (C(/run/inplace-migration/lock), and the
        store's C(inplace/journal.lock) when it is given a store); check mode takes no lock.
      - Another step holding the lock (a second run against the same PC) is refused at once, with a sentence
        naming that step, its pid and since when.
      - The same step still running from an earlier run (whose controller was lost while the step ran on, detached)
        is waited for, up to this many seconds; then this run proceeds and, the step being idempotent, returns the
        result of the work it finds done. The new system's first-boot hook holds the lock as a restore.
    type: int
    default: 3600
"""
