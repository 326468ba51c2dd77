"""Cron expressions and time zones: when a schedule fires next (croniter does the math).

Five fields are classic cron (minute hour day-of-month month day-of-week); a sixth
field *first* gives seconds (`*/10 * * * * *` is every ten seconds), as in Quartz,
Spring and node-cron. Times are computed in the schedule's zone, so `0 2 * * *` in
Europe/Paris stays at 02:00 across daylight-saving changes (a 02:30 that does not
exist on the spring-forward day runs at 03:00).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_CLASSIC_FIELDS = 5
_WITH_SECONDS = 6


class CronProblem(ValueError):
    """A cron expression or a time zone that cannot be used; the message says why."""


def zone(name: str | None) -> tzinfo:
    """The named IANA zone, or this machine's zone when `name` is None."""
    if name is None:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronProblem(f"unknown time zone {name!r}; use an IANA name such as "
                          "Europe/Paris, America/New_York or UTC") from None


def local_zone() -> tzinfo:
    """This machine's zone as a real IANA zone where it can be found ($TZ, /etc/localtime),
    so that future fire times follow daylight-saving rules; else the current fixed offset."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo" + os.sep in target:
            candidates.append(target.split("zoneinfo" + os.sep, 1)[1])
    except OSError:
        pass
    timezone_file = Path("/etc/timezone")
    if timezone_file.is_file():
        candidates.append(timezone_file.read_text(encoding="utf-8").strip())
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return datetime.now().astimezone().tzinfo or UTC


def zone_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or str(tz)


def has_seconds(expression: str) -> bool:
    return len(expression.split()) == _WITH_SECONDS


def check(expression: str) -> None:
    """CronProblem unless `expression` is a valid 5-field (or 6-field, seconds first) cron."""
    from croniter import croniter

    fields = expression.split()
    if len(fields) not in (_CLASSIC_FIELDS, _WITH_SECONDS):
        raise CronProblem(f"cron {expression!r} has {len(fields)} fields; use 5 (minute hour "
                          "day month weekday) or 6 with seconds first")
    if not croniter.is_valid(expression, second_at_beginning=True):
        raise CronProblem(f"cron {expression!r} is not a valid cron expression")


def next_fires(expression: str, tz: tzinfo, after: float, count: int = 1) -> list[datetime]:
    """The next `count` fire times strictly after the timestamp `after`, aware, in `tz`."""
    from croniter import croniter

    check(expression)
    start = datetime.fromtimestamp(after, tz)
    times = croniter(expression, start, second_at_beginning=True)
    return [times.get_next(datetime) for _ in range(count)]


def next_fire(expression: str, tz: tzinfo, after: float) -> float:
    """The next fire time strictly after `after`, as a timestamp."""
    return next_fires(expression, tz, after)[0].timestamp()


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
