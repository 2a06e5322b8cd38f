"""Durations, digest schedules, digest periods and catch-up after downtime: the rules of *when*.

A leaf: config validates with it and the daemon builds APScheduler triggers from what it
returns, so checking a configuration never loads the scheduler or the database layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
READABLE = re.compile(r"^\s*(daily|(?:mon|tue|wed|thu|fri|sat|sun)(?:\s*,\s*(?:mon|tue|wed|thu|"
                      r"fri|sat|sun))*)\s+(\d{1,2}):(\d{2})\s*$", re.IGNORECASE)
EPOCH = date(2001, 1, 1)  # a Monday: N-day periods are counted from here
_WEEK = re.compile(r"(\d{4})-W(\d{2})")
_DAYS = re.compile(r"(\d{4}-\d{2}-\d{2})(?:\+(\d+)d)?")
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


# -- digest periods ----------------------------------------------------------------------

@dataclass(frozen=True)
class Period:
    """[start, end) in the configured zone; `label` names it in campaigns and on the CLI."""

    start: datetime
    end: datetime
    label: str

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def describe(self) -> str:
        last = (self.end - timedelta(days=1)).date()
        first = self.start.date()
        span = f"{first:%a %d %b %Y}" if first == last else (
            f"{first:%a %d %b} – {last:%a %d %b %Y}")
        return f"{self.label} ({span}, {self.start.tzname()})"


def _period(first: date, days: int, tz: tzinfo) -> Period:
    start = datetime.combine(first, datetime.min.time(), tzinfo=tz)
    end = datetime.combine(first + timedelta(days=days), datetime.min.time(), tzinfo=tz)
    if days == 7 and first.isoweekday() == 1:
        year, week, _ = first.isocalendar()
        label = f"{year}-W{week:02d}"
    elif days == 1:
        label = first.isoformat()
    else:
        label = f"{first.isoformat()}+{days}d"
    return Period(start, end, label)


def period_containing(moment: datetime, tz: tzinfo, days: int = 7) -> Period:
    local = moment.astimezone(tz).date()
    first = EPOCH + timedelta(days=(local - EPOCH).days // days * days)
    return _period(first, days, tz)


def period_for(now: datetime, tz: tzinfo, days: int = 7) -> Period:
    """The period that has just closed at `now`: what a scheduled digest sends."""
    current = period_containing(now, tz, days)
    return _period(current.start.date() - timedelta(days=days), days, tz)


def parse_period(text: str, tz: tzinfo = UTC) -> Period:
    """`2026-W48` (an ISO week), `2026-11-28` (a day) or `2026-11-23+14d` (N days)."""
    value = text.strip()
    try:
        week = _WEEK.fullmatch(value)
        if week:
            return _period(date.fromisocalendar(int(week[1]), int(week[2]), 1), 7, tz)
        days = _DAYS.fullmatch(value)
        if days:
            length = int(days[2] or 1)
            if length < 1:
                raise ValueError("a period lasts at least one day")
            return _period(date.fromisoformat(days[1]), length, tz)
    except ValueError as error:
        raise ValueError(f"period {text!r}: {error}") from None
    raise ValueError(f"period {text!r}: write an ISO week such as 2026-W48, a day such as "
                     "2026-11-28, or a start day and length such as 2026-11-23+14d")

