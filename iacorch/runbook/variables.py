"""Runbook vars: declared defaults overridden by --var-file and --var, type-checked.

A default that does not fit its own declaration is a runbook error (exit 65, located at
the default); a value given on the command line or in a var file that does not fit is a
bad invocation (exit 64), located in the var file when it came from one.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from iacorch.errors import Location, RunbookError, UsageError
from iacorch.runbook.checks import Finding

_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*\Z")  # not "+-5" or "²", which int() refuses
_BOOL_TEXT = {"true": True, "yes": True, "on": True, "1": True,
              "false": False, "no": False, "off": False, "0": False}
_EXPECTED = {"string": "text", "str": "text", "int": "an integer", "float": "a number",
             "bool": "true or false", "list": "a list, e.g. '[a, b]'",
             "map": "a mapping, e.g. '{a: 1}'"}


class _Mismatch(ValueError):
    """A value that does not fit a declared var type; `expected` says what would."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def parse_var_flags(flags: Sequence[str]) -> dict[str, str]:
    """`["env=prod", "n=3"]` -> {"env": "prod", "n": "3"}; values stay text until typed."""
    found: dict[str, str] = {}
    for flag in flags:
        name, sep, value = flag.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--var {flag!r} is not NAME=VALUE",
                             hint="write it as --var env=prod")
        found[name.strip()] = value
    return found


def load_var_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Location]]:
    """A YAML mapping of var values, with the location of each for error messages."""
    from iacorch.runbook.source import load_document

    document = load_document(path)
    if not isinstance(document.data, dict):  # the loader only accepts a mapping at the top
        raise RunbookError.single("a var file is a mapping of var names to values",
                                  document.locate(()), "write `name: value` lines")
    return dict(document.data), {name: document.locate([name]) for name in document.data}


def check_defaults(declared: Mapping[str, Any]) -> Iterator[Finding]:
    """Each declared default fits its own `type` and `choices` (VarSpec models)."""
    for name, spec in declared.items():
        if spec.default is None:
            continue
        where = ("vars", name, "default")
        try:
            typed = _coerce(spec.type, spec.default, from_text=False)
        except _Mismatch as exc:
            yield Finding(f"the default of var `{name}` must be {exc.expected}, got "
                          f"{_show(spec.default)}", where,
                          f"the var is declared `type: {spec.type}`; fix the default or the type")
            continue
        if spec.choices is not None and typed not in spec.choices:
            yield Finding(f"the default of var `{name}` must be one of "
                          f"{_choices(spec.choices)}, got {_show(spec.default)}", where,
                          "pick one of the `choices`, or add the default to them")


def resolve_vars(declared: Mapping[str, Any], *, cli_vars: Mapping[str, str] | None = None,
                 file_vars: Mapping[str, Any] | None = None,
                 file_origins: Mapping[str, Location] | None = None,
                 declared_at: Callable[[str], Location] | None = None) -> dict[str, Any]:
    """Declared defaults <- var-file values <- --var values, each checked against its type.

    `declared` maps names to VarSpec models. Raises UsageError (exit 64) naming the var,
    located in the var file (`file_origins`) or at the declaration (`declared_at`) when known.
    """
    origins = file_origins or {}
    values: dict[str, Any] = {}
    overrides: list[tuple[Mapping[str, Any], bool]] = [(file_vars or {}, False),
                                                      (cli_vars or {}, True)]
    for source, is_text in overrides:
        for name in source:
            if name not in declared:
                close = difflib.get_close_matches(name, list(declared), n=1)
                hint = (f"did you mean `{close[0]}`?" if close else
                        f"declared vars: {', '.join(declared) or '(none)'}")
                raise UsageError(f"unknown var `{name}`", hint=hint,
                                 location=None if is_text else origins.get(name))
    for name, spec in declared.items():
        value, from_text, given = spec.default, False, False
        for source, is_text in overrides:
            if name in source:
                value, from_text, given = source[name], is_text, True
        where = origins.get(name) if given and not from_text else None
        if value is None and not given:
            if spec.required:
                raise UsageError(f"var `{name}` is required",
                                 hint=f"pass it with --var {name}=VALUE, or give it a `default:`",
                                 location=declared_at(name) if declared_at else None)
            values[name] = None
            continue
        declared_hint = f" at {declared_at(name)}" if declared_at else " in the runbook"
        try:
            typed = _coerce(spec.type, value, from_text)
        except _Mismatch as exc:
            raise UsageError(f"var `{name}` must be {exc.expected}, got {_show(value)}",
                             hint=f"it is declared `type: {spec.type}`{declared_hint}",
                             location=where) from None
        if spec.choices is not None and typed not in spec.choices:
            raise UsageError(f"var `{name}` must be one of {_choices(spec.choices)}, "
                             f"got {_show(typed)}",
                             hint=f"its `choices` are declared{declared_hint}", location=where)
        values[name] = typed
    return values


def _coerce(declared_type: str, value: Any, from_text: bool) -> Any:
    """`value` as `declared_type`; _Mismatch when it does not fit."""
    if declared_type == "any":
        return _from_text(value) if from_text else value
    expected = _EXPECTED[declared_type]
    if declared_type in ("string", "str"):
        if isinstance(value, dict | list):
            raise _Mismatch(expected)
        return value if isinstance(value, str) else _scalar_text(value)
    if declared_type == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT_TEXT.match(value):
            return int(value)
        raise _Mismatch(expected)
    if declared_type == "float":
        if isinstance(value, bool | dict | list):
            raise _Mismatch(expected)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise _Mismatch(expected) from None
    if declared_type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.strip().lower()]
        raise _Mismatch(expected)
    structured = _from_text(value) if from_text else value
    if declared_type == "list" and isinstance(structured, list):
        return structured
    if declared_type == "map" and isinstance(structured, dict):
        return structured
    raise _Mismatch(expected)


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _choices(choices: Sequence[Any]) -> str:
    return ", ".join(str(c) for c in choices)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _from_text(text: Any) -> Any:
    """--var values: JSON/YAML flow syntax for lists and maps, text otherwise."""
    from iacorch.runbook.source import load_text

    if not isinstance(text, str):
        return text
    stripped = text.strip()
    if stripped[:1] in ("[", "{") and "\n" not in stripped:
        try:  # through the hardened loader: a --var can be as hostile as a runbook
            return load_text(f"value: {stripped}", "--var").data["value"]
        except (RunbookError, KeyError):
            return text
    return text
