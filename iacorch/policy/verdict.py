"""What a policy says about one input: its denials, the gates it requires, its groups.

The three rules of package `iacorch` (docs/policy.md):
  deny          set of messages, or of {"msg": ..., "stage": id}
  require_gate  set of {"name", "stages": [ids], "group" | "approvers", "require",
                "self_approval" (default false), "declare" (default false), "message"}
  approvers     object: group -> list of users (usually `approvers := data.groups`)
Anything else in their output is a broken policy, refused like one that does not parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iacorch.errors import PolicyError
from iacorch.model.runbook import STAGE_ID

from .policy_set import PACKAGE
from .rego import UNDEFINED, RegoEngine


@dataclass(frozen=True, slots=True)
class Denial:
    message: str
    stage: str | None = None            # where it applies; None: the runbook as a whole


@dataclass(frozen=True, slots=True)
class GateRequirement:
    """Stages that must wait behind a gate decided by `require` of `approvers`."""

    name: str                           # the id of the gate the policy adds
    stages: tuple[str, ...]
    approvers: tuple[str, ...]          # users, groups resolved
    require: int
    group: str | None = None
    self_approval: bool = False         # may the person who started the run approve?
    declare: bool = False               # true: the runbook must declare it; never added
    message: str | None = None

    @property
    def who(self) -> str:
        """"2 of group sre" / "1 of alice, bob"."""
        return (f"{self.require} of group {self.group}" if self.group
                else f"{self.require} of {', '.join(self.approvers)}")


@dataclass(frozen=True, slots=True)
class Verdict:
    denials: tuple[Denial, ...]
    requirements: tuple[GateRequirement, ...]
    groups: Mapping[str, tuple[str, ...]]


# One query for the three rules (rego-cpp pays a pass over the input per query); each is
# wrapped in a comprehension so that a rule the policy lacks gives [] instead of making
# the whole query undefined.
_QUERY = "x := {" + ", ".join(f'"{rule}": [v | v := data.{PACKAGE}.{rule}]'
                              for rule in ("deny", "require_gate", "approvers")) + "}"


def evaluate(engine: RegoEngine, input_doc: Mapping[str, Any]) -> Verdict:
    """Set the input and read the three rules (a rule the policy lacks says nothing)."""
    engine.set_input(input_doc)
    found = engine.binding(_QUERY, "x")
    rules = {rule: values[0] if values else UNDEFINED for rule, values in found.items()}
    groups = _groups(rules["approvers"])
    denials = tuple(_denial(entry) for entry in _entries(rules["deny"], "deny"))
    known = input_doc["stages"]
    requirements: dict[str, GateRequirement] = {}
    for entry in _entries(rules["require_gate"], "require_gate"):
        requirement = _requirement(entry, groups, known)
        earlier = requirements.get(requirement.name)
        if earlier is not None and earlier != requirement:
            if (earlier.approvers, earlier.require) != (requirement.approvers,
                                                         requirement.require):
                raise PolicyError(f"require_gate `{requirement.name}` is produced twice with "
                                  "different approvers or quorum",
                                  hint="give each requirement its own `name`")
            requirement = GateRequirement(**{  # the same gate for more stages: one gate
                **{f: getattr(earlier, f) for f in earlier.__dataclass_fields__},
                "stages": tuple(dict.fromkeys(earlier.stages + requirement.stages))})
        requirements[requirement.name] = requirement
    return Verdict(denials, tuple(requirements.values()), groups)


def _entries(value: Any, rule: str) -> list[Any]:
    if value is UNDEFINED:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"policy rule `{rule}` must be a set (`{rule} contains ... if`), "
                          f"got {type(value).__name__}")
    return value


def _groups(value: Any) -> dict[str, tuple[str, ...]]:
    if value is UNDEFINED:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(users, list) and all(isinstance(u, str) for u in users)
            for users in value.values()):
        raise PolicyError("policy rule `approvers` must be an object of group -> list of "
                          "user names", hint="e.g. `approvers := data.groups` with a data "
                                             "file `groups: {sre: [alice, bob]}`")
    return {group: tuple(users) for group, users in value.items()}


def _denial(entry: Any) -> Denial:
    if isinstance(entry, str):
        return Denial(entry)
    if isinstance(entry, dict) and isinstance(entry.get("msg"), str) \
            and isinstance(entry.get("stage"), str | None):
        return Denial(entry["msg"], entry.get("stage"))
    raise PolicyError(f"a `deny` entry must be a message or {{\"msg\": ..., \"stage\": ...}}, "
                      f"got {entry!r}")


def _requirement(entry: Any, groups: Mapping[str, tuple[str, ...]],
                 known: Mapping[str, Any]) -> GateRequirement:
    if not isinstance(entry, dict):
        raise PolicyError(f"a `require_gate` entry must be an object, got {entry!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not STAGE_ID.match(name):
        raise PolicyError(f"require_gate needs a `name` usable as a stage id, got {name!r}",
                          hint="e.g. \"name\": \"prod-sre-approval\"")
    stages = entry.get("stages", [entry["stage"]] if "stage" in entry else None)
    if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
        raise PolicyError(f"require_gate `{name}` needs `stages`: a list of stage ids")
    unknown = [s for s in stages if s not in known]
    if unknown:
        raise PolicyError(f"require_gate `{name}` names `{unknown[0]}`, which is not a stage "
                          "of the plan", hint="take stage ids from `input.stages`")
    group = entry.get("group")
    if group is not None:
        if group not in groups:
            raise PolicyError(f"require_gate `{name}` asks for group `{group}`, which "
                              "`approvers` does not define",
                              hint=f"groups: {', '.join(groups) or 'none'}")
        approvers = groups[group]
    else:
        listed = entry.get("approvers")
        if not isinstance(listed, list) or not listed or not all(
                isinstance(a, str) for a in listed):
            raise PolicyError(f"require_gate `{name}` needs a `group` or a list of "
                              "`approvers`")
        approvers = tuple(listed)
    require = entry.get("require", 1)
    if not isinstance(require, int) or isinstance(require, bool) or require < 1:
        raise PolicyError(f"require_gate `{name}`: `require` must be a whole number >= 1")
    if require > len(approvers):
        raise PolicyError(f"require_gate `{name}` needs {require} approvers but only "
                          f"{len(approvers)} may approve", hint="add people to the group")
    message = entry.get("message")
    return GateRequirement(name, tuple(dict.fromkeys(stages)), tuple(approvers), require,
                           group, bool(entry.get("self_approval", False)),
                           bool(entry.get("declare", False)),
                           message if isinstance(message, str) else None)
