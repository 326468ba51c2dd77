"""Saved plans an approved gate showed: applied byte for byte as approved, or not at all."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any


class ApprovedPlans:
    """The saved plans approved gates showed: applied as approved, or not at all."""

    def __init__(self) -> None:
        self.plans: dict[str, str] = {}          # stage -> saved plan file
        self._sha256: dict[str, str] = {}

    def take(self, gate_details: Mapping[str, Any]) -> None:
        """Remember the saved plans an approved gate showed, and their sha256."""
        for stage_id, info in gate_details.get("planned", {}).items():
            if info.get("saved_plan"):
                self.plans[stage_id] = info["saved_plan"]
                if info.get("sha256"):
                    self._sha256[stage_id] = info["sha256"]

    def swapped(self, stage_id: str) -> str | None:
        """Why the file about to be applied is not byte for byte the approved plan, or None."""
        path, expected = self.plans[stage_id], self._sha256.get(stage_id)
        if expected is None or not os.path.isfile(path):
            return None  # the driver reports a missing plan; pulumi plans carry no hash
        with open(path, "rb") as handle:
            actual = hashlib.sha256(handle.read()).hexdigest()
        if actual == expected:
            return None
        return (f"the saved plan {path} is not the one approved (sha256 {actual[:12]}, "
                f"approved {expected[:12]}); nothing was applied")


def discard_saved_plans(saved_plans: Mapping[str, str]) -> None:
    """Saved plans hold variable values in clear: remove the ones that will not be applied."""
    for path in saved_plans.values():
        if os.path.isfile(path):
            os.remove(path)
