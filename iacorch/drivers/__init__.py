"""One module per tool behind the Driver protocol, imported only when a stage needs it.

Which class serves which runbook key is declared in the registry
(`iacorch.model.registry`): the built-ins in `iacorch.model.actions`, others through
the `iacorch.drivers` entry points.
"""

from __future__ import annotations

import errno
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iacorch.errors import PluginError
from iacorch.model.registry import driver_spec
from iacorch.model.results import StageResult
from iacorch.model.status import Operation

if TYPE_CHECKING:
    from iacorch.drivers.base import Driver, StageContext
    from iacorch.model.plan import Plan

_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}


def load_driver(name: str) -> Driver:
    """The driver registered as `name`; its module (and the tool's library) loads on first
    use."""
    driver: Driver = driver_spec(name).load_class()()
    return driver


def execute(ctx: StageContext) -> StageResult:
    """Run one stage attempt: a pure function of `ctx.spec` plus the context's side effects.

    A bug inside a driver becomes a failed result naming it as internal, so one
    broken stage cannot take the scheduler down.
    """
    try:
        driver = load_driver(ctx.spec.driver)
    except PluginError as exc:  # a driver uninstalled since the run started
        return StageResult.failure(exc.message, hint=exc.hint)
    operation = {Operation.PLAN: driver.plan, Operation.APPLY: driver.apply,
                 Operation.DESTROY: driver.destroy, Operation.DRIFT: driver.drift}
    try:
        return operation[ctx.spec.operation](ctx)
    except OSError as exc:
        if exc.errno not in _NO_ROOM:
            return _internal_error(ctx, exc)
        return StageResult.failure(ctx.masker.mask(  # e.g. a full disk as it writes its files
            f"the {ctx.spec.driver} driver could not write {exc.filename or 'its files'}: "
            f"{exc.strerror}"), hint="free disk space and inodes there (df -h; df -i), "
            "then `iacorch resume`")
    except Exception as exc:  # noqa: BLE001 - the boundary that keeps the run alive
        return _internal_error(ctx, exc)


def _internal_error(ctx: StageContext, exc: Exception) -> StageResult:
    for line in traceback.format_exc().splitlines():
        ctx.log(line)
    return StageResult.failure(
        f"internal error in the {ctx.spec.driver} driver: {ctx.masker.mask(str(exc))}",
        hint="this is a bug in iacorch; the stage log has the traceback")


@dataclass(frozen=True)
class MissingTool:
    """A program some stages need that this machine does not have."""

    tool: str
    stages: list[str]
    hint: str


def missing_tools(plan: Plan) -> list[MissingTool]:
    """Programs the plan's stages need that cannot be found, with the stages needing them."""
    import shutil

    missing: dict[str, MissingTool] = {}
    found: dict[str, str | None] = {}
    stages = [*plan.stages.values(), *plan.finally_stages.values()]
    for stage in stages:
        if stage.action_type is None:
            continue
        driver = load_driver(stage.action_type)
        for tool in driver.required_tools(stage.action):
            if "{{" in tool:
                continue
            # a path such as ../scripts/check runs from the runbook's directory
            program = str(plan.root / tool) if "/" in tool else tool
            if program not in found:
                found[program] = shutil.which(program)
            if found[program] is None:
                entry = missing.setdefault(
                    tool, MissingTool(tool, [], driver.install_hint(tool)))
                entry.stages.append(stage.id)
    return list(missing.values())
