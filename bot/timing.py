"""Durations, digest schedules and catch-up after downtime: the rules of *when*, as plain data.

A leaf: config validates with it and the daemon builds APScheduler triggers from what it
returns, so checking a configuration never loads the scheduler or the database layer.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
READABLE = re.compile(r"^\s*(daily|(?:mon|tue|wed|thu|fri|sat|sun)(?:\s*,\s*(?:mon|tue|wed|thu|"
                      r"fri|sat|sun))*)\s+(\d{1,2}):(\d{2})\s*$", re.IGNORECASE)
CRON_FIELDS = ("second", "minute", "hour", "day", "month", "day_of_week")
# Each cron field's range and the names it accepts, as APScheduler's CronTrigger reads them.
_FIELD_RULES: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "second": (0, 59, ()), "minute": (0, 59, ()), "hour": (0, 23, ()), "day": (1, 31, ()),
    "month": (1, 12, MONTHS), "day_of_week": (0, 7, DAYS),
}
_CRON_ATOM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


def parse_duration(value: Any) -> timedelta:
    """`"90s"`, `"10m"`, `"1h30m"`, `"7d"`, or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().lower()
        parts = _DURATION.findall(text)
        if parts and _DURATION.sub("", text).strip() == "":
            return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
    raise ValueError(f'expected a duration such as "30s", "10m", "2h" or "7d", got {value!r}')


def format_duration(value: timedelta) -> str:
    """The way a person writes it: `12h`, `1h30m`, `90s` (never `PT12H`)."""
    seconds = value.total_seconds()
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    parts, rest = [], round(seconds)
    for unit in ("w", "d", "h", "m", "s"):
        count, rest = divmod(rest, int(_UNITS[unit]))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def parse_publish_interval(value: str) -> timedelta:
    """`schedule.publish`: how often the daemon looks for due briefs; at least a second."""
    interval = parse_duration(value)
    if interval < timedelta(seconds=1):
        raise ValueError("must be at least 1s")
    return interval


def parse_digest_schedule(value: str) -> dict[str, str]:
    """`"mon 08:00"`, `"daily 07:30"`, `"mon,thu 09:00"`, or a 5-field cron expression
    (a 6-field one with seconds first, for tests and the impatient), as cron fields."""
    text = value.strip()
    readable = READABLE.match(text)
    if readable:
        days, hour, minute = readable.groups()
        if int(hour) > 23 or int(minute) > 59:
            raise ValueError(f"{hour}:{minute} is not a time of day")
        fields = {"second": "0", "minute": str(int(minute)), "hour": str(int(hour)),
                  "day": "*", "month": "*",
                  "day_of_week": "*" if days.lower() == "daily" else days.replace(" ", "").lower()}
    else:
        parts = text.lower().split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise ValueError("expected a day and a time, or 5 cron fields")
        fields = dict(zip(CRON_FIELDS, parts, strict=True))
    for name, expression in fields.items():
        _check_cron_field(name, expression)
    return fields


def schedule_error(value: str, error: Exception) -> str:
    return (f'schedule.digest: {value!r} is not a schedule ({error}); write "mon 08:00", '
            '"daily 07:30" or a cron expression such as "0 8 * * mon"')


def _check_cron_field(name: str, expression: str) -> None:
    low, high, names = _FIELD_RULES[name]
    for atom in expression.split(","):
        match = _CRON_ATOM.match(atom)
        if not match:
            raise ValueError(f"{atom!r} is not a valid {name.replace('_', ' ')}")
        if match.group(1) == "*":
            continue
        for bound in match.group(1).split("-"):
            number = names.index(bound) if bound in names else (
                int(bound) if bound.isdigit() else None)
            if number is None or not (0 if names else low) <= number <= high:
                raise ValueError(f"{bound!r} is out of range for {name.replace('_', ' ')}")


def split_missed(fire_times: list[datetime], now: datetime,
                 grace: timedelta) -> tuple[datetime | None, list[datetime]]:
    """The latest fire time still within its grace is due (once, however many were missed);
    every other one is missed."""
    if fire_times and now - fire_times[-1] <= grace:
        return fire_times[-1], fire_times[:-1]
    return None, fire_times
