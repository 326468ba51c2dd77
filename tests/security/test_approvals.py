"""Approval gates hold against the ways people get around them, and the audit log
catches every edit of a real store.

Each case drives the real CLI with IACORCH_USER set to the person acting. The gate
suspends the run (exit 3); a decision is `iacorch approve|reject RUN GATE`; the run
goes on with `iacorch resume RUN`. What sits behind a gate only runs once the gate
is approved by enough distinct, allowed people, for this run and this plan.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

GATE = """
version: 1
name: gate
stages:
  prep: {{kind: provision, shell: {{run: "echo prep >> ledger"}}}}
  go:
    kind: approval
    needs: [prep]
    approvers: [alice, bob, carol]
    require: {require}
{extra}
  after: {{kind: deploy, needs: [go], shell: {{run: "echo after >> ledger"}}}}
"""


def as_user(project, user: str, *args: str):
    return project.run(*args, env={"IACORCH_USER": user})


def gated(project, require: int = 1, extra: str = "", name: str = "gate.yaml",
          starter: str = "carol") -> str:
    """Start a run that stops at the gate; its id."""
    project.write(name, GATE.format(require=require, extra=extra))
    started = as_user(project, starter, "apply", name)
    assert started.code == 3, started.text
    return project.runs()[0]["id"]


def ran_after(project) -> bool:
    path = project.root / "ledger"
    return path.exists() and "after" in path.read_text().split()


def decisions(project) -> list[str]:
    db = sqlite3.connect(Path(project.env["IACORCH_HOME"]) / "state.db")
    with contextlib.closing(db):
        return [f"{who}:{what}" for who, what in db.execute(
            "SELECT identity, decision FROM approvals ORDER BY id")]


def test_an_identity_not_in_approvers_is_refused(project):
    run_id = gated(project)
    for who in ("mallory", "Alice", "alice2", " alice", "alice,bob"):
        refused = as_user(project, who, "approve", run_id, "go")
        assert refused.code == 77 and "is not an approver" in refused.err, (who, refused.text)
    assert decisions(project) == []
    still = project.run("resume", run_id)
    assert still.code == 3 and not ran_after(project)


def test_the_starter_cannot_approve_unless_the_gate_allows_it(project):
    run_id = gated(project)
    own = as_user(project, "carol", "approve", run_id, "go")
    assert own.code == 77 and "started this run and cannot approve it" in own.err
    assert decisions(project) == []
    allowed = gated(project, extra="    allow_self_approval: true", name="self.yaml")
    assert as_user(project, "carol", "approve", allowed, "go").code == 0
    assert project.run("resume", allowed).code == 0 and ran_after(project)


def test_one_person_cannot_satisfy_require_2(project):
    run_id = gated(project, require=2)
    assert as_user(project, "alice", "approve", run_id, "go").code == 0
    twice = as_user(project, "alice", "approve", run_id, "go", "--comment", "me again")
    assert twice.code == 77 and "already decided" in twice.err
    assert project.run("resume", run_id).code == 3 and not ran_after(project)
    assert as_user(project, "bob", "approve", run_id, "go").code == 0
    assert project.run("resume", run_id).code == 0 and ran_after(project)
    assert decisions(project) == ["alice:approve", "bob:approve"]


def test_a_gate_already_passed_takes_no_more_decisions(project):
    run_id = gated(project)
    assert as_user(project, "alice", "approve", run_id, "go", "--resume").code == 0
    for user, verb in (("bob", "approve"), ("alice", "approve"), ("bob", "reject")):
        late = as_user(project, user, verb, run_id, "go")
        assert late.code == 77 and "is not waiting at a gate" in late.err, late.text
    assert decisions(project) == ["alice:approve"]


def test_an_approval_for_run_a_does_not_approve_run_b(project):
    run_a = gated(project)
    run_b = gated(project)
    assert run_a != run_b
    assert as_user(project, "alice", "approve", run_a, "go").code == 0
    assert project.run("resume", run_b).code == 3, "run B passed on run A's approval"
    assert not ran_after(project)
    assert project.run("resume", run_a).code == 0
    assert as_user(project, "alice", "approve", run_b, "go").code == 0   # its own decision
    assert project.run("resume", run_b).code == 0


def test_an_approval_bound_to_another_gate_hash_does_not_count(project):
    """A decision recorded for what the gate showed earlier (another plan) is ignored."""
    run_id = gated(project)
    assert as_user(project, "alice", "approve", run_id, "go").code == 0
    db = sqlite3.connect(Path(project.env["IACORCH_HOME"]) / "state.db")
    with contextlib.closing(db), db:
        db.execute("UPDATE approvals SET plan_hash = ?", ("0" * 64,))
    assert project.run("resume", run_id).code == 3 and not ran_after(project)


# --- expiry -----------------------------------------------------------------------------------

EXPIRY = {None: (1, False), "cancel": (130, False), "approve": (0, True)}


def test_an_expired_gate_only_approves_itself_when_written_so(project):
    """The default (reject) and `cancel` never approve; only `on_timeout: approve` does.

    One runbook per `on_timeout`, all waiting at once, so that one wait covers them.
    """
    runs = {}
    for on_timeout in EXPIRY:
        opened = time.monotonic()          # the gate opens during this apply: expiry after it
        extra = "    timeout: 3s" + (f"\n    on_timeout: {on_timeout}" if on_timeout else "")
        name = f"expiry-{on_timeout or 'default'}"
        project.write(f"{name}.yaml", GATE.format(require=2, extra=extra).replace(
            "name: gate", f"name: {name}").replace(">> ledger", f">> {name}.ledger"))
        assert as_user(project, "carol", "apply", f"{name}.yaml").code == 3
        runs[on_timeout] = (name, project.runs()[0]["id"])
        assert as_user(project, "alice", "approve", runs[on_timeout][1], "go").code == 0
    time.sleep(max(0.0, opened + 3.3 - time.monotonic()))
    for on_timeout, (name, run_id) in runs.items():
        code, runs_after = EXPIRY[on_timeout]
        late = as_user(project, "bob", "approve", run_id, "go")
        assert late.code == 77 and "expired" in late.err, late.text
        resumed = project.run("resume", run_id)
        assert resumed.code == code, (on_timeout, resumed.text)
        ledger = (project.root / f"{name}.ledger").read_text().split()
        assert ("after" in ledger) == runs_after, on_timeout
    audit = project.run("audit", "verify")
    assert audit.code == 0, audit.text


# --- what was approved is what is applied ------------------------------------------------------

STACK = """
variable "label" {
  type = string
}

resource "terraform_data" "record" {
  input = var.label
}
"""

TF_GATE = """
version: 1
name: tfgate
vars: {label: {default: blue}}
stages:
  go: {kind: approval, approvers: [alice]}
  switch:
    kind: deploy
    needs: [go]
    terraform: {dir: stack, vars: {label: "{{ vars.label }}"}}
"""


@pytest.fixture
def tf_gated(project, require_tool):
    require_tool("terraform")
    project.write("stack/main.tf", STACK)
    project.write("tfgate.yaml", TF_GATE)
    started = as_user(project, "carol", "apply", "tfgate.yaml")
    assert started.code == 3, started.text
    run_id = project.runs()[0]["id"]
    assert as_user(project, "alice", "approve", run_id, "go").code == 0
    return run_id


def applied_labels(project) -> list[str]:
    import json

    state = project.root / "stack" / "terraform.tfstate"
    if not state.exists():
        return []
    return [r["instances"][0]["attributes"]["input"]["value"]
            for r in json.loads(state.read_text())["resources"]]


def saved_plan_of(project, run_id: str) -> Path:
    found = list((Path(project.env["IACORCH_HOME"]) / "runs" / run_id).rglob("tfplan"))
    assert len(found) == 1, found
    return found[0]


def test_a_stack_edited_after_approval_is_not_what_gets_applied(project, tf_gated):
    project.write("stack/main.tf", STACK.replace("input = var.label",
                                                 'input = "${var.label}-edited"'))
    resumed = project.run("resume", tf_gated)
    assert resumed.code == 0, resumed.text
    assert applied_labels(project) == ["blue"], "the edited, unapproved config was applied"


def test_an_edited_runbook_cannot_resume_an_approved_run(project, tf_gated):
    project.write("tfgate.yaml", TF_GATE.replace('label: "{{ vars.label }}"',
                                                 'label: "{{ vars.label }}-edited"'))
    resumed = project.run("resume", tf_gated)
    assert resumed.code == 64 and "changed since run" in resumed.err
    assert applied_labels(project) == []


def test_a_saved_plan_swapped_after_approval_is_refused(project, tf_gated, tmp_path):
    import os
    import subprocess

    other = tmp_path / "other"
    shutil.copytree(project.root / "stack", other)
    env = {**os.environ, "TF_DATA_DIR": str(tmp_path / "tfdata"), "TF_IN_AUTOMATION": "1"}
    for argv in (["terraform", "init", "-input=false"],
                 ["terraform", "plan", "-input=false", "-var", "label=mallory",
                  f"-out={saved_plan_of(project, tf_gated)}"]):
        done = subprocess.run(argv, cwd=project.root / "stack", env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    resumed = project.run("resume", tf_gated)
    assert applied_labels(project) != ["mallory"], "a plan nobody approved was applied"
    assert resumed.code == 1, resumed.text


# --- the audit log of a real store ----------------------------------------------------------

def audit_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as raw:
        return raw.execute("SELECT count(*) FROM audit").fetchone()[0]


def mutate(raw: sqlite3.Connection, rng: random.Random, n: int) -> tuple[str, int]:
    """One random mutation of the audit table; its kind and the first seq it breaks."""
    kind = rng.choice(["flip", "delete", "swap", "duplicate"])
    cols = "time, kind, run_id, stage_id, actor, data, prev_hash, hash"
    if kind == "flip":
        seq = rng.randrange(1, n + 1)
        column = rng.choice(["kind", "actor", "data", "time", "hash", "prev_hash", "run_id"])
        (value,) = raw.execute(f"SELECT {column} FROM audit WHERE seq = ?", (seq,)).fetchone()
        if value is None:
            value = "x"
        elif isinstance(value, float):
            value = value + rng.choice([-1.0, 1.0, 0.001])
        else:
            pos = rng.randrange(len(value))
            value = value[:pos] + chr(ord(value[pos]) ^ (1 << rng.randrange(5))) + \
                value[pos + 1:]
        raw.execute(f"UPDATE audit SET {column} = ? WHERE seq = ?", (value, seq))
        return f"flip {column}", seq
    if kind == "delete":
        seq = rng.randrange(1, n)             # not the last: that is tail truncation
        raw.execute("DELETE FROM audit WHERE seq = ?", (seq,))
        return kind, seq
    if kind == "swap":
        a, b = sorted(rng.sample(range(1, n + 1), 2))
        row_a = raw.execute(f"SELECT {cols} FROM audit WHERE seq = ?", (a,)).fetchone()
        row_b = raw.execute(f"SELECT {cols} FROM audit WHERE seq = ?", (b,)).fetchone()
        sets = ", ".join(f"{c} = ?" for c in cols.split(", "))
        raw.execute(f"UPDATE audit SET {sets} WHERE seq = ?", (*row_b, a))
        raw.execute(f"UPDATE audit SET {sets} WHERE seq = ?", (*row_a, b))
        return kind, a
    seq = rng.randrange(1, n + 1)
    raw.execute("UPDATE audit SET seq = -seq WHERE seq > ?", (seq,))
    raw.execute("UPDATE audit SET seq = 1 - seq WHERE seq < 0")
    raw.execute(f"INSERT INTO audit (seq, {cols}) SELECT seq + 1, {cols} FROM audit "
                "WHERE seq = ?", (seq,))
    return kind, seq + 1


@pytest.fixture
def real_store(project, tmp_path) -> Path:
    """A state.db made by the CLI: runs, gates, approvals, a rejection, a failed stage."""
    run_id = gated(project, require=2)
    as_user(project, "alice", "approve", run_id, "go", "--comment", "looks right")
    as_user(project, "bob", "approve", run_id, "go", "--resume")
    other = gated(project)
    as_user(project, "bob", "reject", other, "go", "--comment", "not today", "--resume")
    project.write("fail.yaml", "version: 1\nname: fail\nstages:\n"
                               "  boom: {kind: provision, shell: {run: 'exit 4'}}\n")
    assert project.run("apply", "fail.yaml").code == 1
    ok = project.run("audit", "verify")
    assert ok.code == 0 and "audit log intact" in ok.out, ok.text
    copy = tmp_path / "pristine.db"
    with contextlib.closing(sqlite3.connect(Path(project.env["IACORCH_HOME"]) / "state.db")) \
            as source, contextlib.closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    with contextlib.closing(sqlite3.connect(copy)) as raw:
        raw.execute("DROP TRIGGER audit_no_update")     # as a tamperer with the file would
        raw.execute("DROP TRIGGER audit_no_delete")
        raw.commit()
    return copy


def test_every_audit_mutation_of_a_real_store_is_caught_naming_the_first_bad_row(
        project, real_store, tmp_path, cli_main, long_tests):
    n = audit_rows(real_store)
    assert n >= 20, "the store should hold a realistic audit log"
    rng = random.Random(20261127)
    mutations = 5_000 if long_tests else 1_000
    kinds: set[str] = set()
    for number in range(mutations):
        # a fresh directory each time: no -wal or -shm of an earlier copy can be replayed
        target = tmp_path / f"mutated-{number}" / "state.db"
        target.parent.mkdir()
        shutil.copy(real_store, target)
        with contextlib.closing(sqlite3.connect(target, isolation_level=None)) as raw:
            kind, first_bad = mutate(raw, rng, n)
        kinds.add(kind.split()[0])
        if number % 200 == 0:    # now and then through a real process, the rest in-process
            result = project.run("audit", "verify", "--store", str(target))
            code, text = result.code, result.text
        else:
            code, text = cli_main("audit", "verify", "--store", str(target))
        assert code == 1, f"{kind} not caught: {text}"
        assert f"audit log BROKEN at entry {first_bad}:" in text, (kind, first_bad, text)
        shutil.rmtree(target.parent)
    assert kinds == {"flip", "delete", "swap", "duplicate"}
    print(f"AUDIT: {mutations} mutations of a {n}-entry CLI-made store, every one caught")


def test_what_the_chain_cannot_catch_needs_the_head_printed_by_the_run(
        project, cli_main):
    """Tail truncation verifies; `audit verify --head` with the head the run printed shows it."""
    project.write("one.yaml", "version: 1\nname: one\nstages:\n"
                              "  a: {kind: provision, shell: {run: 'true'}}\n")
    apply = project.run("apply", "one.yaml")
    assert apply.code == 0, apply.text
    printed = apply.err.split("audit chain head: ")[1].split()[0]
    db = Path(project.env["IACORCH_HOME"]) / "state.db"
    head_before = cli_main("audit", "verify", "--store", str(db))[1].split("head ")[1].strip()
    assert head_before.startswith(printed)
    with contextlib.closing(sqlite3.connect(db)) as raw:
        raw.execute("DROP TRIGGER audit_no_delete")
        raw.execute("DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")
        raw.commit()
    code, text = cli_main("audit", "verify", "--store", str(db))
    assert code == 0, "a truncated tail is a valid shorter chain"
    assert not text.split("head ")[1].strip().startswith(printed), \
        "but its head no longer matches the one the run printed"
    code, text = cli_main("audit", "verify", "--store", str(db), "--head", printed)
    assert code == 1, text
    seq = int(apply.err.split("audit chain head: ")[1].split("(seq ")[1].split(")")[0])
    assert f"the log ends at seq {seq - 1} with head " in text, text
    assert f"but you expected head {printed}: entries were removed or this is another " \
        "store" in text, text
    code, text = cli_main("audit", "verify", "--store", str(db), "--head", printed[:8])
    assert code == 64 and "at least 12 hex digits" in text, text
