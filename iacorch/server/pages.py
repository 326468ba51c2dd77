"""The web page: server-rendered Jinja2 pages over the same operations as the API.

A browser signs in with an API token once and then carries a signed session cookie
(HttpOnly, SameSite=Strict); every form POST carries the session's CSRF token.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from iacorch.engine.approvals import Decision
from iacorch.engine.operations import decide_gate, plan_of_run, runs_at_gates
from iacorch.errors import AuthenticationError, IacorchError
from iacorch.model.plan import Plan
from iacorch.model.status import Choice
from iacorch.server.api import run_detail, run_summary
from iacorch.server.app import server_of
from iacorch.server.auth import SESSION_COOKIE, SESSION_SECONDS, Identity
from iacorch.server.graph import layout
from iacorch.server.runs import log_files, resume

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _identity(request: Request, form_csrf: str | None = None) -> Identity:
    client = request.client.host if request.client else None
    return server_of(request).auth.identify(request.method, client, request.headers,
                                            request.cookies, form_csrf)


def _page(request: Request, name: str, who: Identity, **context: Any) -> Response:
    session = None
    if who.csrf is None:   # a proxy-proven user: give the browser a session for its POSTs
        session, csrf = server_of(request).auth.new_session(who.user, who.via, None)
        who = Identity(who.user, who.via, csrf)
    response = templates.TemplateResponse(request, name, {"who": who, **context})
    if session is not None:
        _set_session(request, response, session)
    return response


def _set_session(request: Request, response: Response, value: str) -> None:
    response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_SECONDS, path="/",
                        httponly=True, samesite="strict",
                        secure=server_of(request).settings.secure_cookies
                        or request.url.scheme == "https")


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"who": None, "error": None})


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    try:
        session = server_of(request).auth.login_with_token(str(form.get("token", "")))
    except AuthenticationError as exc:
        return templates.TemplateResponse(request, "login.html",
                                          {"who": None, "error": exc.message}, status_code=401)
    response = RedirectResponse("/", status_code=303)
    _set_session(request, response, session)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    _identity(request, str(form.get("csrf", "")))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request, waiting: bool = False) -> Response:
    try:
        who = _identity(request)
    except AuthenticationError:
        return RedirectResponse("/login", status_code=303)
    store = server_of(request).store
    records = runs_at_gates(store, 100) if waiting else store.list_runs(limit=100)
    return _page(request, "runs.html", who, runs=[run_summary(r) for r in records],
                 waiting=waiting)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: str, request: Request, error: str | None = None) -> Response:
    try:
        who = _identity(request)
    except AuthenticationError:
        return RedirectResponse("/login", status_code=303)
    server = server_of(request)
    detail = run_detail(server.store, run_id)
    run = server.store.get_run(detail["run"]["id"])
    statuses = {stage["id"]: stage["status"] for stage in detail["stages"]}
    plan: Plan | None = None
    plan_error: str | None = None
    try:
        plan = plan_of_run(run)
    except IacorchError as exc:   # the runbook changed or moved: show what was recorded
        plan_error = exc.message
    graph = layout(plan, statuses) if plan is not None else None
    for gate in detail["gates"]:
        stage = plan.stages.get(gate["id"]) if plan is not None else None
        gate["inputs"] = dict(stage.approval.inputs) if stage and stage.approval else {}
    logs = {stage["id"]: _tail(log_files(server, run.id, stage["id"]),
                               f"/api/runs/{run.id}/logs/{stage['id']}")
            for stage in detail["stages"]}
    audit = server.store.audit_entries(run_id=run.id)
    return _page(request, "run.html", who, detail=detail, graph=graph, plan_error=plan_error,
                 logs=logs, audit=audit, error=error)


def _tail(paths: list[Path], whole: str, limit: int = 64 * 1024) -> str:
    """The end of a stage's logs, at most `limit` bytes; `whole` serves all of them."""
    text = b"".join(path.read_bytes() for path in paths)
    shown = text[-limit:].decode("utf-8", errors="replace")
    return f"(the log is longer: {whole} has all of it)\n{shown}" if len(text) > limit else shown


@router.post("/runs/{run_id}/gates/{gate}/{verdict}")
async def decide_page(run_id: str, gate: str, verdict: str, request: Request) -> Response:
    form = await request.form()
    who = _identity(request, str(form.get("csrf", "")))
    if verdict not in ("approve", "reject"):
        return RedirectResponse(f"/runs/{run_id}", status_code=303)
    inputs = {key.removeprefix("input."): str(value) for key, value in form.items()
              if key.startswith("input.") and str(value) != ""}
    server = server_of(request)
    try:
        run = decide_gate(server.store, run_id, gate, Decision(
            who.user, Choice(verdict), str(form.get("comment", "")) or None, inputs, via=who.via,
            seen_gate_hash=str(form.get("gate_hash", ""))), time.time())
        state = next(g["state"] for g in run_detail(server.store, run.id)["gates"]
                     if g["id"] == gate)
        if state != "pending":
            resume(server, run.id, who)
    except IacorchError as exc:
        from urllib.parse import quote

        return RedirectResponse(f"/runs/{run_id}?error={quote(exc.message)}", status_code=303)
    return RedirectResponse(f"/runs/{run.id}", status_code=303)
