#!/usr/bin/env python3
"""One service of the DR lab: a tiny HTTP server over a directory of small files.

Everything it answers is read from its directory on every request, so the
runbook changes its behaviour by writing files, as it would on a real host:

  data.json   the service's data, served at /
  role        `primary` or `standby` (the promote playbook rewrites it)
  fenced      present: the service was fenced off, /health answers 503
  sick        present: a rehearsed fault (`scripts/dr/lab break`), /health answers 500

  python3 scripts/dr/service.py --name primary --port 8181 --dir .iacorch/dr-lab/primary
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _read(path: Path, default: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return default


def health(directory: Path, name: str) -> tuple[int, str]:
    """The /health answer: one line a person and an `http:` stage can both read."""
    role = _read(directory / "role", "unknown")
    if (directory / "fenced").exists():
        return 503, f"fenced name={name} role={role}\n"
    if (directory / "sick").exists():
        return 500, f"sick name={name} role={role}\n"
    return 200, f"ok name={name} role={role}\n"


def document(directory: Path, name: str, port: int) -> dict[str, object]:
    """The / answer: who answered, in which role, with which data."""
    raw = _read(directory / "data.json", "null")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        data = {"error": "data.json is not valid JSON"}
    return {"name": name, "port": port, "role": _read(directory / "role", "unknown"),
            "fenced": (directory / "fenced").exists(), "data": data}


def handler_for(directory: Path, name: str, port: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"dr-{name}"

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            if self.path.rstrip("/") == "/health":
                status, body = health(directory, name)
                self._send(status, body, "text/plain; charset=utf-8")
            elif self.path in ("/", "/index.json"):
                status, _ = health(directory, name)
                payload = json.dumps(document(directory, name, port), indent=2) + "\n"
                self._send(200 if status == 200 else status, payload, "application/json")
            else:
                self._send(404, "not found\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: str, content_type: str) -> None:
            encoded = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            print(f"{name}: {self.address_string()} {format % args}", flush=True)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port),
                                 handler_for(args.dir, args.name, args.port))
    print(f"{args.name}: serving {args.dir} on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
