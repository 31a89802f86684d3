"""Preflight's inhibitor sentences and its run: every probe's failure is one sentence, never a missing key."""

from __future__ import annotations

import shutil

import pytest

from ansible_collections.inplace.migration.plugins.module_utils.common.errors import MigrationError
from ansible_collections.inplace.migration.plugins.module_utils.common.run import ProcessRunner
from ansible_collections.inplace.migration.plugins.module_utils.common.units import human
from ansible_collections.inplace.migration.plugins.module_utils.disk.model import Disk, Filesystem, Partition
from ansible_collections.inplace.migration.plugins.module_utils.disk.planner import plan_present
from ansible_collections.inplace.migration.plugins.module_utils.preflight import check as _check
from ansible_collections.inplace.migration.plugins.module_utils.preflight import inhibitors as _inhibitors
from tests.support.stock import SBIN, disk_without_pyparted

MiB = 1024 * 1024
GiB = 1024 * MiB
SHA = "sha256:" + "ab" * 32
URL = "http://10.0.2.100/debian13.tar.zst"
PATH = "/srv/images/debian13.tar.zst"


def image(src=URL, **found):
    return dict({"src": src, "checksum": SHA}, **found)


IMAGE_CASES = [
    # (what the probes found, image bytes, inhibitor sentences)
    (image(url_status=200, url_bytes=123), 123, []),
    (image(url_status=200), 0, []),
    (image(url_status=404, url_error="Status code was 404 and not [200]: HTTP Error 404: Not Found"), 0,
     ["the image %s is not reachable from this PC (Status code was 404 and not [200]: HTTP Error 404: Not Found)."
      % URL]),
    (image(url_status=-1), 0, ["the image %s is not reachable from this PC (-1)." % URL]),
    (image(), 0, ["the image %s is not reachable from this PC (no answer)." % URL]),
    (image(PATH, file={"exists": True, "path": PATH, "size": 456, "checksum": "ab" * 32}), 456, []),
    (image(PATH, file={"exists": True, "path": PATH, "size": 456, "checksum": "AB" * 32}), 456, []),
    (image(PATH, file={"exists": True, "path": PATH, "size": 456, "checksum": "cd" * 32}), 456,
     ["the image %s has sha256 %s, not the %s asked for." % (PATH, "cd" * 32, SHA)]),
    (image(PATH, file={"exists": False}), 0,
     ["the image %s has sha256 none: it does not exist, not the %s asked for." % (PATH, SHA)]),
    # A URL with a local copy checked on the controller: the PC's answer sizes it, the copy is checked.
    (image(url_status=200, url_bytes=789, file={"exists": True, "path": PATH, "size": 1, "checksum": "cd" * 32}),
     789, ["the image %s has sha256 %s, not the %s asked for." % (PATH, "cd" * 32, SHA)]),
    (image(url_status=503, url_error="Service Unavailable", file={"exists": False, "path": PATH}), 0,
     ["the image %s is not reachable from this PC (Service Unavailable)." % URL,
      "the image %s has sha256 none: it does not exist, not the %s asked for." % (PATH, SHA)]),
]


@pytest.mark.parametrize("found,size,sentences", IMAGE_CASES)
def test_image_findings(found, size, sentences):
    assert _inhibitors.image_findings(found) == (size, sentences)


def one_partition_disk(used):
    """An 8 GiB msdos disk whose ext4 root spans it, holding ``used`` bytes."""
    root = Partition(number=1, start=MiB, end=8 * GiB, path="/dev/vda1",
                     fs=Filesystem(type="ext4", size=8 * GiB - MiB, used=used, min_size=used + 16 * MiB,
                                   mountpoint="/"))
    return Disk(path="/dev/vda", size=8 * GiB, sector_size=512, label="msdos", partitions=(root,),
                first_usable=512, usable_end=8 * GiB, max_partitions=4)


def test_largest_store_is_what_the_planner_can_make_and_no_more():
    disk = _check.offline(one_partition_disk(5 * GiB))
    largest = _inhibitors.largest_store(disk, "INPLACE-STORE", "auto")
    assert 0 < largest < 3 * GiB and largest % MiB == 0
    assert _inhibitors.store_fits(disk, largest, "INPLACE-STORE", "auto")
    assert not _inhibitors.store_fits(disk, largest + MiB, "INPLACE-STORE", "auto")


def test_largest_store_when_nothing_can_shrink():
    assert _inhibitors.largest_store(_check.offline(one_partition_disk(8 * GiB - 200 * MiB)), "S", "auto") == 0


SENTENCE_CASES = [
    (_inhibitors.no_room("/dev/vda", _inhibitors.store_need(GiB, 2 * GiB, 128 * MiB, 256 * MiB), 3500 * MiB,
                         2 * GiB, "Not enough reclaimable space on /dev/vda: the store needs 3.4 GiB."),
     "there is no room for the store on /dev/vda: it needs a partition of 3.4 GiB to hold 3.4 GiB (profiles "
     "1.0 GiB, image 2.0 GiB, maintenance files 128.0 MiB, margin 256.0 MiB), at most 2.0 GiB can be made, so "
     "1.4 GiB is missing (Not enough reclaimable space on /dev/vda: the store needs 3.4 GiB)."),
    (_inhibitors.probe_failed("estimating the profiles", MigrationError("root / holds no etc/passwd.")),
     "root / holds no etc/passwd."),
    (_inhibitors.probe_failed("estimating the profiles", KeyError("uid")),
     "estimating the profiles failed unexpectedly (KeyError: 'uid')."),
    (_inhibitors.image_unreachable(URL, None), "the image %s is not reachable from this PC (no answer)." % URL),
]


@pytest.mark.parametrize("sentence,expected", SENTENCE_CASES)
def test_sentences(sentence, expected):
    assert sentence == expected


def test_store_need_adds_up():
    need = _inhibitors.store_need(1, 2, 3, 4)
    assert need == {"profiles": 1, "image": 2, "maintenance": 3, "margin": 4, "total": 10}


# The run, with each probe replaced: whatever fails, the result has every key and a sentence says why.

FACTS = {"root": {"device": "/dev/vda1", "uuid": "r-uuid", "fstype": "ext4", "partuuid": "p-uuid"},
         "disk": "/dev/vda", "disk_bytes": 8 * GiB, "boot": {"separate": False, "uuid": "r-uuid", "free_bytes": GiB},
         "memory_mib": 2048, "on_battery": False}
DISK_IDENTITY = {"wwn": "5000c500a1b2c3d4", "serial": "S1", "ptuuid": "0b4e1c2a"}
ESTIMATE = {"users": [{"name": "alice"}], "homes_not_archived": [], "compression_ratio": 0.5,
            "estimated_archive_bytes": 100 * MiB, "store_bytes_needed": 200 * MiB}
PLANNED = {"store": {"size": 700 * MiB, "device": "/dev/vda2"}, "actions": ["shrink"], "notes": [],
           "layout_before": {"device": "/dev/vda"}, "layout_after": {"device": "/dev/vda"}}


def fail(error):
    def probe(*args, **kwargs):
        raise error
    return probe


@pytest.fixture
def probes(monkeypatch):
    """Every probe succeeding; a test replaces the one it breaks."""
    calls = {}

    def plan_store(runner, disk, need, label, shrink, root):
        calls["plan_store"] = need
        calls["root"] = root
        return PLANNED

    monkeypatch.setattr(_check, "inspect", lambda runner, ram, boot: dict(FACTS, inhibitors=[]))
    monkeypatch.setattr(_check, "estimate_profiles", lambda *args: ESTIMATE)
    monkeypatch.setattr(_check, "plan_store", plan_store)
    monkeypatch.setattr(_check, "disk_identity", lambda runner, disk: dict(DISK_IDENTITY, device=disk))
    return calls


def run(**overrides):
    arguments = dict(maintenance_bytes=128 * MiB, profiles={"users": ["auto"]},
                     store={"label": "INPLACE-STORE", "shrink": "auto", "margin": "256M"},
                     image=image(url_status=200, url_bytes=300 * MiB))
    arguments.update(overrides)
    return _check.preflight(None, **arguments)


def test_a_pc_with_nothing_in_the_way_gets_its_plan_with_the_store_sized_once(probes):
    result = run()
    total = 200 * MiB + 300 * MiB + 128 * MiB + 256 * MiB
    assert result["inhibitors"] == []
    assert probes["plan_store"]["total"] == total
    assert probes["root"] == FACTS["root"]  # the planner's refusal can name the root's filesystem
    assert result["plan"] == {"disk": "/dev/vda", "disk_identity": dict(DISK_IDENTITY, device="/dev/vda"),
                              "root_partuuid": "p-uuid", "root_uuid": "r-uuid",
                              "store_bytes": 700 * MiB, "store_usable_bytes": total, "image_bytes": 300 * MiB,
                              "boot_separate": False, "boot_uuid": "r-uuid", "firmware": "bios", "esp_partuuid": None,
                              "root_device": "PARTUUID=p-uuid", "lvm": None}
    assert result["store"]["layout_before"] == {"device": "/dev/vda"}


UEFI = {"esp": ["/dev/vda1"], "esp_partuuid": "e-uuid", "esp_mounted": True, "secure_boot": True,
        "boot_current": "0004", "boot_order": ["0004"], "vendor": "debian", "vendor_error": None}


@pytest.mark.parametrize("secure_boot,chain,refused", [
    (True, {"checked": True, "missing": []}, False),
    (True, {"checked": False, "reason": "debian13.raw.zst is not a root-filesystem archive"}, True),
    (True, None, True),
    (True, {"checked": True, "missing": ["a signed kernel (no kernel in /boot)"]}, True),
    (False, None, False),
], ids=["whole", "raw-unchecked", "no-look", "no-kernel", "secure-boot-off"])
def test_a_uefi_pc_gets_a_plan_naming_its_esp_unless_secure_boot_meets_an_unproven_image(
        probes, monkeypatch, secure_boot, chain, refused):
    facts = dict(FACTS, uefi=dict(UEFI, secure_boot=secure_boot))
    monkeypatch.setattr(_check, "inspect", lambda runner, ram, boot: dict(facts, inhibitors=[]))
    found = image(url_status=200, url_bytes=300 * MiB)
    if chain is not None:
        found["boot_chain"] = chain
    result = run(image=found)
    if refused:
        (sentence,) = result["inhibitors"]
        assert sentence.startswith("Secure Boot is on and the image") and result["plan"] is None
    else:
        assert result["inhibitors"] == []
        assert (result["plan"]["firmware"], result["plan"]["esp_partuuid"]) == ("uefi", "e-uuid")


LVM = {"vg": "labvg", "vg_uuid": "vg-uuid", "lv": "root", "lv_uuid": "lv-uuid", "disks": ["/dev/vda"]}
PLANNED_VOLUME = {"logical_volume": {"vg": "labvg", "vg_uuid": "vg-uuid", "name": "inplace-store", "size": 700 * MiB,
                                     "extents": 175, "root_lv": "root", "root_lv_uuid": "lv-uuid",
                                     "root_extents_before": 1000, "root_extents": 825, "root_fs_size": 825 * 4 * MiB},
                  "actions": ["reduce the logical volume labvg/root"], "notes": [], "layout_before": {"device": "/dev/vda"},
                  "layout_after": {"device": "/dev/vda"}}


@pytest.mark.parametrize("chain,refused", [
    ({"checked": True, "missing": [], "lvm": True}, False),
    ({"checked": True, "missing": [], "lvm": False}, True),
    ({"checked": False, "reason": "a raw image"}, False),
], ids=["with-lvm2", "without-lvm2", "unchecked"])
def test_a_root_on_lvm_gets_a_store_volume_unless_the_image_cannot_find_its_root(probes, monkeypatch, chain, refused):
    facts = dict(FACTS, lvm=LVM, root=dict(FACTS["root"], lv_path="/dev/mapper/labvg-root"))
    monkeypatch.setattr(_check, "inspect", lambda runner, ram, boot: dict(facts, inhibitors=[]))
    monkeypatch.setattr(_check, "plan_store_volume", lambda *args: PLANNED_VOLUME)
    found = image(url_status=200, url_bytes=300 * MiB)
    found["boot_chain"] = chain
    result = run(image=found)
    if refused:
        assert result["inhibitors"] == [_inhibitors.IMAGE_WITHOUT_LVM % "labvg"] and result["plan"] is None
        return
    assert result["inhibitors"] == [] and "plan_store" not in probes, "no partition is planned under LVM"
    plan = result["plan"]
    assert plan["root_device"] == "/dev/mapper/labvg-root" and plan["root_partuuid"] == "p-uuid"
    assert plan["lvm"] == PLANNED_VOLUME["logical_volume"] and plan["store_bytes"] == 700 * MiB
    assert result["store"]["actions"] == ["reduce the logical volume labvg/root"]


@pytest.mark.parametrize("probe,error,sentence", [
    ("estimate_profiles", MigrationError("root / holds no etc/passwd."), "root / holds no etc/passwd."),
    ("estimate_profiles", OSError(5, "Input/output error"),
     "estimating the profiles failed unexpectedly (OSError: [Errno 5] Input/output error)."),
    ("plan_store", MigrationError("there is no room for the store on /dev/vda: ..."),
     "there is no room for the store on /dev/vda: ..."),
    ("plan_store", ValueError("odd"), "planning the store failed unexpectedly (ValueError: odd)."),
])
def test_a_failed_probe_is_one_sentence_and_no_plan(probes, monkeypatch, probe, error, sentence):
    monkeypatch.setattr(_check, probe, fail(error))
    result = run()
    assert result["inhibitors"] == [sentence]
    assert result["plan"] is None
    assert set(result) >= {"root", "boot", "image", "profiles", "store", "plan", "inhibitors"}


def test_the_store_is_planned_without_the_profiles_when_their_estimate_failed(probes, monkeypatch):
    monkeypatch.setattr(_check, "estimate_profiles", fail(MigrationError("no zstd.")))
    result = run()
    assert probes["plan_store"]["profiles"] == 0
    assert result["inhibitors"] == ["no zstd."] and result["plan"] is None


def test_system_and_image_inhibitors_come_together(probes, monkeypatch):
    monkeypatch.setattr(_check, "inspect", lambda runner, ram, boot: dict(
        {k: v for k, v in FACTS.items() if k not in ("disk", "disk_bytes")},
        inhibitors=[_inhibitors.MD_RAID]))
    result = run(image=image(url_status=404, url_error="Not Found"))
    assert result["inhibitors"] == [
        _inhibitors.MD_RAID,
        "the image %s is not reachable from this PC (Not Found)." % URL]
    assert "plan_store" not in probes, "no disk, no store plan"
    assert result["plan"] is None and result["store"]["need"]["image"] == 0


def test_without_a_store_asked_for_there_is_no_plan(probes):
    result = run(store=None)
    assert result["inhibitors"] == [] and result["plan"] is None and result["store"] is None


@pytest.mark.parametrize("value,expected", [(None, 0), ("", 0), ("0", 0), (0, 0), ("256M", 256 * MiB),
                                            ("1GiB", GiB), ("1000", 1000), ("1MB", 1000 ** 2)])
def test_sizes(value, expected):
    assert _check.size_or_zero(value, "margin") == expected


def test_a_size_that_is_no_size_is_refused():
    with pytest.raises(MigrationError, match="margin='lots' is not a size"):
        _check.size_or_zero("lots", "margin")


class FakeSpace:
    """partition_space's run over a model disk: plans as check mode with plan_offline would."""

    disk = None

    def __init__(self, runner, path, label):
        self.label = label

    def read(self):
        return self.disk

    def present(self, size, shrink, min_free, fstype, check_mode, plan_offline):
        plan = plan_present(_check.offline(self.disk), size, label=self.label, shrink=shrink)
        return {"store": {"size": plan.store.size}, "actions": plan.descriptions, "notes": plan.notes,
                "layout_before": {}, "layout_after": {}}


def with_overhead(usable):
    return -(-usable * 102 // 100 // MiB) * MiB


@pytest.fixture
def model_disk(monkeypatch):
    monkeypatch.setattr(_check, "PartitionSpace", FakeSpace)
    # The filesystem's own overhead, as mkfs would measure it: 2 %, whole MiB.
    monkeypatch.setattr(_check, "store_partition_bytes", lambda runner, fstype, usable: with_overhead(usable))
    return FakeSpace


def test_no_room_says_how_much_is_missing(model_disk):
    model_disk.disk = one_partition_disk(5 * GiB)
    need = _inhibitors.store_need(2 * GiB, GiB, 128 * MiB, 256 * MiB)
    with pytest.raises(MigrationError) as refused:
        _check.plan_store(None, "/dev/vda", need, "INPLACE-STORE", "auto")
    largest = _inhibitors.largest_store(_check.offline(model_disk.disk), "INPLACE-STORE", "auto")
    wanted = with_overhead(need["total"])
    assert str(refused.value).startswith(
        "there is no room for the store on /dev/vda: it needs a partition of %s to hold 3.4 GiB (profiles 2.0 GiB, "
        "image 1.0 GiB, maintenance files 128.0 MiB, margin 256.0 MiB), at most %s can be made, so %s is missing "
        "(Not enough reclaimable space on /dev/vda" % (
            human(wanted), human(largest), human(wanted - largest)))


def test_a_store_that_fits_is_planned(model_disk):
    model_disk.disk = one_partition_disk(2 * GiB)
    planned = _check.plan_store(None, "/dev/vda", _inhibitors.store_need(0, 0, 0, GiB), "INPLACE-STORE", "auto")
    assert planned["store"]["size"] == GiB


@pytest.mark.parametrize("root", [None, {"device": "/dev/vda1", "fstype": "xfs"}], ids=["any root", "xfs root"])
def test_a_layout_problem_keeps_the_planners_sentence(model_disk, root):
    parts = tuple(Partition(number=n, start=n * GiB, end=(n + 1) * GiB, path="/dev/vda%d" % n,
                            fs=Filesystem(type="xfs", size=GiB)) for n in range(1, 5))
    model_disk.disk = Disk(path="/dev/vda", size=6 * GiB, sector_size=512, label="msdos", partitions=parts,
                           first_usable=512, usable_end=6 * GiB, max_partitions=4)
    with pytest.raises(MigrationError, match="four primary partitions and no extended partition"):
        _check.plan_store(None, "/dev/vda", _inhibitors.store_need(0, 0, 0, 2 * GiB), "INPLACE-STORE", "auto", root)


@pytest.mark.skipif(not (shutil.which("sfdisk", path=SBIN) and shutil.which("mkfs.ext4", path=SBIN)),
                    reason="needs sfdisk and mkfs.ext4")
def test_without_pyparted_the_store_is_planned_all_the_same(tmp_path, monkeypatch):
    """A stock Debian 12 PC has no python3-parted: preflight reads the table itself (disk/table.py)."""
    disk = disk_without_pyparted(tmp_path, monkeypatch)
    planned = _check.plan_store(ProcessRunner(), disk, _inhibitors.store_need(0, 0, 0, 32 * MiB), "INPLACE-STORE",
                                "auto")
    assert planned["store"]["number"] == 2 and planned["store"]["start"] == 100 * MiB
    assert 32 * MiB < planned["store"]["size"] < 48 * MiB  # an ext4 of this size gives a few MiB to its journal
    assert planned["notes"] == ["unallocated space suffices; no partition is shrunk"]


def test_a_failed_inspection_is_a_sentence_too(probes, monkeypatch):
    monkeypatch.setattr(_check, "inspect", fail(MigrationError("lsblk failed with exit code 1: no output")))
    result = run()
    assert result["inhibitors"] == ["lsblk failed with exit code 1: no output"]
    assert result["root"] == {} and result["plan"] is None and "plan_store" not in probes


@pytest.mark.parametrize("uefi, sentences", [
    ({"esp": ["/dev/nvme0n1p1"], "esp_mounted": True, "secure_boot": True, "vendor": "debian", "vendor_error": None},
     []),
    ({"esp": [], "esp_mounted": False, "secure_boot": None, "vendor": None, "vendor_error": None},
     ["this PC boots through UEFI but its system disk has no EFI system partition, so the migration has no boot "
      "loader to hand over to; boot it from an ESP on that disk first."]),
    ({"esp": ["/dev/sda1", "/dev/sda4"], "esp_mounted": False, "secure_boot": False, "vendor": None,
      "vendor_error": None},
     ["this PC boots through UEFI and its EFI system partition (/dev/sda1, /dev/sda4) is not mounted at /boot/efi, "
      "where preflight reads which GRUB it boots; mount the one it boots from there (as Debian's installer does) and "
      "run again."]),
    ({"esp": ["/dev/sda1"], "esp_mounted": True, "secure_boot": False, "vendor": None,
      "vendor_error": "no GRUB on the EFI system partition (/boot/efi) names the \\EFI directory it reads, ..."},
     ["no GRUB on the EFI system partition (/boot/efi) names the \\EFI directory it reads, ..."]),
], ids=["debian", "no-esp", "not-mounted", "not-debian-grub"])
def test_a_uefi_pc_is_refused_only_when_its_boot_cannot_be_handed_over(uefi, sentences):
    assert _inhibitors.uefi_findings(uefi) == sentences


FIX = ("build the image with shim-signed, grub-efi-amd64-signed and a signed linux-image (Debian's linux-image-amd64), "
       "or switch Secure Boot off in the PC's firmware.")
WHOLE = {"shim": "/usr/lib/shim/shimx64.efi.signed", "grub": "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
         "kernels": ["/boot/vmlinuz-6.12.0-1-amd64"], "unsigned_kernels": [], "missing": []}


@pytest.mark.parametrize("secure_boot, chain, sentences", [
    (True, WHOLE, []),
    (False, None, []),
    (None, dict(WHOLE, missing=["shim"]), []),
    (True, None, ["Secure Boot is on and the image's boot chain was not checked for signatures; " + FIX]),
    (True, dict(WHOLE, missing=["shim (/usr/lib/shim/shimx64.efi.signed, from shim-signed)",
                                "a signed kernel (no kernel in /boot)"]),
     ["Secure Boot is on and the image has no signed boot chain (missing shim (/usr/lib/shim/shimx64.efi.signed, "
      "from shim-signed); a signed kernel (no kernel in /boot)); " + FIX]),
], ids=["on-whole", "off-unchecked", "none-broken", "on-unchecked", "on-broken"])
def test_secure_boot_refuses_an_image_without_a_signed_chain(secure_boot, chain, sentences):
    assert _inhibitors.secure_boot_findings(secure_boot, chain) == sentences


def test_secure_boot_inhibitor_from_an_image_root(tmp_path):
    from ansible_collections.inplace.migration.plugins.module_utils.boot.efi import signed_boot_chain
    from tests.support.efi_samples import pe_header
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/vmlinuz-6.12.0-1-amd64").write_bytes(pe_header(signed=False))
    (sentence,) = _inhibitors.secure_boot_findings(True, signed_boot_chain(str(tmp_path)))
    assert "missing shim" in sentence and "signed GRUB" in sentence
    assert "none of /boot/vmlinuz-6.12.0-1-amd64 carries a signature" in sentence


@pytest.mark.parametrize("boot, sentences", [
    ({"separate": False}, []),
    ({"separate": True, "device": "/dev/sda1", "disk": "/dev/sda", "fstype": "ext4"}, []),
    ({"separate": True, "device": "/dev/sda1", "disk": "/dev/sda", "fstype": "ext2"}, []),
    ({"separate": True, "device": "/dev/sdb1", "disk": "/dev/sdb", "fstype": "ext4"},
     ["/boot is on /dev/sdb and the root on /dev/sda; a separate /boot must be a partition of the system disk, where "
      "GRUB is installed."]),
    ({"separate": True, "device": "/dev/sda1", "disk": "/dev/sda", "fstype": "xfs"},
     ["/boot is xfs; a separate /boot must be ext2, ext3 or ext4, which GRUB and the maintenance environment read "
      "and write."]),
    ({"separate": True, "device": "/dev/md0", "disk": None, "fstype": "ext4"},
     ["/boot is on /dev/md0, which is not a partition of a disk; a separate /boot must be a partition of the system "
      "disk."]),
])
def test_a_separate_boot_must_be_an_ext_partition_of_the_system_disk(boot, sentences):
    assert _inhibitors.separate_boot_findings(boot, "/dev/sda") == sentences


def test_a_tool_missing_on_the_pc_is_one_sentence_naming_its_package(monkeypatch):
    runner = ProcessRunner()
    monkeypatch.setattr(runner, "_find", lambda tool: None)
    result = _check.preflight(runner)
    assert result["inhibitors"] == ["findmnt is not installed on this host; install the util-linux package."]
    assert result["plan"] is None


def test_a_mount_by_a_kernel_name_other_than_the_root_s_stops_the_pc(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "fstab").write_text(
        "/dev/sda1 / ext4 errors=remount-ro 0 1\n"
        "UUID=0b4e1c2a-0000-4000-8000-000000000001 /home ext4 defaults 0 2\n"
        "/dev/disk/by-id/ata-DISK-part3 /srv ext4 defaults 0 2\n"
        "/dev/mapper/vg-data /var/lib/data ext4 defaults 0 2\n"
        "/dev/sdb1 /media/data ext4 defaults 0 2\n"
        "/dev/nvme0n1p3 /scratch ext4 defaults 0 2\n"
        "/dev/mmcblk0p1 /mnt/card vfat defaults 0 0\n"
        "proc /proc proc defaults 0 0\n")
    from ansible_collections.inplace.migration.plugins.module_utils.profiles.homes import read_fstab
    sentences = _inhibitors.kernel_name_mounts(read_fstab(str(tmp_path)))
    assert sentences == [
        "the old system's fstab mounts %s by the kernel name %s, which can name another disk (a USB stick) after a "
        "reboot; write UUID= with the UUID blkid shows for %s there instead." % (point, spec, spec)
        for point, spec in (("/media/data", "/dev/sdb1"), ("/scratch", "/dev/nvme0n1p3"), ("/mnt/card", "/dev/mmcblk0p1"))]


LVM_ONE_DISK = {"vg": "vg0", "disks": ["/dev/nvme0n1"]}


@pytest.mark.parametrize("kinds,lvm,sentence", [
    (["LVM"], {"vg": "vg0", "disks": ["/dev/sda", "/dev/sdb"]},
     "the root's volume group vg0 spans the disks /dev/sda, /dev/sdb; the store and the new system are kept on one "
     "disk, so the volume group must lie on the system disk alone."),
    (["LUKS encryption"], None, _inhibitors.LUKS),
    (["LVM", "LUKS encryption"], LVM_ONE_DISK, _inhibitors.LUKS),
    (["md RAID"], None, _inhibitors.MD_RAID),
    (["LVM", "md RAID"], LVM_ONE_DISK, _inhibitors.MD_RAID),
    (["device mapper"], None, "the root filesystem is on device mapper, which an in-place migration does not "
                              "support yet."),
])
def test_a_stacked_root_is_one_sentence_and_what_is_refused_for_good_comes_first(kinds, lvm, sentence):
    assert _inhibitors.stacked_root_findings(kinds, lvm) == [sentence]


@pytest.mark.parametrize("lvm", [LVM_ONE_DISK, None])
def test_a_root_on_lvm_on_one_disk_is_no_inhibitor(lvm):
    # None: the volume group could not be read, and inspect says why in its own sentence.
    assert _inhibitors.stacked_root_findings(["LVM"], lvm) == []


def test_luks_and_md_raid_say_why():
    assert "no passphrase" in _inhibitors.LUKS and "unencrypted" in _inhibitors.LUKS
    assert "other members out of step" in _inhibitors.MD_RAID


def test_a_plain_root_has_no_stacked_findings():
    assert _inhibitors.stacked_root_findings([]) == []


XFS_ROOT = {"device": "/dev/vda1", "fstype": "xfs"}


def xfs_root_disk(root_end, home_used=None):
    """An 8 GiB msdos disk: an xfs root up to ``root_end``, then (with ``home_used``) an ext4 /home to the end."""
    parts = [Partition(number=1, start=MiB, end=root_end, path="/dev/vda1",
                       fs=Filesystem(type="xfs", size=root_end - MiB, used=GiB, mountpoint="/"))]
    if home_used is not None:
        parts.append(Partition(number=2, start=root_end, end=8 * GiB, path="/dev/vda2",
                               fs=Filesystem(type="ext4", size=8 * GiB - root_end, used=home_used,
                                             min_size=home_used + 16 * MiB, mountpoint="/home")))
    return Disk(path="/dev/vda", size=8 * GiB, sector_size=512, label="msdos", partitions=tuple(parts),
                first_usable=512, usable_end=8 * GiB, max_partitions=4)


def test_an_xfs_root_s_store_comes_from_a_shrinkable_home(model_disk):
    model_disk.disk = xfs_root_disk(4 * GiB, home_used=GiB)
    planned = _check.plan_store(None, "/dev/vda", _inhibitors.store_need(0, 0, 0, GiB), "INPLACE-STORE", "auto",
                                XFS_ROOT)
    assert planned["store"]["size"] == GiB
    assert [a for a in planned["actions"] if "shrink" in a] == [
        "shrink the ext4 filesystem on /dev/vda2 from 4.0 GiB to 3.0 GiB",
        "shrink partition /dev/vda2 (primary) from 4.0 GiB to 3.0 GiB"]


def test_an_xfs_root_s_store_comes_from_unallocated_space(model_disk):
    model_disk.disk = xfs_root_disk(6 * GiB)
    planned = _check.plan_store(None, "/dev/vda", _inhibitors.store_need(0, 0, 0, GiB), "INPLACE-STORE", "auto",
                                XFS_ROOT)
    assert planned["store"]["size"] == GiB
    assert planned["notes"] == ["unallocated space suffices; no partition is shrunk"]
    assert not [a for a in planned["actions"] if "shrink" in a]


NO_ROOM_BESIDE_AN_XFS_ROOT = [(8 * GiB, None, 0), (7 * GiB, None, GiB), (4 * GiB, 3 * GiB, None)]


@pytest.mark.parametrize("root_end,home_used,largest", NO_ROOM_BESIDE_AN_XFS_ROOT)
def test_an_xfs_root_without_room_elsewhere_is_one_sentence(model_disk, root_end, home_used, largest):
    model_disk.disk = xfs_root_disk(root_end, home_used)
    need = _inhibitors.store_need(0, 0, 0, 2 * GiB)
    with pytest.raises(MigrationError) as refused:
        _check.plan_store(None, "/dev/vda", need, "INPLACE-STORE", "auto", XFS_ROOT)
    found = _inhibitors.largest_store(_check.offline(model_disk.disk), "INPLACE-STORE", "auto")
    assert largest is None or found == largest
    wanted = with_overhead(need["total"])
    assert str(refused.value) == (
        "the root filesystem on /dev/vda1 is xfs, which cannot be shrunk, and the rest of /dev/vda has room for a "
        "store of at most %s where %s is needed; leave %s more of unallocated space on /dev/vda, or give it a /home "
        "(ext4 or btrfs) on a partition of its own with %s free to shrink." % (
            human(found), human(wanted), human(wanted - found), human(wanted - found)))


def test_an_xfs_root_with_a_shrink_naming_no_partition_keeps_the_planners_sentence(model_disk):
    model_disk.disk = xfs_root_disk(8 * GiB)
    with pytest.raises(MigrationError, match="shrink=/dev/vda9 names no partition on /dev/vda"):
        _check.plan_store(None, "/dev/vda", _inhibitors.store_need(0, 0, 0, GiB), "INPLACE-STORE", "/dev/vda9",
                          XFS_ROOT)
