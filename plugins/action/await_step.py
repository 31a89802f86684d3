# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for a step started detached (``async``, ``poll: 0``) and take its result as this task's.

The step runs on the PC outside the controller's SSH session, so a dropped connection or a
controller that dies does not stop it; this plugin only asks ``async_status`` how it is going,
prints one line per step now and then (never Ansible's "FAILED - RETRYING" lines of
``until``/``retries``), and returns the module's own result, so ``register`` sees what a
synchronous run of the module would have returned. A connection that drops while it waits is
asked again, with a backoff, for ``reconnect_timeout`` seconds (never past the step's own timeout);
a PC that stays away longer fails, so that under the linear strategy it does not hold the other
PCs of its batch for the step's hours. When the controller dies, the rerun's module waits for the
step under the PC's lock instead (module_utils/state/lock.py).
"""

from __future__ import annotations

import time

from ansible.errors import AnsibleActionFail, AnsibleAuthenticationFailure, AnsibleConnectionFailure, AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

# What async_status adds to the module's result.
STATUS_KEYS = ("ansible_job_id", "started", "finished", "results_file")
OUTPUT_KEYS = ("stdout", "stderr", "stdout_lines", "stderr_lines")
# The longest pause between two attempts to reach a PC that dropped the connection.
LONGEST_BACKOFF = 30


def duration(seconds):
    """``45 s``, ``2 min 10 s``, ``1 h 3 min``."""
    seconds = int(seconds)
    if seconds < 60:
        return "%d s" % seconds
    if seconds < 3600:
        return "%d min %d s" % divmod(seconds, 60)
    return "%d h %d min" % (seconds // 3600, seconds % 3600 // 60)


def _said(error, longest=300):
    """What a connection error says, on one line (ssh puts its reason on the next), shortened."""
    text = " ".join(str(error).split()).rstrip(".: ") or type(error).__name__
    return text if len(text) <= longest else text[:longest - 3] + "..."


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
            "timeout": {"type": "int", "default": 43200},
            "reconnect_timeout": {"type": "int", "default": 600},
        })
        for option in ("poll", "report_every", "timeout", "reconnect_timeout"):
            if args[option] < 1:
                raise AnsibleActionFail("await_step: %s must be a positive number of seconds, not %d." % (
                    option, args[option]))
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
        deadline = started + args["timeout"]
        try:
            while True:
                status = self._ask(jid, async_dir, "status", task_vars, host, step, args, deadline)
                if status.get("msg") == "could not find job":
                    raise AnsibleActionFail(
                        "%s: the %s step's job %s is not in %s on the PC, so the PC restarted since the step began; "
                        "run the playbook again and the step resumes from what it finds done." % (host, step, jid, async_dir))
                if status.get("finished") or status.get("failed"):
                    break
                now = time.time()
                if now - last_line >= args["report_every"]:
                    display.display("%s: %s running, %s" % (host, step, duration(now - started)))
                    last_line = now
                time.sleep(args["poll"])
            self._ask(jid, async_dir, "cleanup", task_vars, host, step, args, deadline)
        finally:
            try:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            except AnsibleConnectionFailure:
                pass  # a PC that does not answer keeps a small temporary directory, not the step's outcome
        result = dict(status)
        for key in STATUS_KEYS:
            result.pop(key, None)
        for key in OUTPUT_KEYS:
            if not result.get(key):
                result.pop(key, None)
        outcome = "failed" if result.get("failed") else "done"
        display.display("%s: %s %s after %s" % (host, step, outcome, duration(time.time() - started)))
        return result

    def _ask(self, jid, async_dir, mode, task_vars, host, step, args, deadline):
        """async_status's answer; a dropped connection is tried again, backing off, for ``reconnect_timeout``
        seconds but not past ``deadline`` (the step's timeout)."""
        lost, backoff, give_up, by_step = None, args["poll"], None, False
        while True:
            try:
                answer = self._status(jid, async_dir, mode, task_vars)
            except AnsibleAuthenticationFailure:
                raise
            except AnsibleConnectionFailure as error:
                # The step runs on, detached: only the question is lost, so it is asked again.
                now = time.time()
                if lost is None:
                    lost = now
                    give_up = min(deadline, now + args["reconnect_timeout"])
                    by_step = give_up == deadline
                    display.display("%s: %s: the connection to the PC dropped (%s); asking again %s" % (
                        host, step, _said(error),
                        "until the step's timeout" if by_step else "for up to %s" % duration(give_up - now)))
                if now + backoff > give_up:
                    raise AnsibleActionFail(self._gave_up(host, step, now - lost, error, by_step))
                self._reset_connection()
                time.sleep(backoff)
                backoff = min(backoff * 2, LONGEST_BACKOFF)
                continue
            if lost is not None:
                display.display("%s: %s: the PC answers again after %s" % (host, step, duration(time.time() - lost)))
            return answer

    @staticmethod
    def _gave_up(host, step, away, error, by_step):
        limit = "until the step's timeout" if by_step else "the longest this wait asks again (reconnect_timeout)"
        return ("%s: the connection to the PC dropped while the %s step ran and did not come back for %s (%s), %s, "
                "so this PC stops here while the others go on and the step may still be running there; once the "
                "PC answers, run the playbook again and it takes the step's result." % (
                    host, step, duration(away), _said(error), limit))

    def _reset_connection(self):
        """Drop what is left of the lost connection (an SSH control master), so the next question opens a new one."""
        try:
            self._connection.reset()
        except AnsibleError:
            pass

    def _status(self, jid, async_dir, mode, task_vars):
        return self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                    module_args={"jid": jid, "mode": mode, "_async_dir": async_dir})
