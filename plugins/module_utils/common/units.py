# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Byte sizes as users write them, and as we print them back."""

from __future__ import annotations

import re

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_MULTIPLIERS = {
    "": 1, "b": 1,
    "k": KiB, "kib": KiB, "kb": 1000,
    "m": MiB, "mib": MiB, "mb": 1000 ** 2,
    "g": GiB, "gib": GiB, "gb": 1000 ** 3,
    "t": TiB, "tib": TiB, "tb": 1000 ** 4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value, option="size"):
    """Return ``value`` in bytes: an integer, or a number with a unit such as ``12GiB``.

    Binary units (KiB, MiB, GiB, TiB and the short K, M, G, T) are powers of 1024;
    KB, MB, GB, TB are powers of 1000, as on a disk vendor's label.
    """
    if isinstance(value, bool):
        raise MigrationError("%s must be a size such as 12GiB, not %r." % (option, value))
    if isinstance(value, int):
        number, unit = value, ""
    else:
        match = _SIZE_RE.match(str(value))
        if not match or match.group(2).lower() not in _MULTIPLIERS:
            raise MigrationError(
                "%s=%r is not a size: write bytes or a number with a unit such as 512MiB or 12GiB." % (option, value))
        number, unit = match.group(1), match.group(2).lower()
    if "." in str(number):
        whole, fraction = str(number).split(".")
        scale = 10 ** len(fraction)
        result = (int(whole) * scale + int(fraction)) * _MULTIPLIERS[unit] // scale
    else:
        result = int(number) * _MULTIPLIERS[unit]
    if result <= 0:
        raise MigrationError("%s=%r must be larger than zero." % (option, value))
    return result


def human(size):
    """Format bytes for a sentence: 1536 MiB -> '1.5 GiB'."""
    size = int(size)
    for unit, factor in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(size) >= factor:
            return "%.1f %s" % (size / factor, unit)
    return "%d B" % size


def align_up(value, grain):
    return -(-value // grain) * grain


def align_down(value, grain):
    return value // grain * grain
