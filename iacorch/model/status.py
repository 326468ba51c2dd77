"""Statuses and kinds: enums in code, readable text in the store and in --json."""

from __future__ import annotations

from enum import StrEnum


class StageKind(StrEnum):
    PROVISION = "provision"
    CONFIGURE = "configure"
    DEPLOY = "deploy"
    VERIFY = "verify"
    APPROVAL = "approval"
    FINALLY = "finally"


class Operation(StrEnum):
    PLAN = "plan"
    APPLY = "apply"
    DESTROY = "destroy"
    DRIFT = "drift"


class Phase(StrEnum):
    """Which way a run's stages were going when an attempt was recorded."""

    FORWARD = "forward"
    ROLLBACK = "rollback"


class Choice(StrEnum):
    """What an approver decided at a gate."""

    APPROVE = "approve"
    REJECT = "reject"


class OnTimeout(StrEnum):
    """What a gate does when nobody decided before its timeout."""

    REJECT = "reject"
    CANCEL = "cancel"
    APPROVE = "approve"


class FailurePolicy(StrEnum):
    STOP = "stop"
    CONTINUE = "continue"
    ROLLBACK = "rollback"


class StageStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    WAITING_APPROVAL = "waiting_approval"
    MARKED_DONE = "marked_done"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"

    @property
    def is_done(self) -> bool:
        """Finished for good in the forward run: downstream may use its outputs."""
        return self in (StageStatus.SUCCEEDED, StageStatus.SKIPPED, StageStatus.MARKED_DONE)

    @property
    def is_final(self) -> bool:
        return self not in (StageStatus.PENDING, StageStatus.RUNNING,
                            StageStatus.WAITING_APPROVAL, StageStatus.INTERRUPTED)


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    WAITING_APPROVAL = "waiting_approval"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    DIED = "died"
