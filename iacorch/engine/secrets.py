"""Secrets are resolved once per run, from the environment or files, and never stored."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iacorch.errors import UsageError


def resolve_secrets(specs: Mapping[str, Any], root: Path) -> dict[str, str]:
    """name -> value for every declared secret; a missing one stops the run before it starts."""
    values: dict[str, str] = {}
    for name, spec in specs.items():
        if spec.env is not None:
            value = os.environ.get(spec.env)
            if value is None:
                raise UsageError(f"secret `{name}` comes from ${spec.env}, which is not set",
                                 hint=f"export {spec.env}=... before running")
            values[name] = value
            continue
        path = (root / spec.file).expanduser()
        try:
            values[name] = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"secret `{name}` comes from {path}, which cannot be read "
                             f"({exc.strerror})", hint="check the path and its permissions"
                             ) from None
    return values
