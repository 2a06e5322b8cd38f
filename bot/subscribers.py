"""The mailing list: who gets the digest, and who asked never to get it again.

Subscribers live in the ledger's database (same `metadata`, so `Ledger.upgrade()` creates the
table) because the digest sender checks an address and claims its delivery in one place. Rows
are never deleted on unsubscribe: the row is what keeps a later import from re-adding someone
who left. Reading the active list is streamed by id (keyset pagination), so a list of any size
costs one batch of memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    delete,
    func,
    inspect,
    select,
    update,
)

from bot.addresses import address_key, normalise_email
from bot.ledger import Ledger
from bot.subscriber_rows import (  # noqa: F401  (re-exported: callers import these from here)
    LEFT,
    STATES,
    Entry,
    Subscriber,
    aware,
    check_state,
    subscribers,
)

CONFIRMATION_RESEND_AFTER = timedelta(minutes=10)


class Reader(NamedTuple):
    """What a batched mailing needs of an active subscriber."""

    email: str
    name: str | None
    soft_bounces: int


@dataclass
class Merged:
    """What a merge did to the list."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_out: list[str] = field(default_factory=list)  # left the list before: not re-added


class Subscribers:
    """The subscriber list, on the ledger's engine and clock."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.engine = ledger.engine
        self._insert = _dialect_insert(self.engine)
        if not ledger.readonly:
            ledger.upgrade()  # creates this module's table too, under the schema lock
        self._missing = ledger.readonly and not (
            ledger.exists and inspect(self.engine).has_table("subscribers")
        )
        # A read-only look at a database from before `reason` (schema 1): read without it.
        self._columns = list(subscribers.c)
        if ledger.readonly and not self._missing and "reason" not in {
                c["name"] for c in inspect(self.engine).get_columns("subscribers")}:
            self._columns = [c for c in subscribers.c if c.name != "reason"]
        self._state = ledger.prepare(
            select(subscribers.c.state).where(subscribers.c.email == bindparam("email")))
        self._page = ("SELECT id, email, name, soft_bounces FROM subscribers WHERE "
                      "state = 'active' AND id > %s ORDER BY id LIMIT %s")
        if self.engine.dialect.name == "sqlite":
            self._page = ("SELECT json_group_array(json_array(id, email, name, soft_bounces)) "
                          "FROM (SELECT id, email, name, soft_bounces FROM subscribers WHERE "
                          "state = 'active' AND id > ? ORDER BY id LIMIT ?)")

    def _now(self) -> datetime:
        return self.ledger.clock()

    @contextmanager
    def _begin(self, conn: Connection | None) -> Iterator[Connection]:
        """The caller's transaction (a bounce report applied with its processed marker), or a
        new one."""
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as own:
            yield own

    @staticmethod
    def _key(email: str) -> str | None:
        try:
            return address_key(normalise_email(email))
        except ValueError:
            return None

    # -- one address ------------------------------------------------------------------

    def get(self, email: str) -> Subscriber | None:
        key = self._key(email)
        if key is None or self._missing:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(*self._columns).where(subscribers.c.email == key)).first()
        return Subscriber.from_row(row) if row else None

    def is_active(self, email: str) -> bool:
        key = self._key(email)
        if key is None or self._missing:
            return False
        with self.engine.connect() as conn:
            state = conn.execute(
                select(subscribers.c.state).where(subscribers.c.email == key)
            ).scalar()
        return state == "active"

    def state_of(self, stored_email: str) -> str | None:
        """The state of an address exactly as the list holds it, for a sender that asks before
        every message: no normalising, one precompiled query on the calling thread's held ledger
        connection (a sending thread gives it back with `ledger.release_thread()`)."""
        if self._missing:
            return None
        row = self.ledger.run(self._state, email=stored_email).fetchone()
        return row[0] if row else None

    def active_among(self, stored_emails: list[str]) -> set[str]:
        """Which of these addresses (as the list holds them) are active: one query for a
        batch, asked right before it is claimed."""
        if self._missing or not stored_emails:
            return set()
        if self.ledger.engine.dialect.name == "sqlite":
            # `+state`: each address by its unique index, not every active row; one row back
            # (one step: see `LedgerDatabase.run_transaction`)
            sql = ("SELECT json_group_array(email) FROM subscribers WHERE +state = 'active' "
                   "AND email IN (SELECT value FROM json_each(?))")
            rows = self.ledger.run_sql(sql, (json.dumps(stored_emails),))
            return set(json.loads(rows[0][0])) if rows and rows[0][0] else set()
        sql = "SELECT email FROM subscribers WHERE state = 'active' AND email = ANY(%s::text[])"
        return {row[0] for row in self.ledger.run_sql(sql, (list(stored_emails),))}

    def add(self, email: str, name: str | None = None, *, state: str = "active",
            force: bool = False) -> Subscriber:
        """Add an address, or set an existing one's state (and name, if given).

        Whoever unsubscribed or bounced comes back only through their own confirmed sign-up,
        or with `force` (an operator they asked directly); imports never bring them back.
        """
        display = normalise_email(email)
        key = address_key(display)
        check_state(state)
        now = self._now()
        with self.engine.begin() as conn:
            conn.execute(
                self._insert(subscribers)
                .values(**_new_row(key, name, state, now, display))
                .on_conflict_do_nothing(index_elements=["email"])
            )
            current = conn.execute(
                select(subscribers).where(subscribers.c.email == key)
            ).first()
            changes: dict[str, Any] = {}
            if current.state in LEFT and state not in LEFT and not force:
                raise ValueError(
                    f"{display} {current.state} on {aware(current.updated_at):%Y-%m-%d}; they "
                    "come back only through their own confirmed sign-up, or with --force if "
                    "they asked you themselves")
            if name and current.name != name:
                changes["name"] = name
            if current.state != state:
                changes.update(state=state, **_stamps(state, now))
                if state in ("active", "pending"):
                    changes.update(soft_bounces=0, hard_bounces=0, reason=None)
            if changes:
                conn.execute(update(subscribers).where(subscribers.c.email == key)
                             .values(updated_at=now, **changes))
                current = conn.execute(
                    select(subscribers).where(subscribers.c.email == key)
                ).first()
        return Subscriber.from_row(current)

    def request(self, email: str, name: str | None = None) -> bool:
        """A sign-up from the web form: True when a confirmation email should go out.

        The address stays `pending` until confirmed (double opt-in). An active address is left
        alone, and a pending one is not mailed again within a few minutes, so the form cannot
        be used to flood someone's inbox.
        """
        display = normalise_email(email)
        key = address_key(display)
        now = self._now()
        with self.engine.begin() as conn:
            inserted = conn.execute(
                self._insert(subscribers)
                .values(**_new_row(key, name, "pending", now, display))
                .on_conflict_do_nothing(index_elements=["email"])
                .returning(subscribers.c.id)
            ).first()
            if inserted is not None:
                return True
            current = conn.execute(
                select(subscribers).where(subscribers.c.email == key)
            ).first()
            if current.state == "active":
                return False
            if current.state in ("pending", *LEFT) and (
                aware(current.updated_at) > now - CONFIRMATION_RESEND_AFTER
            ):
                return False
            if current.state in LEFT:
                # Consent sticks: the row stays as it is until its own confirm link is used.
                conn.execute(update(subscribers).where(subscribers.c.email == key)
                             .values(updated_at=now))
                return True
            conn.execute(
                update(subscribers).where(subscribers.c.email == key)
                .values(state="pending", updated_at=now, name=name or current.name)
            )
            return True

    def _transition(self, email: str, from_states: tuple[str, ...], to_state: str, *,
                    reason: str | None = None, conn: Connection | None = None) -> bool:
        key = self._key(email)
        if key is None or self._missing:
            return False
        now = self._now()
        values: dict[str, Any] = {"state": to_state, "updated_at": now, **_stamps(to_state, now),
                                  "reason": reason[:500] if reason else None}
        if to_state == "active":
            values.update(soft_bounces=0)
        with self._begin(conn) as conn:
            return conn.execute(
                update(subscribers)
                .where((subscribers.c.email == key) & subscribers.c.state.in_(from_states))
                .values(**values)
            ).rowcount == 1

    def unsubscribe(self, email: str, *, reason: str | None = None,
                    conn: Connection | None = None) -> bool:
        """True when the address was on the list and now is not (idempotent otherwise).

        `reason` is kept with the row (a complaint, an unsubscribe request by email)."""
        return self._transition(email, ("pending", "active", "bounced"), "unsubscribed",
                                reason=reason, conn=conn)

    def confirm(self, email: str) -> bool:
        """pending -> active, or back from unsubscribed/bounced when the address asked again
        (a web request after it left); True when that happened."""
        if self._transition(email, ("pending",), "active"):
            return True
        return self._rejoin(email)

    def _rejoin(self, email: str) -> bool:
        """A left address asked again with the form since it left: its confirm link brings it
        back. An old link from before it left changes nothing."""
        key = self._key(email)
        if key is None or self._missing:
            return False
        now = self._now()
        left_at = func.coalesce(subscribers.c.unsubscribed_at, subscribers.c.bounced_at)
        with self.engine.begin() as conn:
            return conn.execute(
                update(subscribers)
                .where((subscribers.c.email == key) & subscribers.c.state.in_(LEFT)
                       & (subscribers.c.updated_at > left_at))
                .values(state="active", updated_at=now, soft_bounces=0, hard_bounces=0,
                        reason=None, **_stamps("active", now))
            ).rowcount == 1

    def remove(self, email: str, *, purge: bool = False) -> bool:
        """Unsubscribe (keeping the row as a do-not-mail marker), or delete it with `purge`.

        True when the address was known.
        """
        key = self._key(email)
        if key is None or self._missing:
            return False
        if purge:
            with self.engine.begin() as conn:
                return conn.execute(
                    delete(subscribers).where(subscribers.c.email == key)
                ).rowcount == 1
        self.unsubscribe(key)
        return self.get(key) is not None

    def record_bounce(self, email: str, *, hard: bool, hard_limit: int, soft_limit: int,
                      reason: str | None = None, conn: Connection | None = None) -> bool:
        """Count a bounce; True when this one made the address `bounced` (with `reason`)."""
        key = self._key(email)
        if key is None or self._missing:
            return False
        now = self._now()
        counter = subscribers.c.hard_bounces if hard else subscribers.c.soft_bounces
        limit = hard_limit if hard else soft_limit
        with self._begin(conn) as conn:
            conn.execute(
                update(subscribers).where(subscribers.c.email == key)
                .values({counter: counter + 1, subscribers.c.updated_at: now})
            )
            return conn.execute(
                update(subscribers)
                .where((subscribers.c.email == key)
                       & subscribers.c.state.in_(["active", "pending"])
                       & (counter >= limit))
                .values(state="bounced", bounced_at=now, updated_at=now,
                        reason=reason[:500] if reason else None)
            ).rowcount == 1

    def record_delivered(self, email: str) -> None:
        """A message was accepted: soft bounces count only when consecutive."""
        key = self._key(email)
        if key is None or self._missing:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(subscribers)
                .where((subscribers.c.email == key) & (subscribers.c.soft_bounces != 0))
                .values(soft_bounces=0, updated_at=self._now())
            )

    # -- the whole list ------------------------------------------------------------------

    def _stream(self, state: str | None, batch: int) -> Iterator[Subscriber]:
        if self._missing:
            return
        if batch < 1:
            raise ValueError("batch must be at least 1")
        last_id = 0
        while True:
            query = select(*self._columns).where(subscribers.c.id > last_id)
            if state is not None:
                query = query.where(subscribers.c.state == state)
            with self.engine.connect() as conn:
                rows = conn.execute(query.order_by(subscribers.c.id).limit(batch)).all()
            for row in rows:
                yield Subscriber.from_row(row)
            if len(rows) < batch:
                return
            last_id = rows[-1].id

    def iter_active(self, batch: int = 1000) -> Iterator[Subscriber]:
        """Active subscribers in id order, `batch` rows per query; no connection held between.

        A subscriber who joins during the iteration is included if their id comes later;
        one who leaves may still be yielded, which is why the sender checks `is_active`.
        """
        return self._stream("active", batch)

    def stream_active(self, batch: int = 1000) -> Iterator[Reader]:
        """Active subscribers in id order as `Reader`s, for a sender of a million: plain
        autocommitted reads on this thread's held connection (no write lock taken, no
        transaction held between pages) and three fields per row, not a full `Subscriber`."""
        if self._missing:
            return
        last_id = 0
        sqlite = self.engine.dialect.name == "sqlite"
        while True:
            rows = self.ledger.run_sql(self._page, (last_id, batch))
            if sqlite:  # one JSON row per page (one step), in id order
                rows = sorted(json.loads(rows[0][0])) if rows and rows[0][0] else []
            for row in rows:
                yield Reader(row[1], row[2], row[3])
            if len(rows) < batch:
                return
            last_id = rows[-1][0]

    def iter_all(self, state: str | None = None, batch: int = 1000) -> Iterator[Subscriber]:
        if state is not None:
            check_state(state)
        return self._stream(state, batch)

    def count(self, state: str | None = None) -> int:
        if self._missing:
            return 0
        query = select(func.count()).select_from(subscribers)
        if state is not None:
            query = query.where(subscribers.c.state == check_state(state))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def merge(self, entries: Sequence[Entry]) -> Merged:
        """Add the new addresses and update the known ones, all in one transaction.

        Addresses that unsubscribed or bounced are never re-added, and a merge never demotes
        an active address to pending.
        """
        merged = Merged()
        now = self._now()
        with self.engine.begin() as conn:
            for start in range(0, len(entries), 500):
                chunk = entries[start:start + 500]
                existing = {
                    r.email: r for r in conn.execute(
                        select(subscribers.c.email, subscribers.c.name, subscribers.c.state)
                        .where(subscribers.c.email.in_([entry.email for entry in chunk]))
                    )
                }
                new = []
                for entry in chunk:
                    current = existing.get(entry.email)
                    if current is None:
                        new.append(_new_row(entry.email, entry.name, entry.state, now,
                                            entry.display))
                        continue
                    changes = _merge_changes(current, entry, now)
                    if current.state in LEFT and entry.state not in LEFT:
                        merged.kept_out.append(entry.display)
                    if changes:
                        conn.execute(update(subscribers)
                                     .where(subscribers.c.email == entry.email)
                                     .values(updated_at=now, **changes))
                        merged.updated += 1
                    else:
                        merged.unchanged += 1
                if new:
                    result = conn.execute(
                        self._insert(subscribers).on_conflict_do_nothing(
                            index_elements=["email"]), new,
                    )
                    added = result.rowcount if result.rowcount >= 0 else len(new)
                    merged.added += added
                    merged.unchanged += len(new) - added
        return merged


def _stamps(state: str, now: datetime) -> dict[str, datetime]:
    """The timestamp column a state change sets."""
    column = {"active": "confirmed_at", "unsubscribed": "unsubscribed_at",
              "bounced": "bounced_at"}.get(state)
    return {column: now} if column else {}


def _new_row(email: str, name: str | None, state: str, now: datetime,
             display: str | None = None) -> dict[str, Any]:
    """Every column, always the same keys, so a batch of rows is one `executemany`."""
    return {"email": email, "display": display if display != email else None,
            "name": name or None, "state": state, "created_at": now,
            "updated_at": now, "confirmed_at": None, "unsubscribed_at": None,
            "bounced_at": None, "hard_bounces": 0, "soft_bounces": 0, "reason": None,
            **_stamps(state, now)}


def _merge_changes(current: Any, row: Entry, now: datetime) -> dict[str, Any]:
    if current.state in LEFT:
        return {}  # whoever left stays out, untouched; only an operator's `add` brings them back
    changes: dict[str, Any] = {}
    if row.name and row.name != current.name:
        changes["name"] = row.name
    promotes = current.state == "pending" and row.state == "active"
    if row.state in LEFT or promotes:
        changes.update(state=row.state, **_stamps(row.state, now))
    return changes


def _dialect_insert(engine: Engine) -> Callable[..., Any]:
    """`insert` with `on_conflict_do_nothing`, for the two databases the ledger supports."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
