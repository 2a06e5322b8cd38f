"""Sent-log throughput: claim + record per delivery, against bare INSERT + UPDATE statements.

Both sides do the same durable work per delivery, each statement committed on its own (a claim
must be committed before the network call, the receipt after it): the baseline with the
database driver alone, the ledger with its guards, statements built with SQLAlchemy Core, on
the same table. Runs on SQLite (WAL) and on a throwaway PostgreSQL started for the run (or
BRIEFBOT_TEST_PG_URL).
Each side runs `--rounds` times, alternating, on fresh files or databases; the median counts
(one run alone swings by a third on a shared machine).
Usage: python bench/ledger.py [--count N] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.ledger import DeliveryKey, Ledger  # noqa: E402
from tests.servers import pg  # noqa: E402

# The same table, indexes and columns as the ledger writes: the difference is the ledger alone.
INSERT = ("INSERT INTO deliveries (campaign, channel, recipient, state, attempts, worker, "
          "lease_until, created_at, updated_at) VALUES ({p}, {p}, '', 'claimed', 1, 'w', {p}, "
          "{p}, {p}) ON CONFLICT DO NOTHING")
UPDATE = ("UPDATE deliveries SET state = 'sent', remote_id = {p}, sent_at = {p}, updated_at = {p}, "
          "lease_until = NULL WHERE campaign = {p} AND channel = {p} AND recipient = ''")


def create_schema(url: str) -> None:
    Ledger(url).close()


def bare_sqlite(path: Path, count: int) -> float:
    import sqlite3

    create_schema(f"sqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    insert, update = INSERT.format(p="?"), UPDATE.format(p="?")
    start = time.perf_counter()
    for i in range(count):
        now = datetime.now(UTC).isoformat()
        conn.execute(insert, (f"brief:{i}", "bench", now, now, now))
        conn.execute(update, (str(i), now, now, f"brief:{i}", "bench"))
    elapsed = time.perf_counter() - start
    conn.close()
    return count / elapsed


def bare_postgres(url: str, count: int) -> float:
    import psycopg

    create_schema(url)
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        insert, update = INSERT.format(p="%s"), UPDATE.format(p="%s")
        start = time.perf_counter()
        for i in range(count):
            now = datetime.now(UTC)
            conn.execute(insert, (f"brief:{i}", "bench", now, now, now))
            conn.execute(update, (str(i), now, now, f"brief:{i}", "bench"))
        return count / (time.perf_counter() - start)


def ledger_rate(url: str, count: int) -> float:
    ledger = Ledger(url, worker="bench")
    start = time.perf_counter()
    for i in range(count):
        key = DeliveryKey(f"brief:{i}", "bench")
        assert ledger.claim(key)
        assert ledger.record_sent(key, remote_id=str(i))
    elapsed = time.perf_counter() - start
    ledger.close()
    return count / elapsed


def report(name: str, bare: float, ours: float) -> None:
    print(f"{name:<11} bare INSERT+UPDATE {bare:>8,.0f}/s   ledger claim+record {ours:>8,.0f}/s"
          f"   overhead {bare / ours:.2f}x (target: at most 2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rounds = [(bare_sqlite(Path(tmp) / f"bare{n}.sqlite3", args.count),
                   ledger_rate(f"sqlite:///{tmp}/ledger{n}.sqlite3", args.count))
                  for n in range(args.rounds)]
        report("SQLite", *medians(rounds))
    if not pg.available():
        print("PostgreSQL: not found (install postgresql or set BRIEFBOT_TEST_PG_URL)")
        return
    with pg.server() as server:
        rounds = [(bare_postgres(pg.fresh_database(server), args.count),
                   ledger_rate(pg.fresh_database(server), args.count))
                  for _ in range(args.rounds)]
        report("PostgreSQL", *medians(rounds))


def medians(rounds: list[tuple[float, float]]) -> tuple[float, float]:
    bare, ours = zip(*rounds, strict=True)
    return statistics.median(bare), statistics.median(ours)


if __name__ == "__main__":
    main()
