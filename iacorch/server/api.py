"""The JSON API: runs, their stages, logs and gates; start, decide, resume."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from iacorch.engine.approvals import Decision, evaluate_gate
from iacorch.engine.launch import var_flag
from iacorch.engine.operations import decide_gate, effective_status, runs_at_gates
from iacorch.errors import UsageError
from iacorch.model.plan import ApprovalGate
from iacorch.model.status import Choice, Phase, RunStatus, StageStatus
from iacorch.server.app import server_of
from iacorch.server.auth import Identity
from iacorch.server.runs import log_files, resume, start
from iacorch.store.base import RunRecord, Store

router = APIRouter(prefix="/api")


async def identity(request: Request) -> Identity:
    """The caller, proven (401 otherwise); POSTs from a browser session need CSRF.

    Reads run on the event loop (a store read takes well under a millisecond; a thread
    hop per request would cost more); what waits for a run goes to a worker thread.
    """
    client = request.client.host if request.client else None
    return server_of(request).auth.identify(request.method, client, request.headers,
                                            request.cookies)


Caller = Annotated[Identity, Depends(identity)]


class StartRequest(BaseModel):
    runbook: str = Field(description="the runbook's path inside the project")
    vars: dict[str, Any] = {}
    operation: Literal["apply", "plan"] = "apply"
    lock_timeout: float = Field(default=0.0, ge=0, le=3600, description=(
        "seconds to wait for another run of the runbook to finish (else 409 at once)"))


class DecisionRequest(BaseModel):
    gate_hash: str = Field(description="the gate hash you were shown (GET /api/runs/{id})")
    inputs: dict[str, Any] = {}
    comment: str | None = Field(default=None, max_length=2000)
    resume: bool = Field(default=False, description="resume the run once the gate is decided")


@router.get("/health")
def health(request: Request) -> dict[str, Any]:
    """Liveness: the store answers."""
    server_of(request).store.audit_head()   # one read: a store that cannot answer raises
    return {"status": "ok"}


@router.get("/runs")
async def list_runs(request: Request, who: Caller,
                    status: RunStatus | None = None, runbook: str | None = None,
                    waiting: bool = False, limit: int = Query(50, ge=1, le=10_000)
                    ) -> JSONResponse:
    """Runs, newest first."""
    store = server_of(request).store
    records = (runs_at_gates(store, limit, runbook) if waiting
               else store.list_runs(limit=limit, runbook=runbook, status=status))
    return JSONResponse([run_summary(run) for run in records])


@router.get("/runs/{run_id}")
async def get_run(run_id: str, request: Request, who: Caller) -> JSONResponse:
    """One run: stages with status, timings, attempts, masked outputs; gates with plans."""
    return JSONResponse(run_detail(server_of(request).store, run_id))


@router.post("/runs", status_code=201)
def start_run(body: StartRequest, request: Request,
              who: Caller) -> dict[str, Any]:
    """Start a run of a runbook in the project; answers once the run is on record."""
    launched = start(server_of(request), body.runbook, body.vars, body.operation, who,
                     lock_timeout=body.lock_timeout)
    return {"run_id": launched.run_id, "recorded": launched.recorded}


@router.post("/runs/{run_id}/resume", status_code=202)
def resume_run(run_id: str, request: Request, who: Caller
               ) -> dict[str, Any]:
    """Continue a suspended, failed or interrupted run where it stopped."""
    launched = resume(server_of(request), run_id, who)
    return {"run_id": launched.run_id, "recorded": launched.recorded}


@router.post("/runs/{run_id}/gates/{gate}/{verdict}")
def decide(run_id: str, gate: str, verdict: Literal["approve", "reject"],
           body: DecisionRequest, request: Request,
           who: Caller) -> dict[str, Any]:
    """Approve or reject a gate, bound to the gate hash shown; by the engine's rules."""
    server = server_of(request)
    inputs = {name: var_flag(value) for name, value in body.inputs.items()}  # typed by the gate
    run = decide_gate(server.store, run_id, gate,
                      Decision(who.user, Choice(verdict), body.comment, inputs, via=who.via,
                               seen_gate_hash=body.gate_hash), time.time())
    answer: dict[str, Any] = {"run_id": run.id, "gate": gate, "decision": verdict,
                              "by": who.user, "gate_state": gate_summary(server.store, run,
                                                                          gate)["state"]}
    if body.resume and answer["gate_state"] != "pending":
        answer["resumed"] = resume(server, run.id, who).run_id
    return answer


@router.get("/runs/{run_id}/logs/{stage}", response_class=PlainTextResponse)
def stage_log(run_id: str, stage: str, request: Request,
              who: Caller) -> str:
    """The stage's log, every attempt (tool output is masked as it is written)."""
    server = server_of(request)
    return "".join(path.read_text(encoding="utf-8", errors="replace")
                   for path in log_files(server, run_id, stage))


@router.get("/runs/{run_id}/logs/{stage}/stream")
def stream_log(run_id: str, stage: str, request: Request,
               who: Caller) -> StreamingResponse:
    """The stage's log as server-sent events, line by line, until the run stops running."""
    server = server_of(request)
    run = server.store.get_run(run_id)
    log_files(server, run.id, stage)   # 404 for a stage that never started

    async def events() -> AsyncIterator[str]:
        positions: dict[str, int] = {}
        while True:
            running = server.store.get_run(run.id).status is RunStatus.RUNNING
            for path in log_files(server, run.id, stage):
                with open(path, encoding="utf-8", errors="replace") as handle:
                    handle.seek(positions.get(str(path), 0))
                    for line in handle:
                        yield f"data: {line.rstrip()}\n\n"
                    positions[str(path)] = handle.tell()
            if not running or await request.is_disconnected():
                yield "event: end\ndata: \n\n"
                return
            await asyncio.sleep(0.25)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


def run_summary(run: RunRecord) -> dict[str, Any]:
    return {"id": run.id, "runbook": run.runbook, "workspace": run.workspace,
            "operation": run.operation, "status": effective_status(run).value,
            "started_at": run.started_at, "finished_at": run.finished_at, "user": run.user}


def run_detail(store: Store, run_id: str) -> dict[str, Any]:
    from iacorch.report import run_report

    run = store.get_run(run_id)
    stages = store.stage_records(run.id)
    report = run_report(run, stages)
    report["run"]["status"] = effective_status(run).value
    for stage in report["stages"]:
        record = stages[stage["id"]]
        stage.update(started_at=record.started_at, finished_at=record.finished_at)
    report["gates"] = [gate_summary(store, run, gate) for gate, record in stages.items()
                       if "gate_hash" in record.details]
    report["rollback"] = [{"id": sid, "status": rec.status.value, "error": rec.error}
                          for sid, rec in store.stage_records(run.id, Phase.ROLLBACK).items()]
    return report


def gate_summary(store: Store, run: RunRecord, gate: str) -> dict[str, Any]:
    """A gate as an approver sees it: what it binds to, the plans behind it, decisions."""
    record = store.stage_records(run.id).get(gate)
    if record is None or "gate_hash" not in record.details:
        raise UsageError(f"run {run.id} has no gate `{gate}` that opened")
    details = record.details
    decisions = store.approvals(run.id, gate)
    # the verdict needs only `require`, which the gate recorded when it opened
    state = evaluate_gate(ApprovalGate(require=int(details.get("require", 1))), decisions,
                          details["gate_hash"]).decision.value
    return {"id": gate, "waiting": record.status is StageStatus.WAITING_APPROVAL,
            "state": state, "gate_hash": details["gate_hash"],
            "opened_at": details.get("opened_at"), "approvers": details.get("approvers", []),
            "require": details.get("require", 1), "message": details.get("message"),
            "plans": {sid: {"summary": info.get("summary"), "diff": info.get("diff") or ""}
                      for sid, info in (details.get("planned") or {}).items()},
            "decisions": [{"identity": d.identity, "decision": d.decision, "time": d.time,
                           "comment": d.comment, "current": d.plan_hash == details["gate_hash"]}
                          for d in decisions]}

