"""Make this checkout importable as ansible_collections.inplace.migration for every test."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.adhoc import collections_root  # noqa: E402

sys.path.insert(0, collections_root())
