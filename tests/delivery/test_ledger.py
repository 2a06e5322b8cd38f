"""The sent-log on SQLite and on a real PostgreSQL: claims are exclusive, records guarded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from bot.ledger import SCHEMA_VERSION, DeliveryKey, Ledger


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    return request.getfixturevalue("pg_url")


KEY = DeliveryKey("brief:one", "outbox")


def test_a_key_is_claimed_once_and_recorded_only_by_its_holder(ledger_url):
    first, second = Ledger(ledger_url, worker="w1"), Ledger(ledger_url, worker="w2")
    assert first.claim(KEY, content_hash="abc")
    assert not second.claim(KEY)
    assert not second.record_sent(KEY, remote_id="x")  # w2 does not hold the claim
    assert first.record_sent(KEY, remote_id="42", remote_url="https://example.org/42")
    row = first.get(KEY)
    assert (row.state, row.remote_id, row.worker, row.attempts) == ("sent", "42", "w1", 1)
    assert not first.record_sent(KEY)  # no longer claimed
    assert first.counts() == {"sent": 1}


def test_an_expired_lease_becomes_unknown_and_can_be_reclaimed(ledger_url):
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    dead = Ledger(ledger_url, worker="dead", lease=timedelta(minutes=5), clock=lambda: clock[0])
    alive = Ledger(ledger_url, worker="alive", lease=timedelta(minutes=5),
                   clock=lambda: clock[0])
    assert dead.claim(KEY)
    assert alive.expire_leases() == 0
    clock[0] += timedelta(minutes=6)
    assert alive.expire_leases() == 1
    assert alive.get(KEY).state == "unknown"
    assert not dead.record_sent(KEY)  # the dead worker's late answer is refused
    assert alive.reclaim(KEY, from_states=["unknown"])
    assert not dead.reclaim(KEY, from_states=["unknown"])
    assert alive.record_sent(KEY)
    assert alive.get(KEY).attempts == 2


def test_failed_deliveries_are_retried_only_when_due(ledger_url):
    ledger = Ledger(ledger_url)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ledger.claim(KEY)
    ledger.record_failure(KEY, "503", retry_at=now + timedelta(minutes=1))
    assert not ledger.reclaim(KEY, from_states=["failed"], due_by=now)
    assert ledger.reclaim(KEY, from_states=["failed"], due_by=now + timedelta(minutes=1))
    ledger.record_failure(KEY, "gone", retry_at=None)
    assert ledger.get(KEY).state == "dead"
    assert ledger.requeue(states=["dead"]) == 1
    assert ledger.get(KEY).state == "failed"


def test_skip_never_overrides_a_sent_row(ledger_url):
    ledger = Ledger(ledger_url)
    assert ledger.mark_skipped(DeliveryKey("brief:a", "outbox"), "old")
    ledger.claim(KEY)
    ledger.record_sent(KEY)
    assert not ledger.mark_skipped(KEY, "operator", replace=True)
    assert ledger.get(KEY).state == "sent"


def test_schema_is_versioned_and_upgrade_is_idempotent(ledger_url):
    ledger = Ledger(ledger_url)
    assert ledger.upgrade() == SCHEMA_VERSION
    with ledger.engine.connect() as conn:
        version = conn.execute(
            text("SELECT value FROM briefbot_meta WHERE key = 'schema_version'")).scalar()
    assert int(version) == SCHEMA_VERSION
    assert Ledger(ledger_url).upgrade() == SCHEMA_VERSION


def test_sqlite_ledger_uses_wal(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_readonly_ledger_creates_nothing(tmp_path):
    path = tmp_path / "missing" / "ledger.sqlite3"
    ledger = Ledger(f"sqlite:///{path}", readonly=True)
    assert ledger.get(KEY) is None and ledger.counts() == {}
    assert not path.exists()
