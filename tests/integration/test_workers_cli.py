"""Stages on real `iacorch worker` processes over a real redis-server, fenced by leases
in a real PostgreSQL: routing by `pool:`, no secret on the broker, kill -9 of a worker
mid-tool, redelivery by a tiny visibility timeout. Never Celery's eager mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Project
from tests.services import RedisServer

pytestmark = pytest.mark.integration

SEAL_KEY = "q0FyKmB6Yl9c2yWm5Jx0yq0m8A9pZ0aQk0d2Jm1bQ3Y="


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


class Cluster:
    """One coordinator checkout plus the workers it starts, sharing store and broker."""

    def __init__(self, root: Path, postgres_url: str, redis: RedisServer) -> None:
        self.project = Project(root)
        self.env = {"IACORCH_STORE": postgres_url, "IACORCH_BROKER": redis.url,
                    "IACORCH_SHARED_DIR": str(root / "shared"), "IACORCH_SEAL_KEY": SEAL_KEY,
                    "IACORCH_WORKER_LEASE": "2"}
        self.project.env.update(self.env)
        self.workers: list[subprocess.Popen[bytes]] = []

    def worker(self, pool: str = "w1", concurrency: int = 1,
               **env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iacorch", "worker", "--pool", pool,
             "--concurrency", str(concurrency)],
            env={**self.project.env, "WORKER_MARK": pool, **env}, cwd=self.project.root,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, redis_server: RedisServer) -> Iterator[Cluster]:
    made = Cluster(tmp_path, postgres_url, redis_server)
    try:
        yield made
    finally:
        made.stop()


def wait_for(predicate, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def starts(ledger: Path) -> int:
    return len(ledger.read_text().splitlines()) if ledger.exists() else 0


def test_pooled_stages_run_on_the_worker_and_the_rest_here(cluster: Cluster) -> None:
    cluster.worker()
    cluster.project.write("rb.yaml", """
        version: 1
        name: rb
        stages:
          remote:
            kind: provision
            pool: w1
            shell: {run: "echo ran-on=${WORKER_MARK:-coordinator}"}
          here:
            kind: provision
            needs: [remote]
            shell: {run: "echo ran-on=${WORKER_MARK:-coordinator}"}
        """)
    result = cluster.project.run("apply", "rb.yaml", timeout=60)
    assert result.code == 0, result.text
    assert "remote | ran-on=w1" in result.out, result.text  # the worker's output, shown here
    (run,) = cluster.project.runs()
    logs = cluster.project.run("logs", run["id"])
    assert "remote #1 | " in logs.out and "ran-on=w1" in logs.out, logs.text
    assert "here #1 | " in logs.out and "ran-on=coordinator" in logs.out, logs.text
    assert cluster.project.run("audit", "verify").code == 0


def test_no_secret_crosses_the_broker_in_clear(cluster: Cluster,
                                               redis_server: RedisServer) -> None:
    import redis

    secret = "hunter2-very-secret"
    cluster.project.write("rb.yaml", """
        version: 1
        name: rb
        secrets: {token: {env: API_TOKEN}}
        stages:
          call:
            kind: provision
            pool: w1
            shell:
              run: |
                printf %s "$IACORCH_SECRET_TOKEN" > from-env.txt
                printf %s "{{ secrets.token }}" > from-template.txt
        """)
    env = {"API_TOKEN": secret}
    coordinator = cluster.project.start("apply", "rb.yaml", env=env)
    client = redis.Redis.from_url(redis_server.url)
    wait_for(lambda: client.llen("pool-w1") == 1, what="the task on the broker")
    message = b"".join(client.lrange("pool-w1", 0, -1))
    assert b"call" in message and secret.encode() not in message
    cluster.worker(API_TOKEN=secret)  # the worker resolves the reference from its own env
    out, _ = coordinator.communicate(timeout=60)
    assert coordinator.returncode == 0, out
    assert secret not in out
    for name in ("from-env.txt", "from-template.txt"):  # resolved there, and unsealed there
        assert (cluster.project.root / name).read_text() == secret


def test_a_worker_killed_mid_tool_leaves_the_stage_interrupted_and_never_reruns_it(
        cluster: Cluster) -> None:
    ledger = cluster.project.root / "ledger"
    cluster.project.write("rb.yaml", f"""
        version: 1
        name: rb
        stages:
          once:
            kind: provision
            pool: w1
            shell: {{run: "echo start >> {ledger}; sleep 20"}}
        """)
    # a short visibility timeout, so the broker redelivers the killed worker's task
    cluster.project.env["IACORCH_VISIBILITY_TIMEOUT"] = "3"
    first = cluster.worker(IACORCH_VISIBILITY_TIMEOUT="3")
    coordinator = cluster.project.start("apply", "rb.yaml")
    wait_for(lambda: starts(ledger) == 1, what="the tool to start")
    os.kill(first.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    cluster.worker(IACORCH_VISIBILITY_TIMEOUT="3")  # gets the redelivered task
    out, _ = coordinator.communicate(timeout=60)
    marked_after = time.monotonic() - killed_at
    assert coordinator.returncode == 130, out
    assert marked_after <= 2 + 15, marked_after
    (run,) = cluster.project.runs()
    stage = cluster.project.show(run["id"])["stages"][0]
    assert stage["status"] == "interrupted" and "lease" in (stage["error"] or ""), stage
    time.sleep(5)  # past the visibility timeout and a restore cycle: the copy must not run
    assert starts(ledger) == 1


def test_redelivered_copies_wait_for_the_live_lease_instead_of_starting_again(
        cluster: Cluster, redis_server: RedisServer) -> None:
    import json

    import redis

    ledger = cluster.project.root / "ledger"
    cluster.project.write("rb.yaml", f"""
        version: 1
        name: rb
        stages:
          slow:
            kind: provision
            pool: w1
            timeout: 30s
            shell: {{run: "echo start >> {ledger}; sleep 6"}}
        """)
    cluster.project.env["IACORCH_VISIBILITY_TIMEOUT"] = "60"  # the coordinator's check
    for _ in range(2):  # two consumers with a 1 s visibility timeout: copies run at once
        cluster.worker(concurrency=2, IACORCH_VISIBILITY_TIMEOUT="1")
    coordinator = cluster.project.start("apply", "rb.yaml")
    wait_for(lambda: starts(ledger) == 1, what="the tool to start")
    # and one more copy for certain, as the broker's restore makes it (it may make others)
    client = redis.Redis.from_url(redis_server.url)
    for raw in client.hvals("unacked"):
        message, _, routing_key = json.loads(raw)
        client.lpush(routing_key, json.dumps(message))
    out, _ = coordinator.communicate(timeout=90)
    assert coordinator.returncode == 0, out
    assert starts(ledger) == 1
    with psycopg.connect(cluster.env["IACORCH_STORE"]) as conn:
        ((copies, tool_starts),) = conn.execute("SELECT copies, starts FROM attempt_leases")
    assert copies >= 2 and tool_starts == 1  # redelivered while it ran, started once


def test_ctrl_c_of_the_coordinator_reaches_the_tool_on_the_worker(cluster: Cluster) -> None:
    ledger = cluster.project.root / "ledger"
    cluster.project.write("rb.yaml", f"""
        version: 1
        name: rb
        stages:
          long:
            kind: provision
            pool: w1
            shell:
              run: |
                trap 'echo got-sigint >> {ledger}; exit 130' INT
                echo start >> {ledger}
                sleep 30 & wait
        """)
    cluster.worker()
    coordinator = cluster.project.start("apply", "rb.yaml")
    wait_for(lambda: starts(ledger) == 1, what="the tool to start")
    os.killpg(coordinator.pid, signal.SIGINT)
    out, _ = coordinator.communicate(timeout=60)
    assert coordinator.returncode == 130, out
    assert ledger.read_text().splitlines() == ["start", "got-sigint"]
    (run,) = cluster.project.runs()
    assert cluster.project.show(run["id"])["stages"][0]["status"] == "interrupted"


@pytest.mark.parametrize("restart", ["postgresql", "redis"])
def test_a_restart_of_the_database_or_the_broker_mid_run_costs_no_stage(
        cluster: Cluster, restart: str, postgres_cluster, redis_server: RedisServer) -> None:
    ledger = cluster.project.root / "ledger"
    cluster.project.write("rb.yaml", f"""
        version: 1
        name: rb
        stages:
          first: {{kind: provision, pool: w1, shell: {{run: "echo first >> {ledger}; sleep 5"}}}}
          second: {{kind: provision, pool: w1, needs: [first],
                    shell: {{run: "echo second >> {ledger}"}}}}
        """)
    cluster.project.env["IACORCH_WORKER_LEASE"] = "8"  # outlasts the restart
    cluster.worker(IACORCH_WORKER_LEASE="8")
    coordinator = cluster.project.start("apply", "rb.yaml")
    wait_for(lambda: starts(ledger) == 1, what="the first tool to start")
    if restart == "postgresql":
        postgres_cluster.stop("fast")   # every connection is cut
        time.sleep(1)
        postgres_cluster.start()
    else:
        redis_server.stop()             # no persistence: the broker forgets everything
        time.sleep(1)
        redis_server.start()
    out, _ = coordinator.communicate(timeout=90)
    assert coordinator.returncode == 0, out
    assert ledger.read_text().splitlines() == ["first", "second"]


@pytest.mark.parametrize(("env", "expected"), [
    ({"IACORCH_STORE": ""}, "only with a PostgreSQL store"),
    ({"IACORCH_VISIBILITY_TIMEOUT": "60"}, "longer than the broker's visibility timeout")])
def test_a_pooled_run_that_cannot_be_fenced_is_refused_before_anything_runs(
        cluster: Cluster, env: dict[str, str], expected: str) -> None:
    cluster.project.write("rb.yaml", """
        version: 1
        name: rb
        stages:
          a: {kind: provision, pool: w1, timeout: 2m, shell: {run: "touch ran"}}
        """)
    result = cluster.project.run("apply", "rb.yaml", env=env)
    assert result.code == 64 and expected in result.err, result.text
    assert "Traceback" not in result.text and not (cluster.project.root / "ran").exists()


def test_a_worker_whose_heartbeat_paused_loses_its_lease_and_stops_its_tool(
        cluster: Cluster) -> None:
    ledger = cluster.project.root / "ledger"
    cluster.project.write("rb.yaml", f"""
        version: 1
        name: rb
        stages:
          long:
            kind: provision
            pool: w1
            shell:
              run: |
                trap 'echo got-sigint >> {ledger}; exit 130' INT
                echo start >> {ledger}
                sleep 30 & wait
        """)
    paused = cluster.worker()
    coordinator = cluster.project.start("apply", "rb.yaml")
    wait_for(lambda: starts(ledger) == 1, what="the tool to start")
    os.kill(paused.pid, signal.SIGSTOP)   # the tool runs on; its lease is not renewed
    try:
        out, _ = coordinator.communicate(timeout=60)
        assert coordinator.returncode == 130, out
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    # back, the worker finds its lease gone: one SIGINT to the tool, its result is not kept
    wait_for(lambda: ledger.read_text().splitlines() == ["start", "got-sigint"],
             what="the tool to get SIGINT")
    (run,) = cluster.project.runs()
    stage = cluster.project.show(run["id"])["stages"][0]
    assert stage["status"] == "interrupted" and "lease" in (stage["error"] or "")


def test_iacorch_cancel_stops_the_run_and_its_tool_on_the_worker(cluster: Cluster) -> None:
    ledger = cluster.project.root / "ledger"
    cluster.project.write("rb.yaml", f"""
        version: 1
        name: rb
        stages:
          long:
            kind: provision
            pool: w1
            shell:
              run: |
                trap 'echo got-sigint >> {ledger}; exit 130' INT
                echo start >> {ledger}
                sleep 30 & wait
          after: {{kind: provision, needs: [long], shell: {{run: "touch after"}}}}
        """)
    cluster.worker()
    coordinator = cluster.project.start("apply", "rb.yaml")
    wait_for(lambda: starts(ledger) == 1, what="the tool to start")
    (run,) = cluster.project.runs()
    cancelled = cluster.project.run("cancel", run["id"][:12])
    assert cancelled.code == 0, cancelled.text
    assert "asked 1 of its stage attempt(s) on workers to stop" in cancelled.out
    out, _ = coordinator.communicate(timeout=60)
    assert coordinator.returncode == 130, out
    assert ledger.read_text().splitlines() == ["start", "got-sigint"]
    assert not (cluster.project.root / "after").exists()
    again = cluster.project.run("cancel", run["id"])
    assert again.code == 64 and "not running" in again.err


def test_an_unreachable_broker_fails_the_stage_cleanly_and_resume_retries_it(
        cluster: Cluster) -> None:
    from tests.services import free_port

    cluster.project.write("rb.yaml", """
        version: 1
        name: rb
        stages:
          a: {kind: provision, pool: w1, shell: {run: "echo ran >> ledger"}}
        """)
    down = {"IACORCH_BROKER": f"redis://127.0.0.1:{free_port()}/0"}
    failed = cluster.project.run("apply", "rb.yaml", env=down)
    assert failed.code == 1, failed.text
    assert "the broker did not take it" in failed.text and "Traceback" not in failed.text
    (run,) = cluster.project.runs()
    assert run["status"] == "failed"
    cluster.worker()
    resumed = cluster.project.run("resume", run["id"], timeout=60)
    assert resumed.code == 0, resumed.text
    assert (cluster.project.root / "ledger").read_text() == "ran\n"


def test_the_worker_asks_its_own_policy_before_the_tool_starts(cluster: Cluster) -> None:
    """The coordinator here has no policy; the worker's policy set refuses the stage."""
    policy = cluster.project.root / "worker-policy"
    policy.mkdir()
    (policy / "no_pipe.rego").write_text(textwrap.dedent("""
        package iacorch

        deny contains {"msg": sprintf("stage `%s` pipes into a shell", [id]), "stage": id} if {
        \tsome id, command in input.commands
        \tcontains(command, "| sh")
        }
        """))
    ledger = cluster.project.root / "ledger"
    cluster.project.write("rb.yaml", f"""
        version: 1
        name: rb
        stages:
          fetch:
            kind: provision
            pool: w1
            shell: {{run: "echo start >> {ledger}; echo true | sh"}}
        """)
    cluster.worker(IACORCH_POLICY_DIR=str(policy))
    result = cluster.project.run("apply", "rb.yaml", timeout=60)
    assert result.code == 1, result.text
    assert starts(ledger) == 0        # refused before the tool started
    (run,) = cluster.project.runs()
    stage = cluster.project.show(run["id"])["stages"][0]
    assert stage["status"] == "failed" and "pipes into a shell" in (stage["error"] or "")
    with psycopg.connect(cluster.env["IACORCH_STORE"]) as conn:
        checks = [json.loads(data) for (data,) in conn.execute(
            "SELECT data FROM audit WHERE kind = 'policy_checked'")]
    assert [(c["on"], c["allowed"]) for c in checks] == [("worker", False)]
