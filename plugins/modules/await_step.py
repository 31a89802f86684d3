#!/usr/bin/python
# Copyright: inplace.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: await_step
short_description: Wait for a step started detached on the PC and return its result
version_added: 0.1.0
description:
  - The roles start their long destructive steps (M(inplace.migration.partition_space),
    M(inplace.migration.profile_capture), M(inplace.migration.image_deploy), M(inplace.migration.profile_restore))
    with C(async) and C(poll=0), so they run on the PC outside the controller's connection; a dropped connection or
    a controller that dies does not stop them.
  - This action waits for such a step by asking C(ansible.builtin.async_status) every O(poll) seconds, prints one
    line for the step when it starts, every O(report_every) seconds while it runs, and when it ends, then removes
    the job's file and returns the module's own result as its own, failing with the module's message when the
    module failed.
  - When the connection to the PC drops while it waits (the PC unreachable, SSH failing), the step runs on and the
    question is asked again, first after O(poll) seconds, then after twice as long each time up to 30 seconds,
    for O(reconnect_timeout) seconds, and never later than O(timeout) seconds after the wait began; then this PC
    fails with one sentence saying so, and the other PCs of the run go on (under the linear strategy a PC that was
    switched off would otherwise hold its whole batch for the step's hours). An authentication failure is not asked
    again.
  - When the controller dies while it waits, the step runs on; the next run of the playbook starts the module again,
    and its run waits for the earlier one under the PC's lock (the modules' C(lock_timeout)) and returns the result
    of the work it finds done.
  - A O(job) without a job id (the module ran synchronously, was skipped, or failed to start) is returned as it is.
extends_documentation_fragment:
  - inplace.migration.attributes
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the
      controller.
    support: full
  async:
    description: Supports being used with the C(async) keyword.
    support: none
  check_mode:
    details: Waits for a step started in check mode, which changes nothing.
options:
  job:
    description:
      - What the task that started the step registered (it holds C(ansible_job_id)).
    type: dict
    required: true
  step:
    description:
      - The step's name in the lines printed, such as V(capture).
    type: str
    required: true
  poll:
    description:
      - Seconds between two questions to the PC.
    type: int
    default: 5
  report_every:
    description:
      - Seconds between two lines printed while the step runs.
    type: int
    default: 60
  timeout:
    description:
      - Seconds the step may take, as the task that started it gave C(async). A connection that drops is never tried
        again past this long after the wait began.
    type: int
    default: 43200
  reconnect_timeout:
    description:
      - Seconds a dropped connection is tried again before this PC fails. The step runs on; a later run of the
        playbook takes its result.
    type: int
    default: 600
"""

EXAMPLES = r"""
- name: Capture the profiles, detached from the controller's connection
  inplace.migration.profile_capture:
    root: /mnt/oldroot
    store: /mnt/store
  async: 43200
  poll: 0
  register: capture_job

- name: Wait for the capture
  inplace.migration.await_step:
    job: "{{ capture_job }}"
    step: capture
  register: capture_result
"""

RETURN = r"""
changed:
  description: Whether the step changed anything, as the module returned it.
  returned: always
  type: bool
msg:
  description: The module's message, when it gave one (its failure's sentence when it failed).
  returned: when the module returned one
  type: str
"""
