"""What a driver declares about its tool, so that the engine never branches on the tool.

A `DriverSpec` is plain data: importing one imports the driver's action model
(pydantic) but not the driver, whose module may load a heavy library; the class is
imported by its dotted path when a stage runs (`load_class`). docs/drivers.md says
how to write one.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

DRIVER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class DefaultUndo(StrEnum):
    """How a stage is undone when it has no `rollback:` (or `destroy:`) of its own."""

    STACK = "stack"           # destroy what the run created; re-apply what existed before
    READ_ONLY = "read_only"   # an idempotent stage only reads: nothing to undo
    EXPLICIT = "explicit"     # the tool cannot tell: the stage needs a `rollback:` action


@dataclass(frozen=True)
class DriverSpec:
    """One tool as the runbook, the compiler and the engine see it.

    `name` is the stage key (`terraform:`); `action_model` validates what is under it;
    `driver_class` ("package.module:Class") is imported only when a stage runs. The
    driver class itself answers `required_tools` and `install_hint`, which may need
    to look at the machine.
    """

    name: str
    action_model: type[BaseModel]
    driver_class: str
    example: Mapping[str, Any] = field(default_factory=dict)  # a minimal valid action
    path_fields: tuple[str, ...] = ()     # files or directories relative to the runbook
    plan_before_gate: bool = False        # planned, and the plan shown, before a gate opens
    default_undo: DefaultUndo = DefaultUndo.EXPLICIT
    idempotent: bool | Callable[[Any], bool] = False   # a bool, or a test of the action
    script_field: str | None = None       # rendered as a bash script: values quoted, secrets
    #                                       as environment references
    argv_field: str | None = None         # a command line: items become text; no secrets

    def is_idempotent(self, action: BaseModel) -> bool:
        """Whether running this action twice does what running it once does."""
        if isinstance(self.idempotent, bool):
            return self.idempotent
        return bool(self.idempotent(action))

    def load_class(self) -> type:
        """The driver class; its module (and the tool's library) is imported now."""
        module_name, _, class_name = self.driver_class.partition(":")
        return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]
