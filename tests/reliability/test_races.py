"""Races between CLI processes on one store: the run lock, waiting for it, and runs of
different runbooks (or workspaces) side by side.

Every process here is a real `python -m iacorch` started at the same moment as its
rival; the ledger each stage writes shows who ran, and when.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

HOLD = """
version: 1
name: race
vars: {env: {default: dev}}
stages:
  work:
    kind: provision
    shell:
      run: |
        echo "start {{ vars.env }} $IACORCH_RUN_ID $(date +%s.%N)" >> ledger
        sleep 1.5
        echo "end {{ vars.env }} $IACORCH_RUN_ID $(date +%s.%N)" >> ledger
"""


@dataclass
class Stamped:
    """A CLI process whose output lines are time-stamped as they arrive."""

    proc: subprocess.Popen[str]
    lines: list[tuple[float, str]] = field(default_factory=list)
    exited_at: float | None = None

    def follow(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
        self.proc.wait()
        self.exited_at = time.monotonic()

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def first(self, pattern: str) -> float:
        return next(t for t, line in self.lines if re.search(pattern, line))


def start_together(project, *commands: tuple[str, ...], cwds: tuple[Path, ...] = (),
                   env: dict[str, str] | None = None) -> list[Stamped]:
    """Start every command at once (spawned back to back), follow each to its end."""
    racers = [Stamped(subprocess.Popen(project.argv(*args), cwd=cwd, env=env or project.env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, start_new_session=True))
              for args, cwd in zip(commands, cwds or [project.root] * len(commands),
                                   strict=True)]
    readers = [threading.Thread(target=r.follow) for r in racers]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=120)
    assert all(r.exited_at is not None for r in racers), "a racer hung"
    return racers


def ledger_events(project) -> list[tuple[str, str, str, float]]:
    path = project.root / "ledger"
    rows = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    return [(what, env, run, float(at)) for what, env, run, at in rows]


def intervals(project) -> dict[str, tuple[float, float]]:
    """run id -> (start, end) of its `work` stage, from the ledger."""
    seen: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for what, _env, run, at in ledger_events(project):
        assert what not in seen[run], f"run {run} wrote `{what}` twice"
        seen[run][what] = at
    return {run: (marks["start"], marks["end"]) for run, marks in seen.items()}


def test_two_applies_started_together_exactly_one_runs_the_other_exits_5_at_once(
        project, long_tests):
    project.write("race.yaml", HOLD)
    trials = 20 if long_tests else 3
    for trial in range(trials):
        racers = start_together(project, ("apply", "race.yaml"), ("apply", "race.yaml"))
        codes = sorted(r.proc.returncode for r in racers)
        assert codes == [0, 5], [r.text for r in racers]
        winner = next(r for r in racers if r.proc.returncode == 0)
        loser = next(r for r in racers if r.proc.returncode == 5)
        run_id = project.runs()[0]["id"]
        assert f"race/dev is locked by run {run_id} (pid {winner.proc.pid} on " in loser.text
        assert "--lock-timeout" in loser.text and "iacorch unlock race/dev" in loser.text
        # from asking for the lock (the line printed just before) to exit 5: no waiting
        assert loser.exited_at is not None
        assert loser.exited_at - loser.first(r"^run \S+: apply race\.yaml") < 1.0
        assert len(project.runs()) == trial + 1, "the loser must not create a run"
        assert list(intervals(project)) == [r["id"] for r in reversed(project.runs())]
    print(f"RACES: {trials} pairs of simultaneous applies, one winner each")


def test_applies_from_two_directories_of_one_project_share_state_and_lock(project):
    """No $IACORCH_HOME: state lives at the project root, wherever the command runs."""
    project.write("race.yaml", HOLD)
    (project.root / "sub").mkdir()
    env = {k: v for k, v in project.env.items() if k != "IACORCH_HOME"}
    racers = start_together(project, ("apply", "race.yaml"), ("apply", "../race.yaml"),
                            cwds=(project.root, project.root / "sub"), env=env)
    assert sorted(r.proc.returncode for r in racers) == [0, 5], [r.text for r in racers]
    assert not (project.root / "sub" / ".iacorch").exists()
    listed = subprocess.run(project.argv("runs", "--json"), cwd=project.root / "sub", env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1, listed.stderr


def test_with_lock_timeout_the_second_waits_then_runs(project):
    project.write("race.yaml", HOLD)
    racers = start_together(project, ("apply", "race.yaml", "--lock-timeout", "30s"),
                            ("apply", "race.yaml", "--lock-timeout", "30s"))
    assert [r.proc.returncode for r in racers] == [0, 0], [r.text for r in racers]
    spans = sorted(intervals(project).values())
    assert len(spans) == 2
    (_, first_end), (second_start, _) = spans
    assert first_end <= second_start, "the two runs held the lock at the same time"
    assert [r["status"] for r in project.runs()] == ["succeeded", "succeeded"]


def test_the_same_runbook_in_two_workspaces_runs_side_by_side(project):
    project.write("race.yaml", HOLD)
    racers = start_together(project, ("apply", "race.yaml", "--var", "env=blue"),
                            ("apply", "race.yaml", "--var", "env=green"))
    assert [r.proc.returncode for r in racers] == [0, 0], [r.text for r in racers]
    (a_start, a_end), (b_start, b_end) = sorted(intervals(project).values())
    assert b_start < a_end, "different workspaces must not wait for each other"
    assert sorted(r["workspace"] for r in project.runs()) == ["blue", "green"]


def fan_out(name: str, stages: int = 8) -> str:
    """A runbook whose stages pass outputs down a chain and fan out beside it."""
    lines = ["version: 1", f"name: {name}", "concurrency: 3", "stages:"]
    for n in range(stages):
        sid = f"{name}{n}"
        check = (f'test "{{{{ stages.{name}{n - 2}.outputs.who }}}}" = {name}{n - 2}; '
                 if n >= 2 else "")
        needs = f"    needs: [{name}{n - 2}]\n" if n >= 2 else ""
        lines.append(f"  {sid}:\n    kind: provision\n{needs}    shell:\n      run: >-\n"
                     f"        echo {sid} >> ledger-{name}; {check}sleep 0.4;\n"
                     f"        echo '{{\"who\": \"{sid}\"}}' >> \"$IACORCH_OUTPUT\"")
    return "\n".join(lines) + "\n"


def test_two_runbooks_in_parallel_on_one_store_do_not_interfere(project, long_tests):
    project.write("alpha.yaml", fan_out("alpha"))
    project.write("beta.yaml", fan_out("beta"))
    rounds = 5 if long_tests else 1
    for _ in range(rounds):
        racers = start_together(project, ("apply", "alpha.yaml"), ("apply", "beta.yaml"))
        assert [r.proc.returncode for r in racers] == [0, 0], [r.text for r in racers]
    for name in ("alpha", "beta"):
        ledger = (project.root / f"ledger-{name}").read_text().split()
        assert collections.Counter(ledger) == {f"{name}{n}": rounds for n in range(8)}
    runs = project.runs()
    assert sorted(r["runbook"] for r in runs) == sorted(["alpha", "beta"] * rounds)
    for run in runs:
        shown = project.show(run["id"])
        assert shown["run"]["status"] == "succeeded"
        assert {s["id"] for s in shown["stages"]} == {f"{run['runbook']}{n}" for n in range(8)}
        for stage in shown["stages"]:
            assert stage["outputs"] == {"who": stage["id"]}
    alpha_first = racers[0].first(r"> alpha0")
    beta_first = racers[1].first(r"> beta0")
    assert abs(alpha_first - beta_first) < 1.5, "the two runs should have overlapped"
    audit = project.run("audit", "verify")
    assert audit.code == 0, audit.text
