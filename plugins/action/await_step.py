# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for a step started detached (``async``, ``poll: 0``) and take its result as this task's.

The step runs on the PC outside the controller's SSH session, so a dropped connection or a
controller that dies does not stop it; this plugin only asks ``async_status`` how it is going,
prints one line per step now and then (never Ansible's "FAILED - RETRYING" lines of
``until``/``retries``), and returns the module's own result, so ``register`` sees what a
synchronous run of the module would have returned. When the controller dies, the rerun's module
waits for the step under the PC's lock instead (module_utils/state/lock.py).
"""

from __future__ import annotations

import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

# What async_status adds to the module's result.
STATUS_KEYS = ("ansible_job_id", "started", "finished", "results_file")
OUTPUT_KEYS = ("stdout", "stderr", "stdout_lines", "stderr_lines")


def duration(seconds):
    """``45 s``, ``2 min 10 s``, ``1 h 3 min``."""
    seconds = int(seconds)
    if seconds < 60:
        return "%d s" % seconds
    if seconds < 3600:
        return "%d min %d s" % divmod(seconds, 60)
    return "%d h %d min" % (seconds // 3600, seconds % 3600 // 60)


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        super(ActionModule, self).run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec={
            "job": {"type": "dict", "required": True},
            "step": {"type": "str", "required": True},
            "poll": {"type": "int", "default": 5},
            "report_every": {"type": "int", "default": 60},
        })
        job, step = args["job"], args["step"]
        host = (task_vars or {}).get("inventory_hostname", "")
        jid = job.get("ansible_job_id")
        if not jid or job.get("failed") or job.get("skipped"):
            # Run synchronously (async 0), skipped, or refused before it started: that is its result.
            return job
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        started = time.time()
        display.display("%s: %s started (async job %s)" % (host, step, jid))
        last_line = started
        try:
            while True:
                status = self._status(jid, async_dir, "status", task_vars)
                if status.get("msg") == "could not find job":
                    raise AnsibleActionFail(
                        "%s: the %s step's job %s is not in %s on the PC: the PC restarted since it began. Run the "
                        "playbook again; the step resumes from what it finds done." % (host, step, jid, async_dir))
                if status.get("finished") or status.get("failed"):
                    break
                now = time.time()
                if now - last_line >= args["report_every"]:
                    display.display("%s: %s running, %s" % (host, step, duration(now - started)))
                    last_line = now
                time.sleep(args["poll"])
            self._status(jid, async_dir, "cleanup", task_vars)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        result = dict(status)
        for key in STATUS_KEYS:
            result.pop(key, None)
        for key in OUTPUT_KEYS:
            if not result.get(key):
                result.pop(key, None)
        outcome = "failed" if result.get("failed") else "done"
        display.display("%s: %s %s after %s" % (host, step, outcome, duration(time.time() - started)))
        return result

    def _status(self, jid, async_dir, mode, task_vars):
        return self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                    module_args={"jid": jid, "mode": mode, "_async_dir": async_dir})
