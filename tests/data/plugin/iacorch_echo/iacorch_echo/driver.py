"""The echo driver: its apply writes the action's message as an output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iacorch.drivers.base import StageContext
from iacorch.model.results import StageResult
from iacorch.model.status import StageStatus
from iacorch_echo import EchoAction


class EchoDriver:
    """Echoes `message` into the output named `output`; changes nothing anywhere."""

    def required_tools(self, action: Mapping[str, Any]) -> list[str]:
        """Nothing: the message is the whole job."""
        return []

    def install_hint(self, tool: str) -> str:
        """Never asked: an echo stage needs no program."""
        return ""

    def plan(self, ctx: StageContext) -> StageResult:
        """The output an apply would give: the message is known before it runs."""
        action = _action(ctx)
        if isinstance(action, StageResult):
            return action
        return StageResult(status=StageStatus.SUCCEEDED, outputs={action.output: action.message},
                           unknown_outputs=frozenset())

    def apply(self, ctx: StageContext) -> StageResult:
        """Log the message and give it as the output."""
        action = _action(ctx)
        if isinstance(action, StageResult):
            return action
        ctx.log(f"echo: {action.message}")
        return StageResult(status=StageStatus.SUCCEEDED, outputs={action.output: action.message})

    def destroy(self, ctx: StageContext) -> StageResult:
        """Nothing was created."""
        return StageResult(status=StageStatus.SUCCEEDED)

    def drift(self, ctx: StageContext) -> StageResult:
        """A message cannot drift."""
        return StageResult(status=StageStatus.SUCCEEDED, drifted=False)


def _action(ctx: StageContext) -> EchoAction | StageResult:
    """The rendered action, or a failed result saying why it is not one."""
    from pydantic import ValidationError

    try:
        return EchoAction.model_validate(dict(ctx.spec.action))
    except ValidationError as exc:
        return StageResult.failure(f"invalid echo action: {exc.errors()[0]['msg']}")
