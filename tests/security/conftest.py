"""Helpers for the security suite: canary secrets and their encodings, a local HTTP
receiver, and the processes of a project's run as /proc shows them."""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# Characters that URL encoding, base64 and Go's HTML-safe JSON change: `&`, `/`, `+`, `=`,
# `<`, `>` and a space. A quote, a backslash or a non-ASCII letter would also change under
# plain JSON escaping: QUOTED_CANARY has them, for the test of that case on its own.
ENV_CANARY = "cAnArY-env-7f3a9c2e&q=1/+x y"
FILE_CANARY = "cAnArY-file-b64d09e8<y>z+/="
QUOTED_CANARY = 'cAnArY-quoted-"q"\\é'


def encodings(secret: str) -> dict[str, bytes]:
    """The secret as it could show up in bytes someone can read."""
    raw = secret.encode()
    found = {"raw": raw, "url": quote(secret, safe="").encode(),
             "url+": quote_plus(secret).encode(),
             "urlencode": quote(secret).encode(),     # Jinja's urlencode filter keeps `/`
             "upper": secret.upper().encode(), "lower": secret.lower().encode(),
             "hex": raw.hex().encode(), "shell": shlex.quote(secret).encode(),
             "json": json.dumps(secret, ensure_ascii=False)[1:-1].encode(),
             "json-ascii": json.dumps(secret, ensure_ascii=True)[1:-1].encode(),
             "json-html": json.dumps(secret, ensure_ascii=False)[1:-1].replace(
                 "<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode(),
             "unicode-escape": secret.encode("unicode_escape")}
    # base64 inside a longer text: one form per alignment, without the edge characters
    # that depend on the neighbouring bytes
    for shift in range(3):
        for name, encode in (("base64", base64.b64encode),
                             ("base64url", base64.urlsafe_b64encode)):
            text = encode(b"\0" * shift + raw)
            start = 4 * ((shift + 2) // 3) if shift else 0
            end = len(text) - (4 if (shift + len(raw)) % 3 else 0)
            found[f"{name}@{shift}"] = text[start:end]
    return found


NEEDLES = {f"{which} {kind}": needle
           for which, secret in (("env canary", ENV_CANARY), ("file canary", FILE_CANARY),
                                 ("quoted canary", QUOTED_CANARY))
           for kind, needle in encodings(secret).items()}


def canary_hits(data: bytes) -> list[str]:
    """Which canary forms occur in `data` (empty: none)."""
    return [name for name, needle in NEEDLES.items() if needle in data]


@dataclass(frozen=True)
class Canaries:
    """The two canary secrets, and a search for them in any bytes."""

    env: str = ENV_CANARY
    file: str = FILE_CANARY
    quoted: str = QUOTED_CANARY

    @staticmethod
    def hits(data: bytes) -> list[str]:
        return canary_hits(data)

    @property
    def needles(self) -> dict[str, bytes]:
        return dict(NEEDLES)


@pytest.fixture
def canaries() -> Canaries:
    return Canaries()


@pytest.fixture
def watch_argv():
    """`watch_argv(project, *args)`: run the CLI reading every child's argv meanwhile."""
    return run_watching_argv


@pytest.fixture(scope="session")
def long_tests(pytestconfig: pytest.Config) -> bool:
    return bool(pytestconfig.getoption("--long", default=False)) or \
        os.environ.get("IACORCH_LONG_TESTS") == "1"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 that answers 200 {"ok": true} and keeps every request."""
    got: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            got.append(Received(self.command, self.path, dict(self.headers.items()),
                                self.rfile.read(length)))
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", got)
    finally:
        server.shutdown()
        server.server_close()


def project_pids(project) -> list[int]:
    """Every process of this project's runs, found by the IACORCH_HOME in its environment."""
    marker = f"IACORCH_HOME={project.env['IACORCH_HOME']}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@dataclass
class ArgvWatch:
    """Polls /proc while a command runs: every argv of the project's processes."""

    seen: dict[int, bytes] = field(default_factory=dict)

    def poll(self, project) -> None:
        for pid in project_pids(project):
            try:
                argv = (Path("/proc") / str(pid) / "cmdline").read_bytes()
            except OSError:
                continue
            self.seen.setdefault(pid, argv)
            if argv != self.seen[pid]:     # after an exec: keep both
                self.seen[-pid - len(self.seen)] = argv

    def hits(self) -> dict[str, list[str]]:
        return {argv.replace(b"\0", b" ").decode(errors="replace")[:200]: canary_hits(argv)
                for argv in self.seen.values() if canary_hits(argv)}


def run_watching_argv(project, *args: str, env: dict[str, str] | None = None,
                      timeout: float = 180) -> tuple[int, str, ArgvWatch]:
    """Run the CLI, reading every child's /proc/<pid>/cmdline every few milliseconds."""
    log = project.root / f"watched-{time.monotonic_ns()}.out"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(project.argv(*args), cwd=project.root,
                                env={**project.env, **(env or {})}, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)
    watch = ArgvWatch()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        watch.poll(project)
        time.sleep(0.005)
    if proc.poll() is None:
        proc.kill()
    code = proc.wait(timeout=30)
    output = log.read_text(errors="replace")
    log.unlink()
    return code, output, watch


def cli_in_process(*args: str) -> tuple[int, str]:
    """The CLI's main() in this process: its error boundary and exit codes, without the
    cost of starting Python (for checks that run hundreds of times)."""
    import contextlib
    import io

    from iacorch.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(list(args))
        except SystemExit as done:
            return (done.code if isinstance(done.code, int) else 1), out.getvalue()
    return 0, out.getvalue()


@pytest.fixture
def cli_main(monkeypatch, tmp_path):
    """`cli_main(*args)` -> (exit code, output); crash logs go to the test's tmp dir."""
    monkeypatch.setenv("IACORCH_HOME", str(tmp_path / ".iacorch-in-process"))
    return cli_in_process
