"""The fleet report's HTML, rendered by the report role through ansible-playbook, escapes what PCs wrote."""

from __future__ import annotations

import json
import subprocess

from tests.support import adhoc

HOSTILE = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: inplace.migration.report
      vars:
        report_dir: "{report_dir}"
"""


def test_every_string_from_a_pc_is_escaped_in_the_fleet_report(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    partition = {"number": 1, "device": HOSTILE, "kind": "primary", "start": 0, "size": 1 << 30, "end": 1 << 30,
                 "fstype": HOSTILE, "fs_label": HOSTILE}
    (reports / "pc1.json").write_text(json.dumps({
        "host": HOSTILE, "completed": True, "users": [HOSTILE, "bob"],
        "phases": {HOSTILE: {"start": 1.0, "end": 2.5}},
        "remapped_users": {HOSTILE: {"old": HOSTILE, "new": 2000}},
        "layout_after": {"table": HOSTILE, "size": 1 << 30, "partitions": [partition]},
    }))
    playbook = tmp_path / "report.yml"
    playbook.write_text(PLAYBOOK.format(report_dir=reports))
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", str(playbook)], capture_output=True, text=True,
                          env=adhoc.environment(), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    html = (reports / "index.html").read_text()
    assert "<script" not in html and "<img" not in html and "alert('x')" not in html
    # Host, user, phase, remapped user and ids, device, filesystem type and label, table type.
    assert html.count(ESCAPED) >= 9
    assert "<h2>%s <span" % ESCAPED in html
    assert "<tr><th>users</th><td>%s, bob</td></tr>" % ESCAPED in html
