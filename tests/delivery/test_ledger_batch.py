"""Batch claims and records in the sent-log, on SQLite and PostgreSQL: the same lock and lease
rules as one key at a time, N keys per statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.ledger import DeliveryKey, Ledger, Outcome


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite3'}?synchronous=full"
    return request.getfixturevalue("pg_url")


def test_batch_claim_takes_only_free_keys_and_locks_them(ledger_url):
    a, b = Ledger(ledger_url, worker="h:1:a"), Ledger(ledger_url, worker="h:2:b")
    try:
        assert a.claim(DeliveryKey("digest:W1", "mg", "x2@example.net"))
        got = a.claim_batch("digest:W1", "mg", [f"x{n}@example.net" for n in range(5)])
        assert got == {"x0@example.net", "x1@example.net", "x3@example.net", "x4@example.net"}
        assert b.claim_batch("digest:W1", "mg", ["x0@example.net", "x9@example.net"]) == {
            "x9@example.net"}
        row = a.get(DeliveryKey("digest:W1", "mg", "x0@example.net"))
        assert (row.state, row.worker, row.attempts) == ("claimed", "h:1:a", 1)
        assert row.lease_until > datetime.now(UTC)
    finally:
        a.close()
        b.close()


def test_batch_record_writes_each_outcome_while_the_claim_is_held(ledger_url):
    a, b = Ledger(ledger_url, worker="h:1:a"), Ledger(ledger_url, worker="h:2:b")
    names = [f"r{n}@example.net" for n in range(4)]
    retry = datetime(2030, 1, 1, tzinfo=UTC)
    try:
        a.claim_batch("digest:W2", "mg", names[:3])
        b.claim_batch("digest:W2", "mg", names[3:])
        held = a.record_batch("digest:W2", "mg", [
            Outcome(names[0], "sent", remote_id="<id1@mg>"),
            Outcome(names[1], "failed", note="429", retry_at=retry),
            Outcome(names[2], "dead", note="refused"),
            Outcome(names[3], "sent", remote_id="<stolen@mg>"),  # b's claim: not recorded
        ])
        assert held == set(names[:3])
        rows = {r.key.recipient: r for r in a.deliveries(campaign_prefix="digest:W2")}
        assert (rows[names[0]].state, rows[names[0]].remote_id) == ("sent", "<id1@mg>")
        assert rows[names[0]].sent_at is not None and rows[names[0]].lease_until is None
        assert (rows[names[1]].state, rows[names[1]].next_attempt_at) == ("failed", retry)
        assert (rows[names[2]].state, rows[names[2]].last_error) == ("dead", "refused")
        assert rows[names[3]].state == "claimed" and rows[names[3]].remote_id is None
        found = a.open_rows("digest:W2", "mg", [names[1], "nobody@example.net"])
        assert list(found) == [names[1]]
        assert (found[names[1]].state, found[names[1]].next_attempt_at) == ("failed", retry)
    finally:
        a.close()
        b.close()


def test_a_batch_claimed_by_a_dead_worker_becomes_unknown_as_a_whole(ledger_url):
    clock = [datetime(2026, 12, 1, tzinfo=UTC)]
    a = Ledger(ledger_url, worker="h:1:a", lease=timedelta(minutes=1), clock=lambda: clock[0])
    try:
        a.claim_batch("digest:W3", "mg", ["u1@example.net", "u2@example.net"])
        clock[0] += timedelta(minutes=2)
        assert a.expire_leases() == 2
        assert {r.state for r in a.deliveries(campaign_prefix="digest:W3")} == {"unknown"}
        assert a.record_batch("digest:W3", "mg", [Outcome("u1@example.net", "sent")]) == set()
    finally:
        a.close()


def test_a_bad_synchronous_setting_is_named(tmp_path):
    from bot.ledger import LedgerError

    with pytest.raises(LedgerError, match="synchronous=sometimes"):
        Ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}?synchronous=sometimes")
