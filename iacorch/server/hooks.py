"""Webhook triggers: `POST /hooks/{runbook}/{trigger}`, signed like GitHub's.

The signature (`X-Hub-Signature-256: sha256=HMAC-SHA256(secret, body)`) is compared in
constant time before anything else is done with the body; the delivery id
(`X-GitHub-Delivery`) makes a redelivered event start no second run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from iacorch.engine.runs import new_run_id
from iacorch.engine.secrets import resolve_secrets
from iacorch.engine.triggered import TriggerEvent, find_trigger, start_from_event
from iacorch.errors import AuthenticationError, UsageError
from iacorch.server.app import server_of

router = APIRouter()

SIGNATURE_HEADER = "X-Hub-Signature-256"
DELIVERY_HEADER = "X-GitHub-Delivery"
_LOCK_WAIT = 600.0   # a triggered run waits this long for the previous run of its runbook


def signature_ok(secret: str, body: bytes, header: str) -> bool:
    """Whether `header` is `sha256=` + the HMAC-SHA256 of `body`, compared in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace"))


@router.post("/hooks/{runbook:path}/{trigger}", status_code=202)
async def webhook(runbook: str, trigger: str, request: Request) -> JSONResponse:
    """Start the trigger's run for a signed delivery (202), or name the run an earlier
    copy of the same delivery started (200)."""
    server = server_of(request)
    root = server.settings.root
    path, spec = find_trigger(root, runbook, trigger)
    if spec.webhook is None:
        raise UsageError(f"trigger `{trigger}` of {runbook} is not a webhook",
                         hint=f"it listens to {spec.source}")
    secret = resolve_secrets({"webhook": spec.webhook.secret}, path.parent)["webhook"]
    body = await request.body()
    if not signature_ok(secret, body, request.headers.get(SIGNATURE_HEADER, "")):
        raise AuthenticationError(f"bad or missing {SIGNATURE_HEADER} signature",
                                  hint="sign the body with HMAC-SHA256 and the trigger's secret")
    delivery = request.headers.get(DELIVERY_HEADER, "").strip()
    if not delivery or len(delivery) > 200:
        raise UsageError(f"missing {DELIVERY_HEADER} header (the delivery's unique id)",
                         hint="each delivery needs an id, so a redelivery starts no second run")
    event = TriggerEvent(runbook, trigger, delivery, _event_data(body))
    launcher = server.launcher
    run_id = new_run_id(server.store.now())
    launched = await anyio.to_thread.run_sync(lambda: launcher.launch(
        run_id, f"webhook:{trigger}",
        lambda runtime: start_from_event(event, runtime, root=root, lock_timeout=_LOCK_WAIT,
                                         run_id=run_id)))
    if launched.duplicate:
        return JSONResponse({"run_id": launched.run_id, "duplicate": True}, status_code=200)
    return JSONResponse({"run_id": launched.run_id, "recorded": launched.recorded},
                        status_code=202)


def _event_data(body: bytes) -> dict[str, Any]:
    """The delivery's JSON payload (`event` in the trigger's templates)."""
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the webhook body is not JSON",
                         hint="send the payload as application/json") from None
    return data if isinstance(data, dict) else {"payload": data}
