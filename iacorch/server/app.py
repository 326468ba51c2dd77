"""The FastAPI application: its state, error mapping, body limit and lifespan."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from iacorch import __version__
from iacorch.engine.launch import open_for_runs
from iacorch.engine.launcher import Launcher
from iacorch.errors import (
    ApprovalError,
    AuthenticationError,
    GateConflictError,
    IacorchError,
    LockedError,
    RunbookError,
    RunNotFoundError,
    StoreError,
    ToolMissingError,
)
from iacorch.server.auth import Authenticator, ProxyTrust, session_key
from iacorch.store.base import Store

_QUEUE_LOCK_WAIT = 600.0   # a queue-triggered run waits this long for its runbook's lock

# error class -> HTTP status; the first match in this order wins (subclasses first)
HTTP_STATUS: tuple[tuple[type[IacorchError], int], ...] = (
    (AuthenticationError, 401), (GateConflictError, 409), (ApprovalError, 403),
    (RunNotFoundError, 404), (LockedError, 409), (RunbookError, 422),
    (ToolMissingError, 503), (StoreError, 503), (IacorchError, 400),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Settings:
    """What `iacorch serve` was told."""

    store_url: str | None = None
    root: Path = field(default_factory=Path.cwd)          # runbook paths are inside it
    trust: ProxyTrust = field(default_factory=ProxyTrust)
    max_body: int = 1 << 20
    workers: int = 16
    secure_cookies: bool = False                           # https-only cookies behind a proxy
    schedules: Sequence[str] = ()                          # runbooks whose schedules run here
    listen: Sequence[str] = ()                             # runbooks whose queues are read here


@dataclass
class Server:
    """Everything a request handler needs, built once at start-up."""

    settings: Settings
    store: Store
    state_dir: Path
    launcher: Launcher
    auth: Authenticator


def server_of(request: Request) -> Server:
    server: Server = request.app.state.server
    return server


def create_app(settings: Settings) -> FastAPI:
    """The application `iacorch serve` runs (and tests start under uvicorn)."""
    from iacorch.server import api, hooks, pages

    store, state_dir = open_for_runs(settings.store_url)
    server = Server(settings, store, state_dir, Launcher(store, state_dir,
                                                         workers=settings.workers),
                    Authenticator(store, session_key(state_dir), settings.trust))

    stop = threading.Event()
    if settings.listen:   # before serving: a wrong trigger or queue stops `serve` at once
        from iacorch.triggers.listener import start_listening

        start_listening(settings.listen, settings.root, server.launcher, stop,
                        logging.getLogger("iacorch.listen"), lock_timeout=_QUEUE_LOCK_WAIT)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        scheduler = _start_schedules(server, stop)
        try:
            yield
        finally:
            stop.set()
            if scheduler is not None:
                scheduler.join()
            server.launcher.close()
            store.close()

    app = FastAPI(title="iacorch", version=__version__, lifespan=lifespan,
                  description="Runs, approval gates and webhook triggers of iacorch runbooks.")
    app.state.server = server
    app.add_exception_handler(IacorchError, _error_response)  # type: ignore[arg-type]
    app.include_router(api.router)
    app.include_router(hooks.router)
    app.include_router(pages.router)
    app.add_middleware(BodyLimit, limit=settings.max_body)
    return app


def _error_response(_request: Request, exc: IacorchError) -> JSONResponse:
    status = next(code for kind, code in HTTP_STATUS if isinstance(exc, kind))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=status,
                        headers=headers)


class BodyLimit:
    """413 for a request body over `limit` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(self.limit, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(self.limit, send)


class _TooLarge(Exception):  # noqa: N818 - internal signal of BodyLimit
    pass


async def _too_large(limit: int, send: Send) -> None:
    response = JSONResponse({"error": f"request body over {limit} bytes",
                             "hint": "send less, or start the server with a larger --max-body"},
                            status_code=413)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _start_schedules(server: Server, stop: threading.Event) -> threading.Thread | None:
    """The runbooks' `schedules:` fire from this process (as `iacorch schedule run` would)."""
    if not server.settings.schedules:
        return None
    from iacorch.engine.runtime import current_identity
    from iacorch.schedule.daemon import Scheduler
    from iacorch.schedule.jobs import load_jobs

    jobs = load_jobs(list(server.settings.schedules))
    scheduler = Scheduler(jobs, store=server.store, state_dir=server.state_dir,
                          log=logging.getLogger("iacorch.schedule"), actor=current_identity(),
                          host=socket.gethostname(),
                          store_url=server.settings.store_url)
    thread = threading.Thread(target=scheduler.run, args=(stop,), name="iacorch-schedules",
                              daemon=True)
    thread.start()
    return thread
