"""AWS through the real CLI, against a moto server on loopback (AWS_ENDPOINT_URL):
secrets from Secrets Manager and SSM reach the stages and nothing else; a missing one is a
located error before any stage; `iacorch listen` turns an S3 upload into a run."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iacorch.store import open_store
from tests.aws_fixtures import NOT_INHERITED, aws_env, client, moto_server

pytestmark = pytest.mark.integration

CANARY_DB = "cAnArY-db-7f3a91e2"
CANARY_TOKEN = "cAnArY-tok-c04d55b8"

SECRETS_RUNBOOK = """
version: 1
name: aws-secrets
secrets:
  db: {aws_secretsmanager: prod/db, key: password}
  tok: {aws_ssm: /iac/prod/token}
stages:
  use:
    kind: deploy
    shell:
      run: |
        printf %s {{ secrets.db }} | sha256sum | cut -c1-64 > ../db.sha256
        printf %s {{ secrets.tok }} | sha256sum | cut -c1-64 > ../tok.sha256
        echo "db is {{ secrets.db }} and the token is {{ secrets.tok }}"
"""

EXAMPLE = Path(__file__).resolve().parents[2] / "plans" / "s3-release.yaml"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws_project(project, endpoint):
    for name in NOT_INHERITED:
        project.env.pop(name, None)
    project.env.update(aws_env(endpoint))
    (project.root / "plans").mkdir()
    return project


def every_byte_under(path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def test_apply_reads_aws_secrets_and_writes_them_nowhere(aws_project, endpoint):
    client("secretsmanager", endpoint).create_secret(
        Name="prod/db", SecretString=json.dumps({"user": "app", "password": CANARY_DB}))
    client("ssm", endpoint).put_parameter(Name="/iac/prod/token", Value=CANARY_TOKEN,
                                          Type="SecureString", Overwrite=True)
    aws_project.write("plans/secrets.yaml", SECRETS_RUNBOOK)
    result = aws_project.run("apply", "plans/secrets.yaml")
    assert result.code == 0, result.text
    digest = {name: (aws_project.root / f"{name}.sha256").read_text().strip()
              for name in ("db", "tok")}
    assert digest == {"db": hashlib.sha256(CANARY_DB.encode()).hexdigest(),
                      "tok": hashlib.sha256(CANARY_TOKEN.encode()).hexdigest()}
    logs = aws_project.run("logs", aws_project.runs()[0]["id"], "use")
    assert "db is *** and the token is ***" in logs.text
    written = every_byte_under(aws_project.root / ".iacorch")
    for canary in (CANARY_DB, CANARY_TOKEN):
        assert written.count(canary.encode()) == 0
        assert (result.text + logs.text).count(canary) == 0


def test_a_missing_aws_secret_stops_the_run_before_any_stage(aws_project):
    aws_project.write("plans/secrets.yaml", SECRETS_RUNBOOK.replace("prod/db", "prod/nope"))
    result = aws_project.run("apply", "plans/secrets.yaml")
    assert result.code == 64, result.text
    assert "plans/secrets.yaml:4:3: error: secret `db` comes from AWS Secrets Manager secret " \
           "prod/nope, which cannot be read: not found" in result.err
    assert "hint: check the name, the region and the account" in result.err
    assert "Traceback" not in result.text
    assert not (aws_project.root / "db.sha256").exists() and aws_project.runs() == []


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline or proc.poll() is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            pytest.fail(f"no {what} after {timeout:.0f}s; listener log:\n{out}")
        time.sleep(0.1)


def test_listen_runs_the_example_for_an_s3_upload_with_its_key(aws_project, endpoint):
    s3, sqs = client("s3", endpoint), client("sqs", endpoint)
    client("ssm", endpoint).put_parameter(Name="/iacorch/example/deploy-token",
                                          Value=CANARY_TOKEN, Type="SecureString",
                                          Overwrite=True)
    s3.create_bucket(Bucket="artifacts")
    queue = sqs.create_queue(QueueName="artifact-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    s3.put_bucket_notification_configuration(Bucket="artifacts", NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn["Attributes"]["QueueArn"],
                                 "Events": ["s3:ObjectCreated:*"]}]})   # sends s3:TestEvent
    aws_project.write("plans/s3-release.yaml", EXAMPLE.read_text())
    proc = aws_project.start("listen", "plans/s3-release.yaml", "--wait-time", "1")
    key = "releases/web app+v1.2.tar.gz"
    try:
        s3.put_object(Bucket="artifacts", Key="drafts/ignored.tgz", Body=b"x")
        s3.put_object(Bucket="artifacts", Key=key, Body=b"release")
        wait_for(lambda: _finished_runs(aws_project) == 1 and _visible_and_in_flight(
            sqs, queue) == 0, 30, "a finished run and an empty queue", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, log
    (run,) = aws_project.runs()
    assert run["status"] == "succeeded", log
    store = open_store(str(aws_project.root / ".iacorch" / "state.db"))
    try:
        assert store.get_run(run["id"]).vars == {"bucket": "artifacts", "key": key, "size": 7}
        assert store.stage_records(run["id"])["deploy"].outputs == {"deployed": key}
    finally:
        store.close()
    assert "no trigger wants it" in log and f"-> run {run['id']}" in log
    assert "Traceback" not in log and CANARY_TOKEN not in log
    assert every_byte_under(aws_project.root / ".iacorch").count(CANARY_TOKEN.encode()) == 0


def _finished_runs(project) -> int:
    db = project.root / ".iacorch" / "state.db"
    if not db.exists():
        return 0
    store = open_store(str(db))
    try:
        return sum(run.status.value != "running" for run in store.list_runs())
    finally:
        store.close()


def _visible_and_in_flight(sqs, queue: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(value) for value in attributes.values())



def test_listen_says_what_is_wrong_before_listening(aws_project):
    aws_project.write("plans/none.yaml", """
        version: 1
        name: none
        stages:
          s: {kind: deploy, shell: {run: "true"}}
    """)
    nothing = aws_project.run("listen", "plans/none.yaml")
    assert nothing.code == 64 and "no `sqs:` or `s3:` trigger in plans/none.yaml" in nothing.err
    aws_project.write("plans/release.yaml", EXAMPLE.read_text().replace(
        "queue: artifact-events", "queue: no-such-queue"))
    missing = aws_project.run("listen", "plans/release.yaml", timeout=30)
    assert missing.code == 64, missing.text
    assert ("error: plans/release.yaml: trigger `release-uploaded`: queue no-such-queue: "
            "not found") in missing.err
    assert "Traceback" not in nothing.text + missing.text


def test_sigterm_interrupts_the_listeners_runs_and_leaves_them_resumable(aws_project,
                                                                         endpoint):
    sqs = client("sqs", endpoint)
    queue = sqs.create_queue(QueueName="slow-jobs")["QueueUrl"]
    aws_project.write("plans/slow.yaml", """
        version: 1
        name: slow
        stages:
          wait: {kind: deploy, shell: {run: "touch ../started; sleep 60"}}
        triggers:
          - name: jobs
            sqs: {queue: slow-jobs}
    """)
    proc = aws_project.start("listen", "plans/slow.yaml", "--wait-time", "1")
    try:
        sqs.send_message(QueueUrl=queue, MessageBody="go")
        wait_for(lambda: (aws_project.root / "started").exists(), 30, "a started stage", proc)
    finally:
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and time.monotonic() - began < 10, log
    (run,) = aws_project.runs()
    assert run["status"] == "interrupted", log
    assert _visible_and_in_flight(sqs, queue) == 0


def test_back_to_back_messages_each_leave_a_recorded_run(aws_project, endpoint):
    """One store connection in the listener: runs recorded while another process keeps
    opening state.db (as `iacorch runs` would) are all kept."""
    sqs = client("sqs", endpoint)
    queue = sqs.create_queue(QueueName="quick-jobs")["QueueUrl"]
    aws_project.write("plans/quick.yaml", """
        version: 1
        name: quick
        stages:
          s: {kind: deploy, shell: {argv: ["true"]}}
        triggers:
          - name: jobs
            sqs: {queue: quick-jobs}
    """)
    proc = aws_project.start("listen", "plans/quick.yaml", "--wait-time", "1")
    finished: set[str] = set()
    try:
        for n in range(12):
            sqs.send_message(QueueUrl=queue, MessageBody=str(n))
            wait_for(lambda before=frozenset(finished): _finished_ids(aws_project) - before,
                     20, f"run {n + 1}", proc)
            finished |= _finished_ids(aws_project)
    finally:
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=30)
    runs = aws_project.runs()
    assert len(runs) == 12 and {r["status"] for r in runs} == {"succeeded"}, log


def _finished_ids(project) -> set[str]:
    db = project.root / ".iacorch" / "state.db"
    if not db.exists():
        return set()
    store = open_store(str(db))
    try:
        return {run.id for run in store.list_runs() if run.status.value != "running"}
    finally:
        store.close()


def test_serve_listens_too(aws_project, endpoint):
    from tests.integration.server_harness import Served

    s3, sqs = client("s3", endpoint), client("sqs", endpoint)
    client("ssm", endpoint).put_parameter(Name="/iacorch/example/deploy-token",
                                          Value=CANARY_TOKEN, Type="SecureString",
                                          Overwrite=True)
    s3.create_bucket(Bucket="served-artifacts")
    queue = sqs.create_queue(QueueName="served-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    s3.put_bucket_notification_configuration(Bucket="served-artifacts",
                                             NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn["Attributes"]["QueueArn"],
                                 "Events": ["s3:ObjectCreated:*"]}]})
    aws_project.write("plans/s3-release.yaml", EXAMPLE.read_text().replace(
        "bucket: artifacts, queue: artifact-events", "bucket: served-artifacts, "
        "queue: served-events"))
    served = Served(aws_project.root, aws_project.env, "--listen", "plans/s3-release.yaml")
    try:
        s3.put_object(Bucket="served-artifacts", Key="releases/r 1.tgz", Body=b"12345")
        deadline = time.monotonic() + 30
        while _finished_runs(aws_project) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        served.stop()
    (run,) = aws_project.runs()
    assert run["status"] == "succeeded", served.log.read_text()
    store = open_store(str(aws_project.root / ".iacorch" / "state.db"))
    try:
        assert store.get_run(run["id"]).vars == {"bucket": "served-artifacts",
                                                 "key": "releases/r 1.tgz", "size": 5}
    finally:
        store.close()
    assert _visible_and_in_flight(sqs, queue) == 0
