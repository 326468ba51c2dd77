"""`iacorch serve` over real HTTP: uvicorn in a subprocess on a free loopback port.

Identities (tokens, proxy header), the engine's approval rules through the API, the
security cases of issue 17, and webhook triggers (signature, replays, event data).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.server_harness import Served, project_env

pytestmark = pytest.mark.integration

HOOK_SECRET = "hook-secret-for-tests"

GATED = """
version: 1
name: gated
vars: {ref: {default: main}}
triggers:
  - name: on-push
    webhook: {secret: {env: HOOK_SECRET}}
    vars: {ref: "{{ event.ref }}"}
stages:
  prep:
    kind: provision
    shell: {run: "echo preparing {{ vars.ref }}"}
  go:
    kind: approval
    needs: [prep]
    approvers: [alice, bob, carol]
    allow_self_approval: false
  deploy:
    kind: deploy
    needs: [go]
    shell: {run: "echo deployed {{ vars.ref }}"}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    (root / "plans").mkdir()
    (root / "plans" / "gated.yaml").write_text(GATED)
    (root / "outside.yaml").write_text(GATED)
    server = Served(root, project_env(root, HOOK_SECRET=HOOK_SECRET),
                    "--max-body", "65536", "--trust-proxy-header", "X-Forwarded-User",
                    "--trusted-proxy", "127.0.0.2")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tokens(served: Served) -> dict[str, str]:
    return {user: served.token(user) for user in ("alice", "bob", "carol", "mallory")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start_gated(served: Served, token: str, ref: str = "v1") -> str:
    answer = httpx.post(f"{served.url}/api/runs", headers=bearer(token),
                        json={"runbook": "plans/gated.yaml", "vars": {"ref": ref}})
    assert answer.status_code == 201, answer.text
    return wait_for(served, token, answer.json()["run_id"], "waiting_approval")["run"]["id"]


def wait_for(served: Served, token: str, run_id: str, status: str) -> dict:
    deadline = time.monotonic() + 20
    while True:
        detail = httpx.get(f"{served.url}/api/runs/{run_id}", headers=bearer(token)).json()
        if detail["run"]["status"] == status:
            return detail
        assert time.monotonic() < deadline, detail
        time.sleep(0.05)


def decide(served: Served, token: str, run_id: str, gate_hash: str, verdict: str = "approve",
           **extra: object) -> httpx.Response:
    return httpx.post(f"{served.url}/api/runs/{run_id}/gates/go/{verdict}",
                      headers=bearer(token), json={"gate_hash": gate_hash, **extra})


def test_anonymous_and_bad_tokens_get_401(served: Served, tokens: dict[str, str]) -> None:
    expiring = served.token("dave", "--expires", "1s")
    revoked = served.token("erin")
    listed = served.cli("token", "list").stdout
    erin_id = next(line.split()[0] for line in listed.splitlines() if " erin " in line)
    assert served.cli("token", "revoke", erin_id).returncode == 0
    assert hashlib.sha256(revoked.encode()).hexdigest() not in listed
    assert revoked not in (served.root / ".iacorch" / "state.db").read_bytes().decode(
        "latin-1"), "only a hash of a token is stored"
    time.sleep(1.1)
    for headers in ({}, bearer("iacorch_not-a-token"), bearer(expiring), bearer(revoked),
                    {"Authorization": "Basic YWxpY2U6eA=="}):
        for method, path in (("GET", "/api/runs"), ("POST", "/api/runs")):
            answer = httpx.request(method, f"{served.url}{path}", headers=headers,
                                   json={"runbook": "plans/gated.yaml"})
            assert answer.status_code == 401, (headers, answer.text)
            assert "error" in answer.json()
    assert httpx.get(f"{served.url}/api/runs", headers=bearer(tokens["alice"])).status_code == 200


def test_a_gate_is_decided_by_the_engine_rules_and_audited(served: Served,
                                                           tokens: dict[str, str]) -> None:
    run_id = start_gated(served, tokens["carol"])
    gate = wait_for(served, tokens["carol"], run_id, "waiting_approval")["gates"][0]
    assert gate["waiting"] and gate["state"] == "pending"
    self_approval = decide(served, tokens["carol"], run_id, gate["gate_hash"])
    assert self_approval.status_code == 403 and "cannot approve" in self_approval.json()["error"]
    stranger = decide(served, tokens["mallory"], run_id, gate["gate_hash"])
    assert stranger.status_code == 403 and "not an approver" in stranger.json()["error"]
    stale = decide(served, tokens["alice"], run_id, "0" * 64)
    assert stale.status_code == 409 and "you were shown" in stale.json()["error"]

    approved = decide(served, tokens["alice"], run_id, gate["gate_hash"], comment="lgtm",
                      resume=True)
    assert approved.status_code == 200, approved.text
    assert approved.json()["gate_state"] == "approved"
    done = wait_for(served, tokens["alice"], run_id, "succeeded")
    assert [s["status"] for s in done["stages"]] == ["succeeded"] * 3
    log = httpx.get(f"{served.url}/api/runs/{run_id}/logs/deploy", headers=bearer(tokens["bob"]))
    assert "deployed v1" in log.text

    audit = served.cli("audit", "verify")
    assert audit.returncode == 0, audit.stderr
    decision = [e for e in audit_entries(served) if e["kind"] == "approval_approve"
                and e["run_id"] == run_id]
    assert len(decision) == 1 and decision[0]["actor"] == "alice"
    assert decision[0]["data"]["via"].startswith("api token tok-")
    assert decision[0]["data"]["comment"] == "lgtm"


def test_a_stage_log_streams_as_server_sent_events(served: Served,
                                                  tokens: dict[str, str]) -> None:
    run_id = start_gated(served, tokens["carol"], ref="streamed")
    with httpx.stream("GET", f"{served.url}/api/runs/{run_id}/logs/prep/stream",
                      headers=bearer(tokens["bob"])) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    assert "data: " in text and "preparing streamed" in text
    assert text.rstrip().endswith("event: end\ndata:"), "the stream ends with the run's wait"
    missing = httpx.get(f"{served.url}/api/runs/{run_id}/logs/..%2F..%2Fstate.db/stream",
                        headers=bearer(tokens["bob"]))
    assert missing.status_code in (400, 404)


def test_two_approvals_at_once_have_one_winner(served: Served, tokens: dict[str, str]) -> None:
    run_id = start_gated(served, tokens["carol"], ref="race")
    gate_hash = wait_for(served, tokens["carol"], run_id, "waiting_approval")["gates"][0][
        "gate_hash"]
    barrier = threading.Barrier(2)
    codes: list[int] = []

    def approve(user: str, verdict: str) -> None:
        barrier.wait()
        codes.append(decide(served, tokens[user], run_id, gate_hash, verdict).status_code)

    threads = [threading.Thread(target=approve, args=("alice", "approve")),
               threading.Thread(target=approve, args=("bob", "reject"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200, 409], codes
    detail = httpx.get(f"{served.url}/api/runs/{run_id}", headers=bearer(tokens["bob"])).json()
    assert len(detail["gates"][0]["decisions"]) == 1


def test_runbook_paths_stay_inside_the_project(served: Served, tokens: dict[str, str]) -> None:
    for runbook in ("../outside.yaml", "plans/../../outside.yaml", "/etc/passwd",
                    str(served.root / "outside.yaml"), "plans/missing.yaml", ".git/config"):
        answer = httpx.post(f"{served.url}/api/runs", headers=bearer(tokens["alice"]),
                            json={"runbook": runbook})
        assert answer.status_code == 400, (runbook, answer.text)
    runs = httpx.get(f"{served.url}/api/runs", headers=bearer(tokens["alice"])).json()
    assert all(run["runbook"] == "gated" for run in runs)


def test_oversized_bodies_are_refused(served: Served, tokens: dict[str, str]) -> None:
    big = {"runbook": "plans/gated.yaml", "vars": {"ref": "x" * 70_000}}
    answer = httpx.post(f"{served.url}/api/runs", headers=bearer(tokens["alice"]), json=big)
    assert answer.status_code == 413

    def chunks() -> Iterator[bytes]:   # no Content-Length: counted as it streams
        yield json.dumps(big).encode()

    streamed = httpx.post(f"{served.url}/hooks/plans/gated.yaml/on-push", content=chunks())
    assert streamed.status_code == 413


def test_a_proxy_header_counts_only_from_the_trusted_proxy(served: Served) -> None:
    header = {"X-Forwarded-User": "alice"}
    assert httpx.get(f"{served.url}/api/runs", headers=header).status_code == 401
    trusted = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with trusted:
        assert trusted.get(f"{served.url}/api/runs", headers=header).status_code == 200
        assert trusted.get(f"{served.url}/api/runs").status_code == 401
        # a POST from a proxied browser needs the session's CSRF token as well
        posted = trusted.post(f"{served.url}/api/runs", headers=header,
                              json={"runbook": "plans/gated.yaml"})
        assert posted.status_code == 401


def sign(body: bytes, secret: str = HOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_a_delivery_sent_ten_times_starts_one_run(served: Served,
                                                  tokens: dict[str, str]) -> None:
    body = json.dumps({"ref": "refs/heads/main {{ 7 * 7 }}"}).encode()
    headers = {"X-Hub-Signature-256": sign(body), "X-GitHub-Delivery": "delivery-1",
               "Content-Type": "application/json"}
    url = f"{served.url}/hooks/plans/gated.yaml/on-push"
    answers = [httpx.post(url, content=body, headers=headers) for _ in range(10)]
    assert [a.status_code for a in answers] == [202] + [200] * 9, [a.text for a in answers]
    run_ids = {a.json()["run_id"] for a in answers}
    assert len(run_ids) == 1
    started = [r for r in httpx.get(f"{served.url}/api/runs?limit=1000",
                                    headers=bearer(tokens["alice"])).json()
               if r["user"] == "webhook:on-push"]
    assert [r["id"] for r in started] == list(run_ids)
    run_id = run_ids.pop()
    wait_for(served, tokens["alice"], run_id, "waiting_approval")
    log = httpx.get(f"{served.url}/api/runs/{run_id}/logs/prep", headers=bearer(tokens["alice"]))
    assert "preparing refs/heads/main {{ 7 * 7 }}" in log.text, "event fields are data"
    assert "main 49" not in log.text, "a template inside an event field is never rendered"


def test_a_forged_or_unsigned_delivery_starts_nothing(served: Served,
                                                      tokens: dict[str, str]) -> None:
    body = json.dumps({"ref": "evil"}).encode()
    url = f"{served.url}/hooks/plans/gated.yaml/on-push"
    before = len(httpx.get(f"{served.url}/api/runs?limit=1000",
                           headers=bearer(tokens["alice"])).json())
    for signature in (sign(body, "wrong-secret"), sign(body + b" "), "", "sha256=",
                      sign(body).replace("sha256=", "sha1=")):
        answer = httpx.post(url, content=body, headers={"X-Hub-Signature-256": signature,
                                                         "X-GitHub-Delivery": "forged-1"})
        assert answer.status_code == 401, (signature, answer.text)
    unknown = httpx.post(f"{served.url}/hooks/plans/gated.yaml/no-such", content=body,
                         headers={"X-Hub-Signature-256": sign(body),
                                  "X-GitHub-Delivery": "forged-2"})
    assert unknown.status_code == 400
    after = len(httpx.get(f"{served.url}/api/runs?limit=1000",
                          headers=bearer(tokens["alice"])).json())
    assert after == before


def test_the_openapi_document_lists_the_api(served: Served) -> None:
    paths = httpx.get(f"{served.url}/openapi.json").json()["paths"]
    for path in ("/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/resume",
                 "/api/runs/{run_id}/gates/{gate}/{verdict}", "/api/runs/{run_id}/logs/{stage}",
                 "/api/runs/{run_id}/logs/{stage}/stream", "/api/health"):
        assert path in paths


def audit_entries(served: Served) -> list[dict]:
    import sqlite3

    with sqlite3.connect(served.root / ".iacorch" / "state.db") as db:
        rows = db.execute("SELECT kind, run_id, actor, data FROM audit ORDER BY seq").fetchall()
    return [{"kind": k, "run_id": r, "actor": a, "data": json.loads(d)} for k, r, a, d in rows]



def test_the_server_fires_the_schedules_it_was_given(tmp_path) -> None:
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "tick.yaml").write_text(
        "version: 1\nname: tick\nschedules:\n  often: {cron: '*/2 * * * * *', action: plan}\n"
        "stages:\n  look: {kind: verify, shell: {run: 'echo looking'}}\n")
    server = Served(tmp_path, project_env(tmp_path), "--schedule", "plans/tick.yaml")
    try:
        token = server.token("alice")
        deadline = time.monotonic() + 30
        while True:
            runs = httpx.get(f"{server.url}/api/runs", headers=bearer(token)).json()
            if any(r["runbook"] == "tick" and r["status"] == "succeeded" for r in runs):
                break
            assert time.monotonic() < deadline, (runs, server.log.read_text())
            time.sleep(0.2)
        assert {r["operation"] for r in runs} == {"plan"}
    finally:
        server.stop()
