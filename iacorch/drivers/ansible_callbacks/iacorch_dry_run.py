"""The stdout callback of iacorch's Ansible dry runs: `awx_display`, with every task held
in check mode.

ansible-playbook loads this plugin (iacorch never imports it) whenever iacorch runs a
playbook with `--check`: `plan`, `drift`, the plans shown at an approval gate, and stages
with `check: true`. In check mode Ansible still runs for real every task whose
`check_mode` is false (set on the task, its block, role or play, or templated). Just
before a task starts on a host, Ansible's strategies send `v2_runner_on_start` and only
then start the worker; here the task's `check_mode` is set to true, so it runs like every
other task of a dry run: a module that supports check mode predicts, others are skipped.
Each task that asked for something else is reported once per host with an
`iacorch_not_checkable` event. If the task cannot be held in check mode, ansible-playbook
stops before the task starts.

Being the stdout callback makes the plugin mandatory: when it cannot load (no
`awx_display` on the callback path, an Ansible it does not fit), ansible-playbook refuses
to start instead of running without it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ansible.plugins.loader import callback_loader

DOCUMENTATION = """
    name: iacorch_dry_run
    type: stdout
    short_description: awx_display for iacorch's dry runs, with every task in check mode
    description:
      - ansible-runner's awx_display job events; tasks with check_mode false run in check mode
    extends_documentation_fragment:
      - default_callback
"""

NOT_CHECKABLE = "iacorch_not_checkable"
_STOPPED = 250     # ansible-playbook's own code for an unexpected error

_AwxDisplay: Any = callback_loader.get("awx_display", class_only=True)


class CallbackModule(_AwxDisplay):  # type: ignore[misc]
    """awx_display's events; every task forced into check mode before it starts."""

    CALLBACK_NAME = "iacorch_dry_run"
    CALLBACK_TYPE = "stdout"
    CALLBACK_VERSION = 2.0

    def __init__(self) -> None:
        super().__init__()
        self._requested: dict[str, Any] = {}   # task uuid -> the check_mode it asked for

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        requested = self._hold_in_check_mode(task)
        if requested is not True:
            with self.capture_event_data(NOT_CHECKABLE, host=host.get_name(), task=task,
                                         check_mode=str(requested)):
                self._display.display(f"not checkable: [{host.get_name()}] check_mode "
                                      f"{requested!s} ran in check mode")
        super().v2_runner_on_start(host, task)

    def _hold_in_check_mode(self, task: Any) -> Any:
        """What the task asked for; it now runs in check mode, or the playbook stops."""
        try:
            requested = self._requested.setdefault(str(task._uuid), task.check_mode)
            task.check_mode = True
            held = task.check_mode is True
        except Exception:  # noqa: BLE001 - any failure must stop the task, not warn
            held = False
        if not held:
            sys.stderr.write(f"ERROR! iacorch could not hold task '{task.get_name()}' in "
                             "check mode; the dry run stopped before it ran\n")
            sys.stderr.flush()
            os._exit(_STOPPED)
        return requested
