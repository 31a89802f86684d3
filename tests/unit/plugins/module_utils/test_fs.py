"""Pure parts of the filesystem layer: the ext minimum-size sum and mount-table parsing."""

from __future__ import annotations

from ansible_collections.inplace.migration.plugins.module_utils.disk.fs import _has_superblock_backup, ext_minimum_size

# dumpe2fs -h of a 2 GiB ext4 (mke2fs 1.47 defaults) holding 1.1 GiB of files, for which
# resize2fs -P answers 519464 blocks (2029 MiB): nearly the whole filesystem.
FEATURES = ("has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file "
            "huge_file dir_nlink extra_isize metadata_csum")
HEADER = "Filesystem features:      " + FEATURES + """
Inode count:              131072
Block count:              524288
Reserved block count:     26214
Overhead clusters:        26150
Free blocks:              234980
Free inodes:              129053
First block:              0
Block size:               4096
Group descriptor size:    64
Reserved GDT blocks:      255
Blocks per group:         32768
Inodes per group:         8192
Inode blocks per group:   512
Flex block group size:    16
"""

MiB = 1024 * 1024


def test_minimum_is_the_data_plus_the_metadata_of_the_groups_kept():
    used = (524288 - 234980) * 4096
    minimum = ext_minimum_size(HEADER)
    # Above what is used (data, journal and the kept groups' metadata) ...
    assert minimum > used - 26150 * 4096
    # ... and far below resize2fs's 2029 MiB, yet with room for a flex group's inode tables.
    assert 1100 * MiB < minimum < 1200 * MiB


def test_an_empty_filesystem_can_shrink_to_a_few_groups():
    empty = HEADER.replace("Free blocks:              234980", "Free blocks:              498138") \
                  .replace("Free inodes:              129053", "Free inodes:              131061")
    assert ext_minimum_size(empty) < 200 * MiB


def test_a_full_filesystem_cannot_shrink():
    full = HEADER.replace("Free blocks:              234980", "Free blocks:              0")
    assert ext_minimum_size(full) == 524288 * 4096


def test_superblock_backups_follow_sparse_super():
    features = ["sparse_super"]
    backups = [g for g in range(100) if _has_superblock_backup(g, features, [])]
    assert backups == [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]
    assert [g for g in range(10) if _has_superblock_backup(g, ["sparse_super2"], [1, 7])] == [0, 1, 7]
    assert all(_has_superblock_backup(g, [], []) for g in range(10))
