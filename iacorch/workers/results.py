"""A StageResult as text for its trip back from a worker, through the store.

A result with sensitive outputs is sealed (iacorch.engine.stage_requests.seal) under
$IACORCH_SEAL_KEY: their values never rest in clear in the database.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from iacorch.engine.stage_requests import seal, unseal
from iacorch.model.results import ChangeSummary, ResourceChange, StageResult
from iacorch.model.status import StageStatus


def result_to_text(result: StageResult, *, key: str | None = None) -> str:
    """The result as JSON text; sealed when it holds sensitive outputs."""
    data: dict[str, Any] = {
        "status": StageStatus(result.status).value, "outputs": dict(result.outputs),
        "sensitive_outputs": sorted(result.sensitive_outputs),
        "changes": None if result.changes is None else asdict(result.changes),
        "artifacts": list(result.artifacts), "error": result.error, "hint": result.hint,
        "exit_code": result.exit_code, "output_tail": list(result.output_tail),
        "drifted": result.drifted, "details": dict(result.details),
        "saved_plan": result.saved_plan, "interrupted": result.interrupted,
        "unknown_outputs": None if result.unknown_outputs is None
        else sorted(result.unknown_outputs)}
    if result.sensitive_outputs:
        return json.dumps({"sealed": seal(data, key=key)})
    return json.dumps({"result": data})


def result_from_text(text: str, *, key: str | None = None) -> StageResult:
    """The StageResult `result_to_text` wrote."""
    wrapper = json.loads(text)
    data = unseal(wrapper["sealed"], key=key) if "sealed" in wrapper else wrapper["result"]
    changes = data["changes"]
    if changes is not None:
        changes = ChangeSummary(**{**changes, "outputs": tuple(changes["outputs"]),
                                   "resources": tuple(ResourceChange(**r)
                                                      for r in changes["resources"])})
    unknown = data["unknown_outputs"]
    return StageResult(
        status=StageStatus(data["status"]), outputs=data["outputs"],
        sensitive_outputs=frozenset(data["sensitive_outputs"]), changes=changes,
        artifacts=tuple(data["artifacts"]), error=data["error"], hint=data["hint"],
        exit_code=data["exit_code"], output_tail=tuple(data["output_tail"]),
        drifted=data["drifted"], details=data["details"], saved_plan=data["saved_plan"],
        interrupted=data["interrupted"],
        unknown_outputs=None if unknown is None else frozenset(unknown))


LOST = result_to_text(StageResult.failure(
    "the worker running it stopped renewing its lease (it died or lost the database): "
    "the tool may have run partly", interrupted=True,
    hint="check what it changed, then `iacorch resume RUN --rerun-interrupted` or "
         "`iacorch mark-done`"))
CANCELLED = result_to_text(StageResult.failure("cancelled before or while it ran on a worker",
                                               interrupted=True))
