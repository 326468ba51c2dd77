"""The JSON Schema of the runbook format, for editors: what `iacorch validate` accepts.

pydantic derives the keys and types from the models in `iacorch.model.runbook` (one action
per registered driver; an action model adds its own rules, as `ShellAction` does). The
rules the models check in code are added here, so that an editor flags what `validate`
rejects: exactly one action per stage, none on a gate, `kind` in `stages:`, no `needs`,
`for_each` or gate in `finally:`, stage ids, `run` or `argv`, a cron of 5 or 6 fields, a
var default of its declared type. Quoted numbers and 0/1 booleans, which `validate`
reads as numbers and booleans, are accepted. What needs more than one value's shape
(references between stages, files on disk, cron ranges, time zones) stays `validate`'s.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from iacorch.model.registry import driver_names, load_plugins
from iacorch.model.runbook import (
    APPROVAL_FIELDS,
    EXTENSION_KEY,
    MAX_FOR_EACH,
    SECRET_SOURCES,
    STAGE_ID,
    runbook_model,
)
from iacorch.model.status import StageKind

_INT_TEXT = r"^\s*[+-]?[0-9]+(_[0-9]+)*(\.0*)?\s*$"
_POSITIVE_INT_TEXT = r"^\s*\+?0*[1-9][0-9]*(_[0-9]+)*(\.0*)?\s*$"
_BOOL_TEXT = (r"^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy]([Ee][Ss])?|[Nn][Oo]?|[Oo][Nn]"
              r"|[Oo][Ff][Ff]|[Tt]|[Ff]|1|0)$")
# iacorch.runbook.variables reads var values: these are the texts it takes for each type
_VAR_BOOL_TEXT = r"^\s*([Tt][Rr][Uu][Ee]|[Yy][Ee][Ss]|[Oo][Nn]|1|[Ff][Aa][Ll][Ss][Ee]|[Nn][Oo]" \
                 r"|[Oo][Ff][Ff]|0)\s*$"
_VAR_INT_TEXT = r"^\s*[+-]?[0-9]+\s*$"
_VAR_FLOAT_TEXT = (r"^\s*[+-]?(([0-9]+(_[0-9]+)*)?\.?[0-9]+(_[0-9]+)*([eE][+-]?[0-9]+)?"
                   r"|[0-9]+(_[0-9]+)*\.|[Ii][Nn][Ff]([Ii][Nn][Ii][Tt][Yy])?|[Nn][Aa][Nn])\s*$")
_VAR_DEFAULTS = {
    "int": {"type": ["integer", "string", "null"], "pattern": _VAR_INT_TEXT},
    "float": {"type": ["number", "string", "null"], "pattern": _VAR_FLOAT_TEXT},
    "bool": {"type": ["boolean", "string", "null"], "pattern": _VAR_BOOL_TEXT},
    "list": {"type": ["array", "null"]},
    "map": {"type": ["object", "null"]},
    "string": {"not": {"type": ["array", "object"]}},
    "str": {"not": {"type": ["array", "object"]}},
}
_CRON = r"^\s*\S+(\s+\S+){4,5}\s*$"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the runbook format, for editors (yaml-language-server), with
    the actions of every registered driver."""
    load_plugins()
    schema = runbook_model().model_json_schema(by_alias=True, schema_generator=_AsValidateReads)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://iacorch.dev/schema/runbook-v1.json"
    schema["title"] = "iacorch runbook"
    _add_rules(schema)
    return schema


class _AsValidateReads(GenerateJsonSchema):
    """Numbers and booleans also in the spellings `validate` reads as such.

    The first type of each list is the one the reference documents; the others (a quoted
    `"200"`, `when: 1`) are what pydantic's lax mode accepts too.
    """

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        found = super().int_schema(schema)
        positive = schema.get("ge", 0) >= 1
        return {**found, "type": ["integer", "string"],
                "pattern": _POSITIVE_INT_TEXT if positive else _INT_TEXT}

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        return {"type": ["boolean", "integer", "string"], "minimum": 0, "maximum": 1,
                "pattern": _BOOL_TEXT}


def _set(key: str) -> dict[str, Any]:
    """`key` is present with a value (`key: null` reads as absent, as in the models)."""
    return {"required": [key], "properties": {key: {"not": {"type": "null"}}}}


def _any_set(keys: tuple[str, ...]) -> dict[str, Any]:
    return {"anyOf": [_set(key) for key in keys]}


def _add_rules(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    actions = tuple(driver_names())
    top = schema["properties"]
    schema["patternProperties"] = {
        EXTENSION_KEY.pattern: {"description": "ignored: a place for YAML anchors"}}
    gate = {"properties": {"kind": {"const": StageKind.APPROVAL.value}}, "required": ["kind"]}
    names = {"pattern": STAGE_ID.pattern}
    top["stages"]["propertyNames"] = names
    top["stages"]["additionalProperties"] = {"$ref": "#/$defs/Stage", **_set("kind")}
    top["finally"]["propertyNames"] = names
    top["finally"]["additionalProperties"] = {"$ref": "#/$defs/Stage", "not": {"anyOf": [
        {"required": ["needs"], "properties": {"needs": {"minItems": 1}}},
        _set("for_each"), gate]}}

    stage = defs["Stage"]
    stage["if"] = gate
    stage["then"] = {"not": _any_set(actions)}
    stage["else"] = {"oneOf": [_set(a) for a in actions], "not": _any_set(APPROVAL_FIELDS)}
    stage["properties"]["approvers"]["anyOf"][0]["uniqueItems"] = True
    for option in stage["properties"]["for_each"]["anyOf"]:
        if option.get("type") == "array":
            option.update(items=names, maxItems=MAX_FOR_EACH)
        elif option.get("type") == "object":
            option.update(propertyNames=names, maxProperties=MAX_FOR_EACH)
    for undo in ("RollbackAction", "DestroyAction"):
        defs[undo]["oneOf"] = [_set(a) for a in actions]
    defs["SecretSpec"]["oneOf"] = [_set(source) for source in SECRET_SOURCES]
    defs["SecretSpec"]["allOf"] = [
        {"if": _any_set(("key", "version")), "then": _set("aws_secretsmanager")},
        {"if": _set("region"), "then": _any_set(("aws_secretsmanager", "aws_ssm"))}]
    defs["NotifyChannel"]["oneOf"] = [_set("webhook"), _set("command")]
    defs["ApprovalInput"]["if"] = {"properties": {"type": {"const": "choice"}},
                                   "required": ["type"]}
    defs["ApprovalInput"]["then"] = {"required": ["choices"],
                                     "properties": {"choices": {"type": "array",
                                                                "minItems": 1}}}
    defs["Schedule"]["properties"]["cron"]["pattern"] = _CRON
    defs["VarSpec"]["allOf"] = [
        {"if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
         "then": {"properties": {"default": default}}}
        for kind, default in _VAR_DEFAULTS.items()]
