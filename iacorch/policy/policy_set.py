"""Finding and reading a policy set: the Rego modules and data files of one directory.

A policy set comes from `--policy DIR` or `$IACORCH_POLICY_DIR`, never from a runbook:
the people a policy constrains do not get to choose it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iacorch.errors import Location, PolicyError

POLICY_DIR_ENV = "IACORCH_POLICY_DIR"
PACKAGE = "iacorch"                 # the Rego package whose deny/require_gate/approvers count
TEST_SUFFIX = "_test.rego"          # unit tests: run by `iacorch policy test`, not enforced
_DATA_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The files of a policy directory, parsed only as far as reading goes."""

    directory: Path
    modules: Mapping[str, str]        # file name -> Rego source (tests included)
    data: Mapping[str, Any]           # the data files merged: the `data` document of Rego
    digest: str                       # sha256 over every file name and content

    @property
    def rules(self) -> dict[str, str]:
        """The modules that are enforced: every module but the unit tests."""
        return {name: source for name, source in self.modules.items()
                if not name.endswith(TEST_SUFFIX)}

    @property
    def short_digest(self) -> str:
        return self.digest[:12]


def policy_directory(flag: str | None) -> Path | None:
    """The policy directory of `--policy`, else of $IACORCH_POLICY_DIR, else none."""
    chosen = flag or os.environ.get(POLICY_DIR_ENV) or None
    return Path(chosen) if chosen else None


def load_policy_set(directory: str | Path) -> PolicySet:
    """Read every `*.rego` and data file (`*.yaml`, `*.yml`, `*.json`) of `directory`."""
    root = Path(directory)
    if not root.is_dir():
        raise PolicyError(f"policy directory {root} does not exist or is not a directory",
                          hint=f"set --policy or ${POLICY_DIR_ENV} to a directory of .rego "
                               "files; nothing runs until the policy can be read")
    modules: dict[str, str] = {}
    data: dict[str, Any] = {}
    digest = hashlib.sha256()
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        if path.suffix != ".rego" and path.suffix not in _DATA_SUFFIXES:
            continue
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from None
        digest.update(f"{path.name}\0{len(raw)}\0".encode())
        digest.update(raw)
        text = _decode(path, raw)
        if path.suffix == ".rego":
            modules[path.name] = text
        else:
            _merge(data, _load_data(path, text), path)
    if not any(not name.endswith(TEST_SUFFIX) for name in modules):
        raise PolicyError(f"policy directory {root} holds no .rego policy",
                          hint=f"add a module with `package {PACKAGE}` and its deny, "
                               "require_gate or approvers rules (docs/policy.md)")
    return PolicySet(root, modules, data, digest.hexdigest())


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy file {path} is not UTF-8 text (byte {exc.start})") from None


def _load_data(path: Path, text: str) -> Mapping[str, Any]:
    """A data file: a mapping at the top, like `groups: {sre: [alice, bob]}`."""
    if path.suffix == ".json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{Location(str(path), exc.lineno, exc.colno)}: "
                              f"invalid JSON: {exc.msg}") from None
    else:
        import yaml

        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = Location(str(path), mark.line + 1, mark.column + 1) if mark else path
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise PolicyError(f"{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise PolicyError(f"policy data file {path} must be a mapping at the top",
                          hint="for example `groups: {sre: [alice, bob]}`")
    return loaded


def _merge(into: dict[str, Any], loaded: Mapping[str, Any], path: Path) -> None:
    for key, value in loaded.items():
        if key in into:
            raise PolicyError(f"policy data key `{key}` is defined twice (again in {path})",
                              hint="each top-level key of the data files must be unique")
        into[key] = value
