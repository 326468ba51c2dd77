"""The registry: built-ins first, then entry-point drivers; a broken one is named."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any

import pytest

from iacorch.errors import PluginError
from iacorch.model.actions import ShellAction
from iacorch.model.driver_spec import DriverSpec
from iacorch.model.registry import ENTRY_POINT_GROUP, _with_plugins, driver_spec


@dataclass
class FakeEntryPoint:
    name: str
    loaded: Any
    value: str = "some_package:SPEC"

    def load(self) -> Any:
        if isinstance(self.loaded, Exception):
            raise self.loaded
        return self.loaded


def discover(monkeypatch: pytest.MonkeyPatch, *entries: FakeEntryPoint) -> dict[str, DriverSpec]:
    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        assert group == ENTRY_POINT_GROUP
        return list(entries)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return _with_plugins.__wrapped__()  # type: ignore[attr-defined,no-any-return]


def echo(name: str = "echo") -> DriverSpec:
    return DriverSpec(name, ShellAction, "some_package.driver:EchoDriver")


def test_built_ins_come_first_then_plugins_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    found = discover(monkeypatch, FakeEntryPoint("zz", echo("zz")), FakeEntryPoint("echo", echo()))
    assert list(found) == ["terraform", "pulumi", "ansible", "shell", "http", "echo", "zz"]


@pytest.mark.parametrize(("entry", "message"), [
    (FakeEntryPoint("echo", ImportError("no module named some_package")),
     "cannot be loaded: no module named some_package"),
    (FakeEntryPoint("echo", object()), "it gives object, not an iacorch DriverSpec"),
    (FakeEntryPoint("echo", echo("other")), "it names the driver `other`, not `echo`"),
    (FakeEntryPoint("Echo", echo("Echo")), "`Echo` is not a driver name"),
    (FakeEntryPoint("shell", echo("shell")), "a driver named `shell` is already registered"),
])
def test_a_broken_plugin_is_named(monkeypatch: pytest.MonkeyPatch, entry: FakeEntryPoint,
                                  message: str) -> None:
    with pytest.raises(PluginError, match="some_package:SPEC") as raised:
        discover(monkeypatch, entry)
    assert message in raised.value.message
    assert raised.value.hint


def test_an_unknown_driver_lists_the_installed_ones() -> None:
    with pytest.raises(PluginError, match="no driver named `echo`") as raised:
        driver_spec("echo")
    assert "terraform, pulumi, ansible, shell, http" in (raised.value.hint or "")


def test_plugins_are_looked_for_only_when_a_runbook_names_an_unknown_key(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Searching the installed packages costs ~20 ms: a runbook of built-ins never pays it."""
    from iacorch.runbook.compiler import _names_unknown_keys

    assert not _names_unknown_keys({"stages": {"a": {"kind": "deploy", "shell": {"run": "x"}},
                                               "b": {"kind": "deploy", "http": {"url": "u"},
                                                     "rollback": {"shell": {"run": "y"}}}}})
    assert _names_unknown_keys({"stages": {"a": {"kind": "deploy", "echo": {"text": "x"}}}})
    assert _names_unknown_keys({"finally": {"a": {"rollback": {"echo": {}}}}})
