"""`iacorch policy test DIR`: the policy's own Rego unit tests, rules named `test_*`.

A test passes when its rule is true. Tests set their input with `with input.<field> as`:
rego-cpp 1.5 cannot evaluate `with input as {...}` over rules that call built-ins, and
reports that as an error naming the test (docs/policy.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from iacorch.errors import PolicyError

from .policy_set import PolicySet
from .rego import RegoEngine

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.MULTILINE)
_WHOLE_INPUT_BUG = "has no field"   # rego-cpp's words for the `with input as` limitation


@dataclass(frozen=True, slots=True)
class TestOutcome:
    file: str
    name: str                 # package.rule
    passed: bool
    error: str | None = None


def run_policy_tests(policy: PolicySet) -> list[TestOutcome]:
    """Every `test_*` rule of every module, each evaluated on its own."""
    engine = RegoEngine(policy.modules, policy.data, policy.directory)
    outcomes: list[TestOutcome] = []
    for file, source in policy.modules.items():
        package = _PACKAGE.search(source)
        if package is None:
            continue
        for rule in dict.fromkeys(_TEST_RULE.findall(source)):
            name = f"{package.group(1)}.{rule}"
            try:
                value = engine.query(f"data.{name}")
            except PolicyError as exc:
                error = exc.message
                if _WHOLE_INPUT_BUG in error:
                    error += (" (write `with input.stages as ...` per field: rego-cpp cannot "
                              "replace the whole input here)")
                outcomes.append(TestOutcome(file, name, False, error))
                continue
            outcomes.append(TestOutcome(file, name, value is True))
    return outcomes
