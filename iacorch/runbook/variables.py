"""Runbook vars: declared defaults overridden by --var-file and --var, type-checked."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from iacorch.errors import Location, UsageError

_BOOL_TEXT = {"true": True, "yes": True, "on": True, "1": True,
              "false": False, "no": False, "off": False, "0": False}


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
    return dict(document.data), {name: document.locate([name]) for name in document.data}


def _coerce(name: str, declared_type: str, value: Any, from_text: bool) -> Any:
    def wrong(expected: str) -> UsageError:
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        return UsageError(f"var `{name}` must be {expected}, got {shown!r}",
                          hint=f"declared as `type: {declared_type}` in the runbook")

    if declared_type in ("any",):
        return _from_text(value) if from_text else value
    if declared_type in ("string", "str"):
        if isinstance(value, dict | list):
            raise wrong("text")
        return value if isinstance(value, str) else _scalar_text(value)
    if declared_type == "int":
        if isinstance(value, bool):
            raise wrong("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        raise wrong("an integer")
    if declared_type == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise wrong("a number") from None
    if declared_type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.strip().lower()]
        raise wrong("true or false")
    structured = _from_text(value) if from_text else value
    if declared_type == "list" and isinstance(structured, list):
        return structured
    if declared_type == "map" and isinstance(structured, dict):
        return structured
    raise wrong("a list, e.g. '[a, b]'" if declared_type == "list" else "a mapping, e.g. '{a: 1}'")


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _from_text(text: Any) -> Any:
    """--var values: JSON/YAML flow syntax for lists and maps, text otherwise."""
    if not isinstance(text, str):
        return text
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return yaml.load(stripped, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError:
            return text
    return text


def resolve_vars(declared: Mapping[str, Any], *, cli_vars: Mapping[str, str] | None = None,
                 file_vars: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Declared defaults <- var-file values <- --var values, each checked against its type.

    `declared` maps names to VarSpec models. Raises UsageError (exit 64) naming the var.
    """
    values: dict[str, Any] = {}
    overrides: list[tuple[Mapping[str, Any], bool]] = [(file_vars or {}, False),
                                                      (cli_vars or {}, True)]
    for source, _ in overrides:
        for name in source:
            if name not in declared:
                close = difflib.get_close_matches(name, list(declared), n=1)
                hint = (f"did you mean `{close[0]}`?" if close else
                        f"declared vars: {', '.join(declared) or '(none)'}")
                raise UsageError(f"unknown var `{name}`", hint=hint)
    for name, spec in declared.items():
        value, from_text, given = spec.default, False, False
        for source, is_text in overrides:
            if name in source:
                value, from_text, given = source[name], is_text, True
        if value is None and not given:
            if spec.required:
                raise UsageError(f"var `{name}` is required",
                                 hint=f"pass it with --var {name}=VALUE")
            values[name] = None
            continue
        typed = _coerce(name, spec.type, value, from_text)
        if spec.choices is not None and typed not in spec.choices:
            raise UsageError(f"var `{name}` must be one of {spec.choices}, got {typed!r}")
        values[name] = typed
    return values
