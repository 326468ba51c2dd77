"""Pure failure policies: retry or give up, and what a final failure means for the run."""

from __future__ import annotations

from dataclasses import dataclass

from iacorch.model.plan import Plan, PlannedStage
from iacorch.model.results import StageResult
from iacorch.model.status import FailurePolicy, StageStatus


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay: float = 0.0


def after_attempt(stage: PlannedStage, attempt: int, result: StageResult) -> RetryDecision:
    """Retry a failed attempt while attempts remain; never retry an interrupted one.

    The backoff doubles with each attempt: backoff, 2*backoff, 4*backoff...
    """
    if result.status is not StageStatus.FAILED or result.interrupted:
        return RetryDecision(False)
    if attempt >= stage.retry.attempts:
        return RetryDecision(False)
    return RetryDecision(True, stage.retry.backoff * (2 ** (attempt - 1)))


def failure_policy(plan: Plan, stage: PlannedStage) -> FailurePolicy:
    """The stage's own `on_failure`, else the runbook's."""
    return stage.on_failure or plan.on_failure
