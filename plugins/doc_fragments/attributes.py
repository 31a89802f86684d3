# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attributes (and the author) every module of this collection shares.

Each module runs on the managed POSIX host and supports check mode fully; diff mode is
off unless a module says otherwise. A module overrides a key (such as C(details)) by
naming it under its own C(attributes).
"""

from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options: {}
author:
  - inplace.migration developers (@inplace-migration)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target, if not supported
      the action will be skipped.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode
    support: none
  platform:
    description: Target OS/families that can be operated against
    support: N/A
    platforms: posix
"""
