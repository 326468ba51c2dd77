"""Shell and HTTP drivers against real bash and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from iacorch.drivers import execute
from iacorch.drivers.base import StageContext
from iacorch.model.masking import Masker
from iacorch.model.results import StageSpec
from iacorch.model.status import Operation, StageStatus
from iacorch.process import CancelToken, ProcessRunner

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runner() -> Iterator[ProcessRunner]:
    runner = ProcessRunner(sigint_grace=0.3, sigterm_grace=0.3)
    yield runner
    runner.close()


def stage(tmp_path: Path, runner: ProcessRunner, driver: str,
          action: Mapping[str, Any], *, secrets: Mapping[str, str] | None = None,
          timeout: float | None = None, lines: list[str] | None = None,
          cancel: CancelToken | None = None) -> StageContext:
    secrets = secrets or {}
    (tmp_path / "book").mkdir(exist_ok=True)
    spec = StageSpec(run_id="run-7", stage_id="seed", driver=driver,
                     operation=Operation.APPLY, action=action, root_dir=str(tmp_path / "book"),
                     work_dir=str(tmp_path / "runs" / "seed"), state_dir=str(tmp_path),
                     attempt=1, timeout=timeout, secret_values=tuple(secrets.values()),
                     secret_env=dict(secrets))
    seen = lines if lines is not None else []
    return StageContext(spec=spec, process=runner, masker=Masker(secrets.values()),
                        cancel=cancel or CancelToken(), on_line=seen.append)


def test_a_shell_stage_writes_outputs_through_iacorch_output(tmp_path, runner):
    lines: list[str] = []
    script = """
        echo "stage $IACORCH_STAGE of $IACORCH_RUN_ID, attempt $IACORCH_ATTEMPT, token $TOKEN"
        echo '{"url": "http://10.0.0.5", "replicas": 2}' >> "$IACORCH_OUTPUT"
        printf '{"replicas": %d, "ready": true}\\n' 3 >> "$IACORCH_OUTPUT"
    """
    ctx = stage(tmp_path, runner, "shell", {"run": script},
                secrets={"TOKEN": "tok-secret-1"}, lines=lines)
    result = execute(ctx)
    assert result.status is StageStatus.SUCCEEDED, result.error
    assert result.outputs == {"url": "http://10.0.0.5", "replicas": 3, "ready": True}
    assert lines == ["stage seed of run-7, attempt 1, token ***"]


def test_invalid_json_output_fails_naming_the_line(tmp_path, runner):
    script = """echo '{"a": 1}' >> "$IACORCH_OUTPUT"; echo 'url=http://x' >> "$IACORCH_OUTPUT" """
    result = execute(stage(tmp_path, runner, "shell", {"run": script}))
    assert result.status is StageStatus.FAILED
    assert result.error is not None
    assert result.error.endswith("outputs.jsonl: line 2: invalid JSON: "
                                 "Expecting value (column 1)")


def test_pipefail_and_errexit_fail_the_script(tmp_path, runner):
    script = "echo before; false | cat; echo never"
    result = execute(stage(tmp_path, runner, "shell", {"run": script}))
    assert result.status is StageStatus.FAILED and result.error == "exited with code 1"
    assert result.output_tail == ("before",)


def test_argv_runs_in_cwd_relative_to_the_runbook(tmp_path, runner):
    (tmp_path / "book" / "app").mkdir(parents=True)
    lines: list[str] = []
    ctx = stage(tmp_path, runner, "shell",
                {"argv": ["pwd"], "cwd": "app", "env": {"UNUSED": 1}}, lines=lines)
    assert execute(ctx).ok
    assert lines == [str(tmp_path / "book" / "app")]


def test_a_slow_script_times_out(tmp_path, runner):
    ctx = stage(tmp_path, runner, "shell", {"run": "echo started; sleep 10"},
                timeout=0.5)
    result = execute(ctx)
    assert result.status is StageStatus.FAILED and result.error == "timed out after 0.5s"
    assert result.output_tail == ("started",)


class Service(BaseHTTPRequestHandler):
    """/flaky answers 500 then 200; /slow takes 0.5s; POST echoes; anything else says ok."""

    hits: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        count = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/slow":
            time.sleep(0.5)
            self._send(200, "text/plain", b"late")
        elif self.path == "/flaky" and count == 1:
            self._send(500, "text/plain", b"warming up")
        elif self.path == "/flaky":
            self._send(200, "application/json", b'{"status": "up", "version": "1.2"}')
        else:
            self._send(200, "text/plain", b"ok")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        echo = {"received": json.loads(body), "type": self.headers["Content-Type"],
                "auth": self.headers.get("Authorization")}
        self._send(201, "application/json", json.dumps(echo).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client gave up
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def service(monkeypatch) -> Iterator[str]:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    Service.hits = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
    server.daemon_threads = True      # do not wait for /slow when closing
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_retries_a_500_until_a_200_meets_the_expectations(tmp_path, runner, service):
    lines: list[str] = []
    action = {"url": f"{service}/flaky", "expect": {"status": 200, "json": {"status": "up"}},
              "until": {"attempts": 3, "interval": "50ms"}}
    result = execute(stage(tmp_path, runner, "http", action, lines=lines))
    assert result.status is StageStatus.SUCCEEDED, result.error
    assert result.outputs["status"] == 200
    assert result.outputs["json"] == {"status": "up", "version": "1.2"}
    assert result.outputs["headers"]["content-type"] == "application/json"
    assert result.details == {"attempts": 2}
    assert "-> 500" in lines[0] and "status 500, expected 200" in lines[0]
    assert lines[1].endswith(": ok")


def test_http_posts_json_and_masks_secrets_in_its_log(tmp_path, runner, service):
    lines: list[str] = []
    action = {"url": f"{service}/deploy", "method": "POST", "body": {"version": "1.2"},
              "headers": {"Authorization": "Bearer tok-abcdef"},
              "expect": {"status": [200, 201], "json": {"received": {"version": "1.2"}}}}
    result = execute(stage(tmp_path, runner, "http", action, lines=lines,
                           secrets={"API_TOKEN": "tok-abcdef"}))
    assert result.ok, result.error
    assert result.outputs["json"]["type"] == "application/json"
    assert result.sensitive_outputs == frozenset({"json", "body"})   # the echo holds the token
    assert "tok-abcdef" not in "".join(lines)


def test_http_fails_naming_expected_and_received(tmp_path, runner, service):
    action = {"url": f"{service}/health", "expect": {"body_contains": "healthy"},
              "until": {"attempts": 2, "interval": 0}}
    result = execute(stage(tmp_path, runner, "http", action))
    assert result.status is StageStatus.FAILED
    assert result.error == (f"GET {service}/health: body does not contain 'healthy'; "
                            "it starts 'ok' (after 2 attempts)")


def test_connection_refused_counts_as_a_failed_attempt(tmp_path, runner):
    with socket.socket() as probe:           # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    action = {"url": f"http://127.0.0.1:{port}/", "until": {"attempts": 2, "interval": 0},
              "timeout": 2}
    result = execute(stage(tmp_path, runner, "http", action))
    assert result.status is StageStatus.FAILED
    assert result.error == f"GET http://127.0.0.1:{port}/: no response: connection refused " \
                           "(after 2 attempts)"
    assert len(result.output_tail) == 2


def test_an_interrupt_wakes_the_wait_between_attempts(tmp_path, runner, service):
    cancel = CancelToken()
    action = {"url": f"{service}/health", "expect": {"status": 204},
              "until": {"attempts": 10, "interval": 60}}
    threading.Timer(0.2, cancel.interrupt).start()
    started = time.monotonic()
    result = execute(stage(tmp_path, runner, "http", action, cancel=cancel))
    assert result.status is StageStatus.INTERRUPTED
    assert time.monotonic() - started < 5


def test_a_slow_response_times_out_as_a_failed_attempt(tmp_path, runner, service):
    action = {"url": f"{service}/slow", "timeout": "100ms"}
    result = execute(stage(tmp_path, runner, "http", action))
    assert result.status is StageStatus.FAILED
    assert result.error == f"GET {service}/slow: no response: timed out (after 1 attempt)"
