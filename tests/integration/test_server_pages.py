"""The web page in headless Chromium (Debian's, driven by Playwright), and its session rules.

A person signs in with a token, opens a run waiting at a gate, sees the Terraform plan
behind it, approves, and sees the run go on. A failing browser test leaves a screenshot.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server_harness import Served, project_env

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
STACK = (Path(__file__).parent / "fixtures" / "terraform" / "label" / "main.tf").read_text()
RUNBOOK = """
version: 1
name: paged
vars: {label: {default: green}}
stages:
  prep:
    kind: provision
    shell: {run: "echo getting ready"}
  go:
    kind: approval
    needs: [prep]
    approvers: [alice]
    message: "Switch the label to {{ vars.label }}?"
    inputs: {ticket: {type: int}}
  switch:
    kind: deploy
    needs: [go]
    terraform: {dir: ../stack, vars: {label: "{{ vars.label }}"}}
"""


def chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("IACORCH_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{CHROMIUM} is missing, and IACORCH_REQUIRE_TOOLS=1 (CI) requires it")
    pytest.skip(f"{CHROMIUM} is missing")


@pytest.fixture
def served(tmp_path: Path, require_tool) -> Iterator[Served]:
    require_tool("terraform")
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "main.tf").write_text(STACK)
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "paged.yaml").write_text(RUNBOOK)
    server = Served(tmp_path, project_env(tmp_path))
    yield server
    server.stop()


def waiting_run(served: Served) -> str:
    carol = served.token("carol")
    started = httpx.post(f"{served.url}/api/runs", headers={"Authorization": f"Bearer {carol}"},
                         json={"runbook": "plans/paged.yaml"}, timeout=60)
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    deadline = time.monotonic() + 60
    while httpx.get(f"{served.url}/api/runs/{run_id}", headers={
            "Authorization": f"Bearer {carol}"}).json()["run"]["status"] != "waiting_approval":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return run_id


def test_sign_in_see_the_plan_approve_and_see_the_run_go_on(served: Served,
                                                             tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    run_id = waiting_run(served)
    alice = served.token("alice")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page()
        try:
            page.goto(f"{served.url}/")
            expect(page).to_have_url(re.compile(r"/login$"))
            page.fill("#token", alice)
            page.click("button[type=submit]")
            page.click("text=waiting for approval")
            page.click(f"text={run_id}")
            gate = page.locator("#gate-go")
            expect(gate).to_contain_text("Switch the label to green?")
            expect(gate.locator(".plan")).to_contain_text("switch")
            expect(gate.locator(".plan")).to_contain_text("terraform_data.record")
            expect(page.locator("#run-status")).to_have_text("waiting_approval")
            page.fill("input[name='input.ticket']", "4711")
            page.fill("input[name=comment]", "looks right")
            page.click("button.approve")
            expect(page.locator("#run-status")).to_have_text(
                re.compile("running|succeeded"), timeout=10_000)
            expect(page.locator("#run-status")).to_have_text("succeeded", timeout=60_000)
            expect(page.locator("g[data-stage=switch]")).to_have_attribute(
                "data-status", "succeeded")
            expect(page.locator("text=looks right")).to_be_visible()
            expect(page.locator("code", has_text="ticket=4711")).to_be_visible()
            expect(page.locator("section", has_text="Audit trail")).to_contain_text(
                "session cookie (api token")
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            browser.close()


def test_the_session_cookie_is_locked_down_and_posts_need_csrf(served: Served) -> None:
    run_id = waiting_run(served)
    alice = served.token("alice")
    with httpx.Client(base_url=served.url) as browser:
        assert browser.post("/login", data={"token": "iacorch_wrong"}).status_code == 401
        login = browser.post("/login", data={"token": alice})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = browser.get(f"/runs/{run_id}")
        assert page.status_code == 200 and alice not in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        gate_hash = re.search(r'name="gate_hash" value="([^"]+)"',  # type: ignore[union-attr]
                              page.text).group(1)
        for forged in ({}, {"csrf": "not-the-token"}):
            refused = browser.post(f"/runs/{run_id}/gates/go/reject",
                                   data={"gate_hash": gate_hash, **forged})
            assert refused.status_code == 401, refused.text
        api = browser.post(f"/api/runs/{run_id}/gates/go/reject", json={"gate_hash": gate_hash})
        assert api.status_code == 401 and "CSRF" in api.json()["error"]
        assert browser.get(f"/api/runs/{run_id}").json()["gates"][0]["decisions"] == []
        rejected = browser.post(f"/api/runs/{run_id}/gates/go/reject",
                                json={"gate_hash": gate_hash}, headers={"X-CSRF-Token": csrf})
        assert rejected.status_code == 200, rejected.text
        revoke = served.cli("token", "revoke", served.cli("token", "list").stdout.splitlines()[
            -1].split()[0])
        assert revoke.returncode == 0
        assert browser.get(f"/api/runs/{run_id}").status_code == 401, \
            "a session ends with the token it was opened with"
