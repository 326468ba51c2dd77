"""An Ansible stage against the same playbook run by hand, and where ansible-runner's time goes.

    python bench/ansible_stage.py [--pairs 7]

One trivial local task (a `copy` that is already in place after the first run).
Each round runs, in this order and back to back:

- `hand`: `ansible-playbook -i hosts play.yml`, output to /dev/null
- `hand_callback`: the same with ansible-runner's awx_display callback switched on
  (what the driver adds inside ansible-playbook)
- `iacorch`: `AnsibleDriver().apply()` in this process (inventory normalised from
  `["localhost"]`, events parsed, masked artifacts written)
- `ansible_runner`: `ansible_runner.run()` (pexpect) in this process, for reference

Medians over the rounds, the median of the per-round ratios to `hand`, and the
CPU time (this process and its children; steadier than wall time on a busy
machine) go to bench/results/ansible.json with the load average. Also measured:
the stage's time outside the child (RunnerConfig, scratch files, masked
artifacts), ansible-runner's process handling alone (`run_command` of /bin/true)
against ProcessRunner's, and the cold import of ansible_runner's RunnerConfig
(paid once per iacorch process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iacorch.drivers.ansible import AnsibleDriver
from iacorch.drivers.base import StageContext
from iacorch.model.masking import Masker
from iacorch.model.results import StageSpec
from iacorch.model.status import Operation
from iacorch.process import CancelToken, ProcessResult, ProcessRunner

RESULTS = Path(__file__).parent / "results" / "ansible.json"
PLAYBOOK = """- name: Trivial
  hosts: all
  gather_facts: false
  tasks:
    - name: Write a file
      ansible.builtin.copy: {content: "bench\\n", dest: "{{ target }}"}
"""
INVENTORY = ('localhost ansible_connection=local '
             'ansible_python_interpreter="{{ ansible_playbook_python }}"\n')


class _TimedRunner(ProcessRunner):
    """A ProcessRunner that remembers how long its last child ran."""

    last_duration = 0.0

    def run(self, *args: Any, **kwargs: Any) -> ProcessResult:
        result = super().run(*args, **kwargs)
        self.last_duration = result.duration
        return result


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _cpu() -> float:
    """User+system CPU of this process and its reaped children: steadier than wall time
    on a busy machine."""
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                      resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _summary(times: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3)}


def main() -> None:
    """Run the rounds, print a table and write bench/results/ansible.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7, help="rounds (at least 5)")
    args = parser.parse_args()
    rounds = max(args.pairs, 5)

    import ansible_runner
    from ansible_runner.utils import get_callback_dir

    work = Path(tempfile.mkdtemp(prefix="iacorch-bench-ansible-"))
    (work / "play.yml").write_text(PLAYBOOK)
    (work / "hosts").write_text(INVENTORY)
    target = work / "out.txt"
    hand_argv = ["ansible-playbook", "-i", str(work / "hosts"), "-e", f"target={target}",
                 str(work / "play.yml")]
    events = work / "events"
    (events / "job_events").mkdir(parents=True)
    callback_env = {**os.environ, "ANSIBLE_CALLBACK_PLUGINS": get_callback_dir(),
                    "ANSIBLE_STDOUT_CALLBACK": "awx_display",
                    "AWX_ISOLATED_DATA_DIR": str(events)}
    process = _TimedRunner()
    attempts = iter(range(1, 10_000))
    outside_child: list[float] = []

    def hand(env: dict[str, str] | None = None) -> None:
        subprocess.run(hand_argv, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)

    def stage() -> None:
        spec = StageSpec(
            run_id="bench", stage_id="trivial", driver="ansible",
            operation=Operation.APPLY, attempt=next(attempts),
            action={"playbook": "play.yml", "inventory": ["localhost"],
                    "extra_vars": {"target": str(target)}},
            root_dir=str(work), work_dir=str(work / "stage"), state_dir=str(work / "state"))
        ctx = StageContext(spec=spec, process=process, masker=Masker(), cancel=CancelToken())
        started = time.perf_counter()
        result = AnsibleDriver().apply(ctx)
        outside_child.append(time.perf_counter() - started - process.last_duration)
        assert result.ok, result.error

    def runner() -> None:
        result = ansible_runner.run(
            private_data_dir=str(work / "runner"), playbook=str(work / "play.yml"),
            inventory=str(work / "hosts"), extravars={"target": str(target)}, quiet=True,
            cancel_callback=lambda: False)
        assert result.rc == 0, result.status

    variants: dict[str, Callable[[], None]] = {
        "hand": hand, "hand_callback": lambda: hand(callback_env),
        "iacorch": stage, "ansible_runner": runner}
    (work / "runner").mkdir()
    load_before = os.getloadavg()
    for run in variants.values():   # warm up: page cache, the first copy, imports
        run()
    outside_child.clear()
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            cpu_before = _cpu()
            times[name].append(_timed(run))
            cpu[name].append(_cpu() - cpu_before)

    true = shutil.which("true") or "/bin/true"
    spawn = {"ansible_runner.run_command(true)": [
        _timed(lambda: ansible_runner.run_command(executable_cmd=true, cmdline_args=[],
                                                  quiet=True)) for _ in range(rounds)],
             "ProcessRunner.run(true)": [_timed(lambda: process.run([true]))
                                         for _ in range(rounds)]}
    cold_import = [_timed(lambda: subprocess.run(
        [sys.executable, "-c", "import ansible_runner.config.runner"], check=True))
        - _timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
        for _ in range(rounds)]
    process.close()
    shutil.rmtree(work, ignore_errors=True)

    hand_times = times["hand"]
    report = {
        "benchmark": "ansible_stage",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "playbook": "one ansible.builtin.copy task, local connection, no facts",
        "variants": {name: {**_summary(t), "ratio_to_hand": round(
            statistics.median(a / b for a, b in zip(t, hand_times, strict=True)), 3),
            "cpu_median_s": round(statistics.median(cpu[name]), 3),
            "cpu_ratio_to_hand": round(statistics.median(cpu[name])
                                       / statistics.median(cpu["hand"]), 3)}
            for name, t in times.items()},
        "process_handling": {name: _summary(t) for name, t in spawn.items()},
        "iacorch_time_outside_the_child_s": _summary(outside_child),
        "cold_import_runner_config_s": round(statistics.median(cold_import), 3),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "target_ratio": 1.15,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for name, figures in {**report["variants"], **report["process_handling"]}.items():
        ratio = figures.get("ratio_to_hand")
        print(f"{name:34s} median {figures['median_s']:6.3f}s  min {figures['min_s']:6.3f}s"
              + (f"  x{ratio:.3f} of hand" if ratio is not None else "")
              + (f"  cpu {figures['cpu_median_s']:.3f}s x{figures['cpu_ratio_to_hand']:.3f}"
                 if "cpu_median_s" in figures else ""))
    outside = report["iacorch_time_outside_the_child_s"]["median_s"]
    print(f"iacorch outside the child: median {outside:.3f}s; cold import of RunnerConfig: "
          f"{report['cold_import_runner_config_s']:.3f}s; "
          f"load average before/after {report['load_average_before_after']}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
