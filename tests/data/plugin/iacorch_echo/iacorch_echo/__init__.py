"""The `echo:` action and its declaration; the driver class loads only when a stage runs."""

from __future__ import annotations

from iacorch.model.driver_spec import DefaultUndo, DriverSpec
from iacorch.model.fields import Strict, Templated


class EchoAction(Strict):
    message: Templated
    output: str = "message"   # the name of the output that carries the message


SPEC = DriverSpec(
    "echo", EchoAction, "iacorch_echo.driver:EchoDriver",
    example={"message": "hello"},
    default_undo=DefaultUndo.READ_ONLY, idempotent=True,
)
