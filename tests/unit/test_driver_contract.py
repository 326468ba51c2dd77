"""Every registered driver's declaration agrees with its action model and its class."""

from __future__ import annotations

import pytest

from iacorch.model.driver_spec import DRIVER_NAME, DefaultUndo, DriverSpec
from iacorch.model.registry import driver_specs
from iacorch.model.runbook import Stage, runbook_model

SPECS = list(driver_specs().values())
OPERATIONS = ("plan", "apply", "destroy", "drift", "required_tools", "install_hint")


@pytest.fixture(params=SPECS, ids=lambda spec: spec.name)
def spec(request: pytest.FixtureRequest) -> DriverSpec:
    return request.param


def test_the_name_is_a_stage_key_of_its_own(spec: DriverSpec) -> None:
    assert DRIVER_NAME.match(spec.name)
    assert spec.name not in Stage.model_fields


def test_the_model_validates_the_example(spec: DriverSpec) -> None:
    action = spec.action_model.model_validate(spec.example)
    assert isinstance(spec.is_idempotent(action), bool)


def test_declared_fields_exist_on_the_model(spec: DriverSpec) -> None:
    declared = [*spec.path_fields, *filter(None, (spec.script_field, spec.argv_field))]
    assert set(declared) <= set(spec.action_model.model_fields), declared


def test_the_undo_is_one_the_engine_knows(spec: DriverSpec) -> None:
    assert isinstance(spec.default_undo, DefaultUndo)
    assert isinstance(spec.plan_before_gate, bool)


def test_the_class_loads_with_the_operations(spec: DriverSpec) -> None:
    driver = spec.load_class()()
    for name in OPERATIONS:
        assert callable(getattr(driver, name, None)), f"{spec.name} driver lacks {name}"
    for tool in [*driver.required_tools(spec.example), "some-tool"]:
        assert isinstance(driver.install_hint(tool), str)


def test_a_stage_of_the_driver_validates_in_a_runbook(spec: DriverSpec) -> None:
    runbook = runbook_model().model_validate({
        "version": 1, "name": "contract",
        "stages": {"s": {"kind": "deploy", spec.name: dict(spec.example),
                         "rollback": {spec.name: dict(spec.example)}}}})
    stage = runbook.stages["s"]
    assert stage.action_type == spec.name
    assert not isinstance(stage.rollback, str)
    assert stage.rollback.action_type == spec.name
