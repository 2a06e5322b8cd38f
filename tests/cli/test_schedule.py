"""Schedules: readable values, DST that neither skips nor doubles, missed digests after downtime."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.config import ConfigError, parse_config
from bot.schedule import digest_trigger
from bot.timing import parse_publish_interval, split_missed

# Both DST transitions of 2026 in each zone, with the week around them.
TRANSITIONS = {
    "Europe/London": [datetime(2026, 3, 25, tzinfo=UTC), datetime(2026, 10, 21, tzinfo=UTC)],
    "America/New_York": [datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 10, 28, tzinfo=UTC)],
}


@pytest.mark.parametrize("zone", sorted(TRANSITIONS))
@pytest.mark.parametrize("spec", ["daily 01:30", "daily 02:30", "mon 08:00", "30 1 * * *"])
def test_dst_neither_skips_nor_doubles(zone, spec):
    tz = ZoneInfo(zone)
    trigger = digest_trigger(spec, tz)
    for start in TRANSITIONS[zone]:
        fires = trigger.fire_times(start, start + timedelta(days=14))
        local_days = Counter(f.astimezone(tz).date() for f in fires)
        assert all(n == 1 for n in local_days.values()), fires
        expected_days = 14 if spec.startswith(("daily", "30")) else 2
        assert len(fires) == expected_days, fires
        for fire in fires:
            local = fire.astimezone(tz)
            wanted = {"daily 01:30": (1, 30), "daily 02:30": (2, 30), "mon 08:00": (8, 0),
                      "30 1 * * *": (1, 30)}[spec]
            # A time that does not exist (spring forward) fires just after the gap.
            assert (local.hour, local.minute) == wanted or local.hour == wanted[0] + 1


def test_readable_schedules_and_errors_name_the_key():
    tz = ZoneInfo("Europe/London")
    monday = digest_trigger("mon 08:00", tz).fire_times(
        datetime(2026, 11, 28, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC))
    assert [f.astimezone(tz).strftime("%a %H:%M") for f in monday] == ["Mon 08:00", "Mon 08:00"]
    assert parse_publish_interval("10m") == timedelta(minutes=10)
    with pytest.raises(ConfigError, match="schedule.digest"):
        parse_config({"schedule": {"digest": "every blue moon"}})
    with pytest.raises(ConfigError, match="schedule.publish"):
        parse_config({"schedule": {"publish": "often"}})


def test_missed_digest_within_grace_is_due_once_and_older_ones_are_missed():
    tz = ZoneInfo("UTC")
    trigger = digest_trigger("mon 08:00", tz)
    last = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # the last digest handled
    back = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)  # three Mondays later, 90 minutes late
    due, missed = split_missed(trigger.fire_times(last, back), back, timedelta(hours=12))
    assert due == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert missed == [datetime(2026, 11, 9, 8, 0, tzinfo=UTC),
                      datetime(2026, 11, 16, 8, 0, tzinfo=UTC)]
    late = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # back after the grace
    due, missed = split_missed(trigger.fire_times(last, late), late, timedelta(hours=12))
    assert due is None and len(missed) == 3
