"""Notifications through the real CLI: a webhook on 127.0.0.1 gets drift once, masked; a
failing webhook is retried and reported but the run still succeeds; a command channel
gets the event on stdin."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SECRET = "notify-tok-41d9e2"


class Receiver:
    """An HTTP server in this test process that records every POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, body))
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def bodies(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(body) for path, body in self.posts if path.startswith(prefix)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found.thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


PLAYBOOK = """
- name: Render the page
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the page
      ansible.builtin.copy:
        dest: "{{ page_file }}"
        content: "token={{ token }}\\n"
        mode: "0600"
"""

DRIFT_RUNBOOK = """
version: 1
name: notified
secrets:
  token: {env: NOTIFY_TOKEN}
stages:
  page:
    kind: configure
    ansible:
      playbook: page.yml
      inventory: [localhost]
      extra_vars: {page_file: "{{ runbook.dir }}/page.txt", token: "{{ secrets.token }}"}
notify:
  ops:
    # Slack-style: the URL path is itself a secret
    webhook: "URL/hook/{{ secrets.token }}"
    on: [drift]
"""


def test_drift_reaches_the_webhook_once_with_no_secret(project, receiver, require_tool):
    require_tool("ansible-playbook")
    project.env["NOTIFY_TOKEN"] = SECRET
    project.write("page.yml", PLAYBOOK)
    project.write("notified.yaml", DRIFT_RUNBOOK.replace("URL", receiver.url))
    assert project.run("apply", "notified.yaml", "-q").code == 0
    (project.root / "page.txt").write_text(f"token={SECRET} and a hand edit\n")

    first = project.run("drift", "notified.yaml", "-q")
    assert first.code == 2, first.text
    assert "notified ops of drift" in first.err
    [(path, body)] = receiver.posts
    assert path == f"/hook/{SECRET}"                   # delivered where the runbook says ...
    assert SECRET.encode() not in body                 # ... but never in what is said
    assert SECRET not in first.text
    event = json.loads(body)
    assert event["event"] == "drift" and event["runbook"] == "notified"
    assert event["workspace"] == "default" and event["new"] == ["page"]
    assert event["run"] == project.runs()[0]["id"]
    assert event["text"].startswith(":warning: drift in `notified` (default): *page*")
    [stage] = event["stages"]
    assert stage["status"] == "drifted" and stage["findings"][0]["task"] == "Write the page"

    again = project.run("drift", "notified.yaml", "-q")
    assert again.code == 2 and len(receiver.posts) == 1, "unchanged drift is told only once"


SHELL_RUNBOOK = """
version: 1
name: told
stages:
  hello: {kind: provision, shell: {run: "echo hello"}}
notify:
  broken: {webhook: "URL/fail", on: [succeeded]}
  script: {command: ["sh", "-c", "cat > event.json"], on: [succeeded, failed]}
"""


def test_a_failing_webhook_does_not_fail_the_run(project, receiver):
    project.write("told.yaml", SHELL_RUNBOOK.replace("URL", receiver.url))
    result = project.run("apply", "told.yaml", "-q")
    assert result.code == 0, result.text
    assert "notify broken: delivery of succeeded FAILED after 3 attempt(s): HTTP 500" \
        in result.err
    assert len(receiver.bodies("/fail")) == 3               # retried with backoff
    event = json.loads((project.root / "event.json").read_text())
    assert event["event"] == "succeeded" and event["run"] == project.runs()[0]["id"]
    assert project.show(event["run"])["run"]["status"] == "succeeded"
