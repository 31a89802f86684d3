# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Image checksums: ``sha256:<hex>`` or a checksum file, and hashing a file while it is read."""

from __future__ import annotations

import hashlib
import os
import re
from urllib.parse import urlparse

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.units import MiB
from ansible_collections.inplace.migration.plugins.module_utils.image.sources import Source

CHUNK = 8 * MiB
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def parse_checksum_file(text, name):
    """The sha256 for ``name`` in a checksum file (``sha256sum`` output, or the BSD ``SHA256 (x) = y`` form)."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        gnu = re.match(r"^\\?([0-9a-fA-F]{64})\s+\*?(.+)$", line)
        bsd = re.match(r"^SHA256\s*\((.+)\)\s*=\s*([0-9a-fA-F]{64})$", line)
        if gnu:
            entries.append((gnu.group(2).strip(), gnu.group(1).lower()))
        elif bsd:
            entries.append((bsd.group(1).strip(), bsd.group(2).lower()))
    matching = [digest for entry, digest in entries if os.path.basename(entry) == name]
    if len(set(matching)) == 1:
        return matching[0]
    if len(entries) == 1 and not matching:
        return entries[0][1]
    if not entries:
        raise MigrationError("the checksum file holds no sha256 line.")
    raise MigrationError("the checksum file has %s for %s; it must have exactly one." % (
        "no line" if not matching else "several different lines", name))


def expected_sha256(checksum, src):
    """The expected sha256 (hex) from the ``checksum`` option: ``sha256:<hex>``, or a checksum file's path or URL."""
    value = checksum.strip()
    algorithm, colon, digest = value.partition(":")
    if colon and algorithm.lower() == "sha256":
        if not SHA256_RE.match(digest):
            raise MigrationError("checksum=%s is not sha256: followed by 64 hexadecimal digits; copy the whole "
                                 "sha256 of the image." % value)
        return digest.lower()
    if SHA256_RE.match(value):
        raise MigrationError("checksum=%s lacks its algorithm; write it as sha256:%s." % (value, value))
    if colon and re.match(r"^(md5|sha1|sha224|sha384|sha512|blake2b)$", algorithm.lower()):
        raise MigrationError("checksum=%s uses %s; only sha256 is accepted." % (value, algorithm))
    source = Source(value)
    source.check("the checksum file")
    with source.open() as handle:
        text = handle.read(1 * MiB + 1)
    if len(text) > 1 * MiB:
        raise MigrationError("the checksum file %s is larger than 1 MiB; it is not a sha256sum file." % value)
    name = os.path.basename(urlparse(src).path if Source(src).is_url else src)
    try:
        return parse_checksum_file(text.decode("utf-8", "replace"), name)
    except MigrationError as error:
        raise MigrationError("%s (%s); give the checksum file published with the image, or sha256:<hex>." % (
            str(error).rstrip("."), value))


def file_sha256(path):
    sha = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            sha.update(view[:count])
    return sha.hexdigest()
