# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception the collection raises for a refusal or a failed step."""

from __future__ import annotations


class MigrationError(Exception):
    """A sentence for the user, plus whatever was already done when it was raised.

    Modules turn it into ``fail_json(msg=str(error), **error.partial)`` so that a
    failure in the middle of a multi-step change still reports the steps that ran.
    """

    def __init__(self, message, **partial):
        super().__init__(message)
        self.partial = partial
