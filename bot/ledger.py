"""The sent-log: one row per delivery key `(campaign, channel, recipient)`.

The unique constraint on that key *is* the lock. A worker claims a key with one atomic
`INSERT ... ON CONFLICT DO NOTHING` before it calls the outside world, then records the outcome
with one update that only matches while it still holds the claim. The network call happens
outside any transaction. A claim whose lease runs out (its worker died) becomes `unknown`.

This module owns those rules (claims, outcomes, leases, campaigns, the daemon's bookkeeping and
the queries); the tables, migrations, engine and connections live in `bot.ledger_db`, whose
public names are re-exported here.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from bot.ledger_batch import BatchClaims, OpenRow, Outcome  # noqa: F401  (re-exported)
from bot.ledger_db import (  # noqa: F401  (re-exported: callers import these from bot.ledger)
    MIGRATIONS,
    SCHEMA_LOCK,
    SCHEMA_VERSION,
    LedgerDatabase,
    LedgerError,
    create_ledger_engine,
    deliveries,
    describe_database_error,
    heartbeats,
    job_runs,
    meta,
    metadata,
    redact_database_url,
    sent_texts,
    sources,
)
from bot.message import DeliveryKey, State

if TYPE_CHECKING:
    from bot.config import Settings

STATES = tuple(State)


@dataclass(frozen=True)
class Delivery:
    """A row of the sent-log."""

    id: int
    key: DeliveryKey
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    remote_id: str | None
    remote_url: str | None
    content_hash: str | None
    worker: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "key"}
        data.update(key=str(self.key), campaign=self.key.campaign, channel=self.key.channel,
                    recipient=self.key.recipient)
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row(row: Any) -> Delivery:
    m = row._mapping
    return Delivery(
        id=m["id"],
        key=DeliveryKey(m["campaign"], m["channel"], m["recipient"]),
        state=m["state"],
        attempts=m["attempts"],
        next_attempt_at=_utc(m["next_attempt_at"]),
        last_error=m["last_error"],
        remote_id=m["remote_id"],
        remote_url=m["remote_url"],
        content_hash=m["content_hash"],
        worker=m["worker"],
        lease_until=_utc(m["lease_until"]),
        created_at=_utc(m["created_at"]),
        updated_at=_utc(m["updated_at"]),
        sent_at=_utc(m["sent_at"]),
    )


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def wall_clock() -> datetime:
    return datetime.now(UTC)


CLAIM_COLUMNS = ("campaign", "channel", "recipient", "state", "attempts", "worker",
                 "lease_until", "content_hash", "created_at", "updated_at")
#: What a claim whose worker died says: the one unknown outcome that comes from a crash.
CRASH_NOTE = "the worker holding this claim stopped before recording an outcome"
OUTCOME_COLUMNS = ("state", "remote_id", "remote_url", "sent_at", "last_error",
                   "next_attempt_at", "lease_until", "updated_at")


class Ledger(BatchClaims):
    """Claim, record and query deliveries. Safe across threads, processes and machines."""

    def __init__(
        self,
        url: str,
        *,
        worker: str | None = None,
        lease: timedelta = timedelta(minutes=10),
        clock: Callable[[], datetime] = wall_clock,
        readonly: bool = False,
    ):
        self.worker = worker or make_worker_id()
        self.lease = lease
        self.clock = clock
        super().__init__(url, readonly=readonly)
        self._claim = self.prepare(
            self._insert(deliveries)
            .values({name: bindparam(name) for name in CLAIM_COLUMNS})
            .on_conflict_do_nothing(index_elements=["campaign", "channel", "recipient"])
            .returning(deliveries.c.id),
        )
        self._finish_claim = self.prepare(
            update(deliveries)
            .where(
                (deliveries.c.campaign == bindparam("key_campaign"))
                & (deliveries.c.channel == bindparam("key_channel"))
                & (deliveries.c.recipient == bindparam("key_recipient"))
                & (deliveries.c.state == "claimed")
                & (deliveries.c.worker == bindparam("key_worker"))
            )
            .values({name: bindparam(name) for name in OUTCOME_COLUMNS}),
        )
        if not readonly:
            self.upgrade()

    # -- claiming and recording -------------------------------------------------

    def claim(self, key: DeliveryKey, *, content_hash: str | None = None) -> bool:
        """Atomically take a new key. False when someone already has (or had) it."""
        moment = self.clock()
        now = self._time(moment)
        cursor = self.run(
            self._claim, campaign=key.campaign, channel=key.channel, recipient=key.recipient,
            state="claimed", attempts=1, worker=self.worker, content_hash=content_hash,
            lease_until=self._time(moment + self.lease), created_at=now, updated_at=now,
        )
        return cursor.fetchone() is not None

    def reclaim(self, key: DeliveryKey, *, from_states: Iterable[str],
                due_by: datetime | None = None, content_hash: str | None = None) -> bool:
        """Take an existing key back (a retry, an unknown outcome) with one guarded update."""
        now = self.clock()
        condition = _key_filter(key) & deliveries.c.state.in_(list(from_states))
        if due_by is not None:
            condition &= (deliveries.c.next_attempt_at.is_(None)) | (
                deliveries.c.next_attempt_at <= due_by
            )
        values: dict[str, Any] = dict(
            state="claimed", worker=self.worker, lease_until=now + self.lease, updated_at=now,
            attempts=deliveries.c.attempts + 1,
        )
        if content_hash:
            values["content_hash"] = content_hash
        with self._tx() as conn:
            return conn.execute(update(deliveries).where(condition).values(**values)).rowcount == 1

    def _finish(self, key: DeliveryKey, state: str, **values: Any) -> bool:
        """Record an outcome; matches only while this worker still holds the claim."""
        outcome = dict.fromkeys(OUTCOME_COLUMNS)
        outcome.update(values, state=state, updated_at=self._time(self.clock()))
        for name in ("sent_at", "next_attempt_at"):
            if outcome[name] is not None:
                outcome[name] = self._time(outcome[name])
        return self.run(
            self._finish_claim, key_campaign=key.campaign, key_channel=key.channel,
            key_recipient=key.recipient, key_worker=self.worker, **outcome,
        ).rowcount == 1

    def record_sent(self, key: DeliveryKey, *, remote_id: str | None = None,
                    remote_url: str | None = None, note: str | None = None) -> bool:
        """Record a receipt; False if this worker no longer holds the claim."""
        return self._finish(key, "sent", remote_id=remote_id, remote_url=remote_url,
                            sent_at=self.clock(), last_error=note)

    def record_failure(self, key: DeliveryKey, error: str, *,
                       retry_at: datetime | None) -> bool:
        """`retry_at` None means the delivery is dead (permanent, or out of attempts)."""
        state = "failed" if retry_at else "dead"
        return self._finish(key, state, last_error=error[:2000], next_attempt_at=retry_at)

    def release(self, key: DeliveryKey, *, state: str = "unknown", note: str | None = None,
                retry_at: datetime | None = None) -> bool:
        """Give a claim back without an outcome (an unknown one: left to an operator, or, with
        `retry_at`, settled again no sooner than then)."""
        return self._finish(key, state, last_error=note, next_attempt_at=retry_at)

    def renew(self, keys: Iterable[DeliveryKey]) -> int:
        """Extend this worker's leases on `keys` while their sends are still running, so no
        other process takes a claim over mid-send; returns how many are still held."""
        until = self.clock() + self.lease
        if not self._sqlite:  # a row at a time: one multi-row transaction could deadlock
            return self.renew_each(keys, until)  # with a batch's record
        held = 0
        with self._tx() as conn:
            for key in keys:
                held += conn.execute(
                    update(deliveries)
                    .where(_key_filter(key) & (deliveries.c.state == "claimed")
                           & (deliveries.c.worker == self.worker))
                    .values(lease_until=until)
                ).rowcount
        return held

    def mark_skipped(self, key: DeliveryKey, reason: str, *, content_hash: str | None = None,
                     replace: bool = False) -> bool:
        """Record that a key is never to be sent. With `replace`, also over a non-sent row."""
        now = self.clock()
        statement = self._insert(deliveries).values(
            campaign=key.campaign, channel=key.channel, recipient=key.recipient,
            state="skipped", attempts=0, last_error=reason, content_hash=content_hash,
            created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["campaign", "channel", "recipient"])
        with self._tx() as conn:
            if conn.execute(statement.returning(deliveries.c.id)).first() is not None:
                return True
            if not replace:
                return False
            return conn.execute(
                update(deliveries)
                .where(_key_filter(key) & deliveries.c.state.notin_(["sent", "claimed"]))
                .values(state="skipped", last_error=reason, updated_at=now,
                        next_attempt_at=None)
            ).rowcount == 1

    def _dead_local_workers(self, conn: Connection) -> list[str]:
        """Workers on this host (ids are `host:pid:nonce`) whose process is gone."""
        host = socket.gethostname()
        rows = conn.execute(
            select(deliveries.c.worker).distinct().where(
                (deliveries.c.state == "claimed") & deliveries.c.lease_until.is_not(None)
                & deliveries.c.worker.startswith(f"{host}:")
            )
        ).scalars()
        dead = []
        for worker in rows:
            parts = worker.split(":")
            if worker == self.worker or len(parts) != 3 or not parts[1].isdigit():
                continue
            try:
                os.kill(int(parts[1]), 0)
            except ProcessLookupError:
                dead.append(worker)
            except PermissionError:
                pass  # alive, another user's
        return dead

    def expire_leases(self) -> int:
        """Claims whose lease ran out, or whose process on this host is gone, become
        `unknown` at once; returns how many."""
        now = self.clock()
        with self._tx() as conn:
            gone = self._dead_local_workers(conn)
            return conn.execute(
                update(deliveries)
                .where((deliveries.c.state == "claimed") & (
                    (deliveries.c.lease_until < now) | deliveries.c.worker.in_(gone)))
                .values(state="unknown", updated_at=now, worker=None, lease_until=None,
                        last_error=CRASH_NOTE)
            ).rowcount

    def requeue(self, key: DeliveryKey | None = None, *, states: Iterable[str]) -> int:
        """Make dead/unknown/failed deliveries due again (an operator's `retry`)."""
        now = self.clock()
        condition = deliveries.c.state.in_(list(states))
        if key is not None:
            condition &= _key_filter(key)
        with self._tx() as conn:
            return conn.execute(
                update(deliveries).where(condition)
                .values(state="failed", next_attempt_at=None, attempts=0, updated_at=now)
            ).rowcount

    def open_campaign(self, key: DeliveryKey) -> str:
        """Register a shared unit of work (a digest period) once; return its state.

        Unlike `claim`, it carries no lease: every instance may join the work while it is
        `claimed`, and it is over only when `finish_campaign` (or a skip) says so.
        """
        now = self.clock()
        statement = self._insert(deliveries).values(
            campaign=key.campaign, channel=key.channel, recipient=key.recipient,
            state="claimed", attempts=1, worker=self.worker, created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["campaign", "channel", "recipient"])
        with self._tx() as conn:
            conn.execute(statement)
            conn.execute(  # resume a campaign interrupted by a shutdown
                update(deliveries)
                .where(_key_filter(key) & deliveries.c.state.in_(["failed", "unknown"]))
                .values(state="claimed", updated_at=now, last_error=None)
            )
            return conn.execute(select(deliveries.c.state).where(_key_filter(key))).scalar_one()

    def suspend_campaign(self, key: DeliveryKey, note: str) -> bool:
        """A campaign left unfinished on purpose (shutdown): `failed`, resumed next time."""
        with self._tx() as conn:
            return conn.execute(
                update(deliveries)
                .where(_key_filter(key) & (deliveries.c.state == "claimed"))
                .values(state="failed", updated_at=self.clock(), last_error=note)
            ).rowcount == 1

    def finish_campaign(self, key: DeliveryKey, note: str | None = None) -> bool:
        """Mark a shared unit of work (a digest period) done, whoever claimed it."""
        now = self.clock()
        with self._tx() as conn:
            return conn.execute(
                update(deliveries)
                .where(_key_filter(key) & deliveries.c.state.in_(["claimed", "unknown"]))
                .values(state="sent", sent_at=now, updated_at=now, lease_until=None,
                        last_error=note)
            ).rowcount == 1

    def mark_campaign_sent(self, key: DeliveryKey, note: str | None = None) -> None:
        """Record a shared unit of work (a digest period) as gone out, whatever the row said
        before (none, claimed, missed and skipped): a digest sent by hand is marked the way
        the daemon marks its own, so the archive and the daemon see it."""
        now = self.clock()
        statement = self._insert(deliveries).values(
            campaign=key.campaign, channel=key.channel, recipient=key.recipient,
            state="sent", attempts=1, worker=self.worker, created_at=now, updated_at=now,
            sent_at=now, last_error=note,
        ).on_conflict_do_nothing(index_elements=["campaign", "channel", "recipient"])
        with self._tx() as conn:
            if conn.execute(statement).rowcount != 1:
                conn.execute(
                    update(deliveries)
                    .where(_key_filter(key) & (deliveries.c.state != "sent"))
                    .values(state="sent", sent_at=now, updated_at=now, lease_until=None,
                            last_error=note)
                )

    # -- the daemon's bookkeeping -----------------------------------------------------

    def record_job(self, job: str, **values: Any) -> None:
        self._upsert(job_runs, "job", {"job": job, "updated_at": self.clock(), **values})

    def jobs(self) -> dict[str, dict[str, Any]]:
        if self.readonly and not self.exists:
            return {}
        with self._tx() as conn:
            return {
                row.job: {k: _utc(v) if isinstance(v, datetime) else v
                          for k, v in row._mapping.items()}
                for row in conn.execute(select(job_runs))
            }

    def beat(self, *, started_at: datetime, stopped: bool = False) -> None:
        host, pid = socket.gethostname(), os.getpid()
        now = self.clock()
        self._upsert(heartbeats, "worker", {
            "worker": self.worker, "host": host, "pid": pid, "started_at": started_at,
            "seen_at": now, "stopped_at": now if stopped else None,
        })

    def heartbeats(self) -> list[dict[str, Any]]:
        if self.readonly and not self.exists:
            return []
        with self._tx() as conn:
            return [
                {k: _utc(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}
                for row in conn.execute(select(heartbeats).order_by(heartbeats.c.seen_at.desc()))
            ]

    # -- queries ------------------------------------------------------------------

    def get(self, key: DeliveryKey) -> Delivery | None:
        if self.readonly and not self.exists:
            return None
        with self._tx() as conn:
            row = conn.execute(select(deliveries).where(_key_filter(key))).first()
        return _row(row) if row else None

    def for_channel(self, channel: str, campaign_prefix: str = "") -> dict[str, Delivery]:
        """All rows of a channel (recipient-less), by campaign: one query per run."""
        if self.readonly and not self.exists:
            return {}
        condition = (deliveries.c.channel == channel) & (deliveries.c.recipient == "")
        if campaign_prefix:
            condition &= deliveries.c.campaign.startswith(campaign_prefix)
        with self._tx() as conn:
            return {r.campaign: _row(r) for r in conn.execute(select(deliveries).where(condition))}

    def last_sent_at(self, channel: str) -> datetime | None:
        if self.readonly and not self.exists:
            return None
        with self._tx() as conn:
            value = conn.execute(
                select(func.max(deliveries.c.sent_at)).where(deliveries.c.channel == channel)
            ).scalar()
        return _utc(value)

    def deliveries(self, *, states: Iterable[str] | None = None,
                   campaign_prefix: str = "") -> Iterator[Delivery]:
        if self.readonly and not self.exists:
            return
        query = select(deliveries).order_by(deliveries.c.updated_at, deliveries.c.id)
        if states is not None:
            query = query.where(deliveries.c.state.in_(list(states)))
        if campaign_prefix:
            query = query.where(deliveries.c.campaign.startswith(campaign_prefix))
        with self._tx() as conn:
            rows = conn.execute(query).all()
        for row in rows:
            yield _row(row)

    def remember_source(self, source_url: str, brief_id: str) -> None:
        """Note the brief that first went out with `source_url` (the first one stays)."""
        statement = self._insert(sources).values(
            source_url=source_url[:2000], brief=brief_id, created_at=self.clock(),
        ).on_conflict_do_nothing(index_elements=["source_url"])
        with self._tx() as conn:
            conn.execute(statement)

    def remember_text(self, key: DeliveryKey, text: str) -> None:
        """Keep the text a post went out with (the first one stays)."""
        statement = self._insert(sent_texts).values(
            campaign=key.campaign, channel=key.channel, text=text[:20_000],
        ).on_conflict_do_nothing(index_elements=["campaign", "channel"])
        with self._tx() as conn:
            conn.execute(statement)

    def sent_text(self, key: DeliveryKey) -> str | None:
        if self.readonly and not self.exists:
            return None
        with self._tx() as conn:
            return conn.execute(select(sent_texts.c.text).where(
                (sent_texts.c.campaign == key.campaign) & (sent_texts.c.channel == key.channel)
            )).scalar()

    def known_sources(self) -> dict[str, str]:
        """Source URL → the brief that first went out with it."""
        if self.readonly and not self.exists:
            return {}
        with self._tx() as conn:
            return {url: brief for url, brief in conn.execute(
                select(sources.c.source_url, sources.c.brief))}

    def max_id(self) -> int:
        """The highest delivery row id: it only grows while nothing is lost (`bot.watermark`)."""
        if self.readonly and not self.exists:
            return 0
        with self._tx() as conn:
            return int(conn.execute(select(func.max(deliveries.c.id))).scalar() or 0)

    def counts(self) -> dict[str, int]:
        if self.readonly and not self.exists:
            return {}
        with self._tx() as conn:
            rows = conn.execute(
                select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
            )
            return {state: count for state, count in rows}


def _key_filter(key: DeliveryKey) -> Any:
    return (
        (deliveries.c.campaign == key.campaign)
        & (deliveries.c.channel == key.channel)
        & (deliveries.c.recipient == key.recipient)
    )


def open_ledger(settings: Settings, *, readonly: bool = False) -> Ledger:
    """The configured sent-log, with the configured claim lease."""
    return Ledger(settings.database_url, lease=settings.config.publish.lease, readonly=readonly)
