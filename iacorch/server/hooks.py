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

from iacorch.engine.launcher import Launched
from iacorch.engine.runs import new_run_id
from iacorch.engine.secrets import resolve_secrets
from iacorch.engine.triggered import TriggerEvent, find_trigger, start_from_event
from iacorch.errors import AuthenticationError, UsageError
from iacorch.server.app import Server, server_of

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
    body = await request.body()
    server = server_of(request)
    headers = {name: request.headers.get(name, "") for name in (SIGNATURE_HEADER,
                                                                DELIVERY_HEADER)}
    launched = await anyio.to_thread.run_sync(
        lambda: deliver(server, runbook, trigger, headers, body))
    if launched.duplicate:
        return JSONResponse({"run_id": launched.run_id, "duplicate": True}, status_code=200)
    return JSONResponse({"run_id": launched.run_id, "recorded": launched.recorded},
                        status_code=202)


def deliver(server: Server, runbook: str, trigger: str, headers: dict[str, str],
            body: bytes) -> Launched:
    """Verify a delivery's signature and id, then hand its event to the engine."""
    root = server.settings.root
    path, spec = find_trigger(root, runbook, trigger)
    if spec.webhook is None:
        raise UsageError(f"trigger `{trigger}` of {runbook} is not a webhook",
                         hint=f"it listens to {spec.source}")
    secret = resolve_secrets({"webhook": spec.webhook.secret}, path.parent)["webhook"]
    if not signature_ok(secret, body, headers[SIGNATURE_HEADER]):
        raise AuthenticationError(f"bad or missing {SIGNATURE_HEADER} signature",
                                  hint="sign the body with HMAC-SHA256 and the trigger's secret")
    delivery = headers[DELIVERY_HEADER].strip()
    if not delivery or len(delivery) > 200:
        raise UsageError(f"missing {DELIVERY_HEADER} header (the delivery's unique id)",
                         hint="each delivery needs an id, so a redelivery starts no second run")
    event = TriggerEvent(runbook, trigger, delivery, _event_data(body))
    run_id = new_run_id(server.store.now())
    return server.launcher.launch(
        run_id, f"webhook:{trigger}",
        lambda runtime: start_from_event(event, runtime, root=root, lock_timeout=_LOCK_WAIT,
                                         run_id=run_id))


def _event_data(body: bytes) -> dict[str, Any]:
    """The delivery's JSON payload (`event` in the trigger's templates)."""
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the webhook body is not JSON",
                         hint="send the payload as application/json") from None
    return data if isinstance(data, dict) else {"payload": data}
