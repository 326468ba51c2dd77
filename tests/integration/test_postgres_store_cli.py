"""The real CLI on a PostgreSQL store: runs recorded in the database, logs and saved plans
in $IACORCH_SHARED_DIR, so another checkout (standing in for another host) shows,
approves and verifies them; locks hold across processes; bad URLs are clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import Project
from tests.integration.test_approvals_cli import GATED, STACK, state_labels

pytestmark = pytest.mark.integration


@pytest.fixture
def shared(tmp_path: Path, postgres_url: str) -> dict[str, str]:
    """The environment every 'host' of one installation shares."""
    return {"IACORCH_STORE": postgres_url, "IACORCH_SHARED_DIR": str(tmp_path / "shared")}


def checkout(root: Path, env: dict[str, str]) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    made = Project(root)
    made.env.update(env)
    return made


def test_a_gated_run_is_shown_approved_and_verified_from_another_checkout(
        tmp_path: Path, shared: dict[str, str], require_tool) -> None:
    require_tool("terraform")
    here = checkout(tmp_path / "here", shared)
    there = checkout(tmp_path / "there", shared)
    here.write("stack/main.tf", STACK)
    here.write("gated.yaml", GATED.replace("{require}", "1"))
    started = here.run("apply", "gated.yaml", env={"IACORCH_USER": "carol"})
    assert started.code == 3, started.text
    assert not (here.root / ".iacorch").exists()  # nothing of the run is local to this host

    (listed,) = there.runs()
    run_id = listed["id"]
    assert (listed["runbook"], listed["status"]) == ("gated", "waiting_approval")
    shown = there.show(run_id)
    assert {s["id"]: s["status"] for s in shown["stages"]}["prep"] == "succeeded"
    logs = there.run("logs", run_id)  # the gate's pre-plan of `switch`, run over there
    assert logs.code == 0 and "Plan: 1 to add" in logs.out, logs.text
    saved = Path(shared["IACORCH_SHARED_DIR"]) / "runs" / run_id / "switch" / "tfplan"
    assert saved.is_file()  # the plan that `approve` binds to and `resume` applies

    approved = there.run("approve", run_id, "go", env={"IACORCH_USER": "alice"})
    assert approved.code == 0, approved.text
    resumed = here.run("resume", run_id)
    assert resumed.code == 0, resumed.text
    assert state_labels(here) == ["blue"]

    verified = there.run("audit", "verify")
    assert verified.code == 0 and "intact" in verified.out, verified.text
    assert there.show(run_id)["run"]["status"] == "succeeded"


def test_audit_verify_catches_a_stage_row_edited_in_the_database(
        project: Project, shared: dict[str, str], postgres_url: str) -> None:
    import psycopg

    project.env.update(shared)
    project.write("one.yaml", """
        version: 1
        name: one
        stages:
          a: {kind: provision, shell: {run: "echo made"}}
        """)
    assert project.run("apply", "one.yaml").code == 0
    assert project.run("audit", "verify").code == 0
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE stages SET error = 'forged'")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM audit")
    broken = project.run("audit", "verify")
    assert broken.code == 1 and "BROKEN" in broken.err, broken.text
    assert "stage a" in broken.text


def test_two_coordinators_race_for_one_lock(tmp_path: Path, shared: dict[str, str]) -> None:
    first = checkout(tmp_path / "first", shared)
    second = checkout(tmp_path / "second", shared)
    runbook = """
        version: 1
        name: slow
        stages:
          wait: {kind: provision, shell: {run: "sleep 4"}}
        """
    first.write("slow.yaml", runbook)
    second.write("slow.yaml", runbook)
    running = first.start("apply", "slow.yaml")
    try:
        deadline = time.monotonic() + 30
        while [r["status"] for r in second.runs()] != ["running"]:
            assert time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.2)
        refused = second.run("apply", "slow.yaml")
        assert refused.code == 5, refused.text
        assert "locked" in refused.err.lower() and "Traceback" not in refused.text
    finally:
        assert running.wait(timeout=60) == 0
    assert [r["status"] for r in second.runs()] == ["succeeded"]


@pytest.mark.parametrize("url", [
    "postgresql://iacorch:s3cret-pw@127.0.0.1:1/iacorch",
    "postgres://iacorch:s3cret-pw@localhost:1/iacorch?connect_timeout=2"])
def test_an_unreachable_database_is_a_clear_error_without_the_password(
        project: Project, url: str) -> None:
    result = project.run("runs", env={"IACORCH_STORE": url})
    assert result.code == 74, result.text
    assert "cannot use the PostgreSQL store postgresql://iacorch@" in result.err
    assert "s3cret" not in result.text and "Traceback" not in result.text


def test_a_schema_of_someone_elses_tables_is_refused(project: Project,
                                                    postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE runs (id int)")
    result = project.run("runs", "--json", env={"IACORCH_STORE": postgres_url})
    assert result.code == 74 and "not an iacorch store" in result.err, result.text
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()")]
    assert tables == ["runs"]
