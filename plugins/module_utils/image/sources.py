# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where an image comes from: a local file or an http(s) URL, read as a stream."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from ansible.module_utils.urls import open_url

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.image.formats import HEAD_BYTES


class Source:
    """Where an image comes from: a local file or an http(s) URL."""

    def __init__(self, spec):
        self.spec = spec
        self.is_url = urlparse(spec).scheme in ("http", "https")

    @property
    def path(self):
        return None if self.is_url else self.spec

    def check(self, what="the image"):
        """Refuse a missing source with one sentence."""
        if self.is_url:
            try:
                self.open().close()
            except MigrationError:
                raise
        elif not os.path.isfile(self.spec):
            raise MigrationError("%s %s does not exist or is not a file; correct the path or put the file there." % (
                what, self.spec))

    def open(self):
        if not self.is_url:
            return open(self.spec, "rb", buffering=0)
        try:
            return open_url(self.spec, timeout=60)
        except Exception as error:  # urllib's, ssl's and open_url's own errors alike
            reason = getattr(error, "reason", None) or error
            raise MigrationError("cannot fetch %s (%s); check the URL and that its server answers from this PC." % (
                self.spec, getattr(reason, "strerror", None) or reason))

    def head(self, count=HEAD_BYTES):
        with self.open() as handle:
            return read_up_to(handle, count)

    def identity(self):
        """What tells whether a local file changed between its verification and its use."""
        if self.is_url:
            return None
        stat = os.stat(self.spec)
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def size(self):
        return None if self.is_url else os.path.getsize(self.spec)


def read_up_to(handle, count):
    parts = []
    while count > 0:
        part = handle.read(count)
        if not part:
            break
        parts.append(part)
        count -= len(part)
    return b"".join(parts)
