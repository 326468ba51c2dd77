#!/usr/bin/env python3
"""The DR lab's traffic router: a tiny reverse proxy that follows the routing record.

Normally it sends every request to its normal backend (the primary). While the
routing record exists (a JSON file that the Terraform stack `stacks/dr-routing`
writes), it sends them where the record says instead. The record is read on
every request, so switching traffic is a file write and needs no restart.

  GET /_route   where traffic goes now and why (never forwarded)
  anything else forwarded; the answer carries `X-DR-Backend: name@port`

  python3 scripts/dr/router.py --port 8180 --record .iacorch/dr-lab/routing.json \
      --normal-name primary --normal-port 8181
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def route(record: Path, normal_name: str, normal_port: int) -> dict[str, Any]:
    """Where traffic goes: the routing record when present and valid, else the normal backend."""
    try:
        text = record.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"name": normal_name, "port": normal_port, "source": "normal backend"}
    try:
        found = json.loads(text)
        return {"name": str(found["active"]), "port": int(found["port"]),
                "source": f"routing record {record}"}
    except (ValueError, KeyError, TypeError) as exc:
        # A broken record must not silently send traffic somewhere: answer 503 and say why.
        return {"name": None, "port": None, "source": f"unreadable routing record: {exc}"}


def handler_for(record: Path, normal_name: str, normal_port: int,
                timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dr-router"

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            current = route(record, normal_name, normal_port)
            if self.path == "/_route":
                self._send(200, json.dumps(current) + "\n", "application/json", None)
                return
            if current["port"] is None:
                self._send(503, f"no route: {current['source']}\n", "text/plain", None)
                return
            backend = f"{current['name']}@{current['port']}"
            url = f"http://127.0.0.1:{current['port']}{self.path}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310
                    self._send(answer.status, answer.read(),
                               answer.headers.get("Content-Type", "text/plain"), backend)
            except urllib.error.HTTPError as exc:
                self._send(exc.code, exc.read(), exc.headers.get("Content-Type", "text/plain"),
                           backend)
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                self._send(502, f"no answer from {backend}: {reason}\n", "text/plain", backend)

        def _send(self, status: int, body: str | bytes, content_type: str,
                  backend: str | None) -> None:
            encoded = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(encoded)))
            if backend:
                self.send_header("X-DR-Backend", backend)
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            print(f"router: {self.address_string()} {format % args}", flush=True)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--normal-name", default="primary")
    parser.add_argument("--normal-port", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds to wait for a backend (default 3)")
    args = parser.parse_args()
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(
        args.record, args.normal_name, args.normal_port, args.timeout))
    print(f"router: http://127.0.0.1:{args.port} -> record {args.record}, normally "
          f"{args.normal_name}@{args.normal_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
