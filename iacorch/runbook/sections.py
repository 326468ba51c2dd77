"""Checks of the runbook's top-level sections that name other parts of it: `schedules`
(cron, time zone, notify channels) and `drift.ignore` (stages, dates).

Each check yields `Finding`s for the compiler to locate.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from iacorch.model.runbook import Runbook
from iacorch.runbook.checks import Finding
from iacorch.runbook.templating import did_you_mean

CRON_FIELDS = "minute hour day-of-month month day-of-week"
_CRON_HINT = f"write 5 fields ({CRON_FIELDS}), e.g. '0 2 * * *', or 6 with seconds first"
_ZONE_HINT = "use an IANA name such as Europe/Paris, America/New_York or UTC"


def check_schedules(runbook: Runbook) -> Iterator[Finding]:
    """Every schedule: a valid cron expression and zone, notify channels that exist."""
    for name, schedule in runbook.schedules.items():
        where = ("schedules", name)
        problem = cron_problem(schedule.cron)
        if problem:
            yield Finding(f"`schedules.{name}.cron`: {problem}", (*where, "cron"), _CRON_HINT)
        if schedule.timezone is not None and (zone := zone_problem(schedule.timezone)):
            yield Finding(f"`schedules.{name}.timezone`: {zone[0]}", (*where, "timezone"),
                          zone[1])
        for index, channel in enumerate(schedule.notify):
            if channel not in runbook.notify:
                yield Finding(f"`schedules.{name}.notify`: `{channel}` is not a channel under "
                              "`notify:`", (*where, "notify", index),
                              did_you_mean(channel, list(runbook.notify))
                              or f"declare it, e.g. `notify: {{{channel}: {{webhook: URL}}}}`")


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a usable cron expression, or None when it is."""
    from croniter import croniter  # only runbooks with schedules pay for it

    fields = expression.split()
    if len(fields) not in (5, 6):
        return (f"cron {expression!r} has {len(fields)} field{'s' * (len(fields) != 1)}, "
                "not 5 or 6")
    try:
        valid = croniter.is_valid(expression, second_at_beginning=True)
    except Exception:  # noqa: BLE001 - croniter raises assorted errors on odd input
        valid = False
    return None if valid else f"cron {expression!r} is not a valid cron expression"


def zone_problem(name: str) -> tuple[str, str] | None:
    """(message, hint) when `name` is not a time zone this machine knows, else None."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

    try:
        ZoneInfo(name)
        return None
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    close = difflib.get_close_matches(name, sorted(available_timezones()), n=1)
    hint = f"did you mean {close[0]!r}? U{_ZONE_HINT[1:]}" if close else _ZONE_HINT
    return f"unknown time zone {name[:60]!r}", hint


def check_drift(runbook: Runbook) -> Iterator[Finding]:
    """`drift.ignore` entries name stages that exist (globs allowed) and real dates."""
    stages = list(runbook.stages)
    for index, rule in enumerate(runbook.drift.ignore):
        where = ("drift", "ignore", index)
        if not any(fnmatch.fnmatchcase(stage, rule.stage) for stage in stages):
            yield Finding(f"`drift.ignore` names stage `{rule.stage}`, which is not a stage",
                          (*where, "stage"), did_you_mean(rule.stage, stages)
                          or f"stages: {', '.join(stages[:10])}")
        if rule.until is not None and not _is_date(rule.until):
            yield Finding(f"`until: {rule.until}` is not a date", (*where, "until"),
                          "write it as YYYY-MM-DD, e.g. until: 2026-12-31")


def _is_date(text: Any) -> bool:
    for parse in (date.fromisoformat, datetime.fromisoformat):
        try:
            parse(str(text))
            return True
        except ValueError:
            continue
    return False
