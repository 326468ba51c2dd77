"""The Rego interpreter (regopy, the rego-cpp bindings), in process: the one module that
imports it, lazily, so that runs without a policy never pay for it.

Every failure of the interpreter becomes a PolicyError naming the file and line where
rego-cpp gives one: a policy that cannot be evaluated allows nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iacorch.errors import Location, PolicyError, ToolMissingError

UNDEFINED = object()   # a query whose rule does not exist or produced no value
_ERROR_AT = re.compile(r"\(error \d+:(?P<file>[^|]*)\|(?P<offset>\d+)\|")
_MESSAGE = re.compile(r"\(errormsg (?P<length>\d+):")
_READABLE_AT = re.compile(r"^-- (?P<where>\S+:\d+:\d+)$", re.MULTILINE)


def _regopy() -> Any:
    try:
        import regopy
    except ImportError:
        raise ToolMissingError("evaluating a policy needs the regopy package, which is not "
                               "installed", hint="pip install 'iacorch[policy]'") from None
    return regopy


class RegoEngine:
    """One interpreter loaded with a policy set's modules and data; queries against inputs.

    Not thread-safe: callers serialise (policy.guard holds a lock).
    """

    def __init__(self, modules: Mapping[str, str], data: Mapping[str, Any],
                 directory: Path) -> None:
        regopy = _regopy()
        self._shared = regopy.rego_shared
        self._interpreter = regopy.Interpreter()
        # rego-cpp prints parse errors to stdout by default: stdout is for our output
        self._interpreter.log_level = regopy.LogLevel.NONE
        self._sources = dict(modules)
        self._directory = directory
        for name, source in modules.items():
            try:
                self._interpreter.add_module(name, source)
            except regopy.RegoError as exc:
                raise self._error(str(exc), f"policy file {name} does not parse") from None
        if data:
            self._interpreter.add_data_json(json.dumps(data))

    def set_input(self, value: Mapping[str, Any]) -> None:
        """The `input` document of the following queries."""
        shared = self._shared
        built = _build_input(shared.rego, value)
        try:
            shared.rego_set_input(self._interpreter._impl, built)
        finally:
            shared.rego_free_input(built)

    def query(self, expression: str) -> Any:
        """The value of `expression` (e.g. `data.iacorch.deny`), or UNDEFINED."""
        result = self._first_result(expression)
        return result["expressions"][0] if result.get("expressions") else UNDEFINED

    def binding(self, expression: str, name: str) -> Any:
        """The value bound to `name` by `expression` (e.g. `x := ...`), or UNDEFINED."""
        return self._first_result(expression).get("bindings", {}).get(name, UNDEFINED)

    def _first_result(self, expression: str) -> dict[str, Any]:
        shared = self._shared
        output = shared.rego_query(self._interpreter._impl, expression)
        if not output:
            raise self._error(shared.rego_get_error(self._interpreter._impl),
                              f"the policy failed evaluating `{expression}`")
        try:
            if not shared.rego_output_ok(output):
                raise self._error(shared.rego_get_error(self._interpreter._impl),
                                  f"the policy failed evaluating `{expression}`")
            text = shared.rego_output_string(output)
        finally:
            shared.rego_free_output(output)
        if text.strip() == "undefined":
            return {}
        if text.lstrip().startswith("(error"):
            raise self._error(text, f"the policy failed evaluating `{expression}`")
        result = json.loads(text)
        results = result if isinstance(result, list) else [result]
        return results[0] if results else {}

    def _error(self, raw: str, what: str) -> PolicyError:
        """A readable PolicyError from rego-cpp's error text (s-expression or prose)."""
        where: Location | str | None = None
        located = _ERROR_AT.search(raw)
        if located and located.group("file") in self._sources:
            name = located.group("file")
            where = _location(self._directory / name, self._sources[name],
                              int(located.group("offset")))
        else:
            readable = _READABLE_AT.search(raw)
            if readable:
                where = readable.group("where")
        message = _message(raw)
        prefix = f"{where}: " if where else ""
        return PolicyError(f"{prefix}{what}: {message}",
                           hint="fix the policy (check it with `iacorch policy test DIR`); "
                                "until it evaluates, every check it guards fails closed")


def _build_input(lib: Any, value: Mapping[str, Any]) -> Any:
    """The input term, built with rego-cpp's C input API.

    regopy's own converter does the same through isinstance checks against the abstract
    collection types and a string buffer per string; dispatching on the exact type and
    passing bytes halves the time a 1,000-stage plan takes to hand over (bench/policy.py).
    Values are JSON-like: what policy.facts builds.
    """
    handle = lib.regoNewInput()
    string, integer, real = lib.regoInputString, lib.regoInputInt, lib.regoInputFloat
    boolean, null, item = lib.regoInputBoolean, lib.regoInputNull, lib.regoInputObjectItem
    mapping, array = lib.regoInputObject, lib.regoInputArray

    def add(node: Any) -> int:
        kind = type(node)
        if kind is str:
            return string(handle, node.encode())
        if kind is dict:
            failed = 0
            for key, child in node.items():
                failed |= string(handle, str(key).encode()) | add(child) | item(handle)
            return failed | mapping(handle, len(node))
        if kind is list or kind is tuple:
            failed = 0
            for child in node:
                failed |= add(child)
            return failed | array(handle, len(node))
        if kind is bool:
            return boolean(handle, node)
        if kind is int:
            return integer(handle, node)
        if kind is float:
            return real(handle, node)
        if node is None:
            return null(handle)
        if isinstance(node, Mapping):
            return add(dict(node))
        return add(str(node))   # an enum or path: its text, as JSON would give

    if add(dict(value)):
        lib.regoFreeInput(handle)
        raise PolicyError("the policy input could not be handed to rego-cpp")
    return handle


def _location(path: Path, source: str, offset: int) -> Location:
    before = source[:offset]
    line = before.count("\n") + 1
    return Location(str(path), line, offset - (before.rfind("\n") + 1) + 1)


def _message(raw: str) -> str:
    """The `errormsg` of an s-expression error (length-prefixed), else its first line."""
    found = _MESSAGE.search(raw)
    if found:
        start = found.end()
        return raw[start:start + int(found.group("length"))]
    lines = [line.strip() for line in raw.splitlines()
             if line.strip() and line.strip() != "Errors:"]
    return lines[0] if lines else "rego-cpp gave no reason"
