"""Two lab PCs (msdos and GPT) from the cached images: identity, disks, profiles, network, power cut, stop."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import threading

import pytest

from tests.lab import images, machines, profiles
from tests.support import adhoc

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture(scope="module")
def http_port(tmp_path_factory):
    """A controller-side HTTP server on 127.0.0.1, the only service the PCs may reach (through guestfwd)."""
    served = tmp_path_factory.mktemp("served")
    (served / "payload.bin").write_bytes(PAYLOAD)

    def handler(*args):
        return http.server.SimpleHTTPRequestHandler(*args, directory=str(served))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, http_port):
    lab = machines.Lab(str(tmp_path_factory.mktemp("lab")))
    try:
        lab.add(2, ["msdos", "gpt"], guestfwd_port=http_port)
        lab.start(timeout=600)
        yield lab
    finally:
        lab.stop(timeout=60)


def sh(lab, name, command):
    return subprocess.run(lab.ssh_command(name, command), capture_output=True, check=True,
                          timeout=120).stdout


def test_each_pc_has_its_own_name_keys_and_machine_id(lab):
    seen = set()
    for name in ("pc1", "pc2"):
        assert sh(lab, name, "hostname").decode().strip() == name
        key = sh(lab, name, "cat /etc/ssh/ssh_host_ed25519_key.pub").decode().split()[1]
        with open(os.path.join(lab.pcs[name]["host_keys"], "ssh_host_ed25519_key.pub"), encoding="utf-8") as handle:
            assert handle.read().split()[1] == key
        seen.add((key, sh(lab, name, "cat /etc/machine-id").decode().strip()))
    assert len({key for key, machine_id in seen}) == 2 and len({machine_id for key, machine_id in seen}) == 2


def test_a_changed_host_key_is_noticed(lab, tmp_path):
    forged = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()[:2]
    forged.write_text("[127.0.0.1]:%d %s\n" % (lab.pcs["pc1"]["port"], " ".join(other)))
    command = [arg.replace(lab.known_hosts, str(forged)) for arg in lab.ssh_command("pc1", "true")]
    probe = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert probe.returncode != 0
    assert "Host key verification failed" in probe.stderr


def root_disk(lab, name):
    """The disk holding the PC's root, by the name the kernel gave it in this boot."""
    return "/dev/" + sh(lab, name, "lsblk --nodeps --noheadings --output PKNAME \"$(findmnt -n -o SOURCE /)\"").decode().strip()


def test_disk_layouts_are_as_built(lab):
    msdos = json.loads(sh(lab, "pc1", "sudo sfdisk --json %s" % root_disk(lab, "pc1")))["partitiontable"]
    gpt = json.loads(sh(lab, "pc2", "sudo sfdisk --json %s" % root_disk(lab, "pc2")))["partitiontable"]
    assert msdos["label"] == "dos" and [p["type"] for p in msdos["partitions"]] == ["83"]
    assert msdos["partitions"][0]["start"] + msdos["partitions"][0]["size"] == images.DISK_BYTES // 512
    assert gpt["label"] == "gpt"
    assert [p["type"] for p in gpt["partitions"]] == ["21686148-6449-6E6F-744E-656564454649",
                                                      "0FC63DAF-8483-4772-8E79-3D69D8477DE4"]
    assert sh(lab, "pc2", "findmnt -n -o SOURCE /").decode().strip() == root_disk(lab, "pc2") + "2"
    for name in ("pc1", "pc2"):
        assert sh(lab, name, "cut -d. -f1 /etc/debian_version").decode().strip() == "12"
        assert sh(lab, name, "grep -o 'root=UUID=[^ ]*' /proc/cmdline").startswith(b"root=UUID=")
        # A plain Debian 12, as users have it: neither is there for the collection to lean on.
        absent = sh(lab, name, "command -v zstd || echo no-zstd; "
                    "python3 -c \"import importlib.util; print(importlib.util.find_spec('parted'))\"")
        assert absent.split() == [b"no-zstd", b"None"]


def test_profiles_are_populated(lab):
    ids = sh(lab, "pc1", "id -u alice; id -g alice; id -u bob; id -g bob; getent group project").decode().split()
    assert ids[:4] == ["1000", "1000", "1001", "1001"] and ids[4].startswith("project:x:1100:")
    docs = "/home/alice/Documents"
    listing = sh(lab, "pc1", "sudo stat -c '%%F|%%u|%%g|%%a|%%h|%%s|%%b|%%Y' %s/vm-disk.img %s/team "
                 "%s/reports/report-00-hardlink.txt /home/alice/.local/run/fifo /home/alice/dangling-link"
                 % (docs, docs, docs)).decode().splitlines()
    sparse, team, hardlink, fifo, dangling = [line.split("|") for line in listing]
    assert int(sparse[5]) == 2 * images.GiB and int(sparse[6]) * 512 < 16 * images.MiB
    assert team[0] == "directory" and team[3] == "2775" and team[2] == "1100"
    assert hardlink[4] == "3" and hardlink[1] == "1000" and hardlink[7] == str(profiles.MTIME)
    assert fifo[0] == "fifo"
    assert dangling[0] == "symbolic link"
    # Read with python3, not getfacl and getfattr: a plain install has no acl or attr package.
    acl = sh(lab, "pc1", "python3 -c \"import os, struct, sys; [print(sorted(struct.iter_unpack('<HHI', "
             "os.getxattr(sys.argv[1], 'system.posix_acl_' + kind)[4:]))) for kind in ('access', 'default')]\" "
             "%s/shared" % docs).decode().splitlines()
    bob_rwx = "(2, 7, 1001)"  # ACL_USER, rwx, bob's uid
    assert len(acl) == 2 and bob_rwx in acl[0] and bob_rwx in acl[1]
    assert sh(lab, "pc1", "python3 -c \"import os, sys; print(os.getxattr(sys.argv[1], 'user.origin').decode())\" "
              "%s/reports/2024/report-02.txt" % docs).strip() == b"lab"
    assert b"backup.sh" in sh(lab, "pc1", "sudo crontab -l -u alice")
    names = sh(lab, "pc1", "cd '%s/odd names' && find . -print0" % docs).split(b"\0")
    assert b"./new\nline.txt" in names and b"./caf\xe9 latin-1.txt" in names
    assert max(len(name) for name in names) > 255
    assert sh(lab, "pc1", "sudo grep -c '^alice:\\$6\\$' /etc/shadow").strip() == b"1"


def test_the_only_way_out_is_the_controllers_http_service(lab, http_port):
    fetch = ("python3 -c \"import hashlib, urllib.request; "
             "print(hashlib.sha256(urllib.request.urlopen('http://10.0.2.100/payload.bin').read()).hexdigest())\"")
    assert sh(lab, "pc1", fetch).decode().strip() == hashlib.sha256(PAYLOAD).hexdigest()
    blocked = ("python3 -c \"import socket; s = socket.socket(); s.settimeout(5); "
               "print(s.connect_ex(('10.0.2.2', %d)))\"" % http_port)
    assert sh(lab, "pc2", blocked).decode().strip() != "0"


def test_the_inventory_reaches_both_pcs_through_ansible(lab):
    result = subprocess.run(["ansible", "-i", lab.inventory, machines.GROUP, "-m", "ansible.builtin.setup",
                             "-a", "filter=ansible_hostname", "-o"],
                            capture_output=True, text=True, env=adhoc.environment(), check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"ansible_hostname": "pc1"' in result.stdout and '"ansible_hostname": "pc2"' in result.stdout


def test_a_power_cut_pc_starts_again_with_its_disk_and_identity(lab):
    sh(lab, "pc1", "echo before-the-cut | sudo tee /var/tmp/marker >/dev/null; sync")
    pid = lab.running("pc1")
    assert lab.power_cut("pc1")
    assert not os.path.exists("/proc/%d" % pid)
    lab.start(["pc1"], timeout=600)
    assert sh(lab, "pc1", "cat /var/tmp/marker; hostname").decode().split() == ["before-the-cut", "pc1"]


def test_stop_shuts_down_and_removes_overlays(tmp_path):
    lab = machines.Lab(str(tmp_path / "lab"))
    lab.add(1, ["msdos"])
    overlay = lab.pcs["pc1"]["overlay"]
    lab.start(timeout=600)
    pid = lab.running("pc1")
    assert lab.stop(timeout=60) == {"pc1": "acpi"}
    assert not os.path.exists("/proc/%d" % pid)
    assert not os.path.exists(overlay)
    assert not os.path.exists(lab.state_file)
