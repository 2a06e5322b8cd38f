"""The mailing list: who gets the digest, and who asked never to get it again.

Subscribers live in the ledger's database (same `metadata`, so `Ledger.upgrade()` creates the
table) because the digest sender checks an address and claims its delivery in one place. Rows
are never deleted on unsubscribe: the row is what keeps a later import from re-adding someone
who left. Reading the active list is streamed by id (keyset pagination), so a list of any size
costs one batch of memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Table,
    bindparam,
    delete,
    func,
    inspect,
    select,
    update,
)

from bot.ledger import Ledger, metadata

STATES = ("pending", "active", "unsubscribed", "bounced")
LEFT = ("unsubscribed", "bounced")  # states an import or `add` from a file never overrides
IMPORT_COLUMNS = ("email", "name", "state")
EXPORT_COLUMNS = (*IMPORT_COLUMNS, "created_at", "confirmed_at", "unsubscribed_at", "bounced_at",
                  "reason")
CONFIRMATION_RESEND_AFTER = timedelta(minutes=10)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # The address in lower case, the one key (`Case@` and `case@` are one subscriber), and the
    # spelling first given, for display.
    Column("email", String(320), nullable=False, unique=True),
    Column("display", String(320)),
    Column("name", String(200)),
    Column("state", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("confirmed_at", DateTime(timezone=True)),
    Column("unsubscribed_at", DateTime(timezone=True)),
    Column("bounced_at", DateTime(timezone=True)),
    Column("hard_bounces", Integer, nullable=False, default=0),
    Column("soft_bounces", Integer, nullable=False, default=0),  # consecutive
    # Why the address left: a bounce report's status, a complaint, an unsubscribe by email.
    Column("reason", String(500)),
    Index("ix_subscribers_state_id", "state", "id"),
)


def normalise_email(text: str) -> str:
    """Trim, check the syntax, lower-case the domain; the local part is kept as written.

    Raises ValueError with a message a user can act on. Deliverability (DNS) is not checked:
    that needs the network and says little; bounces tell the truth later.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an email address is required")
    candidate = text.strip()
    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(f"{candidate!r} is not a valid email address: {error}") from None
    return f"{result.local_part}@{result.domain.lower()}"


def _check_state(state: str) -> str:
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}; use one of: {', '.join(STATES)}")
    return state


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Reader(NamedTuple):
    """What a batched mailing needs of an active subscriber."""

    email: str
    name: str | None
    soft_bounces: int


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str  # the key: lower case
    display: str | None  # as first given
    name: str | None
    state: str
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    bounced_at: datetime | None
    hard_bounces: int
    soft_bounces: int
    reason: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Subscriber:
        m = row._mapping
        return cls(**{
            name: _aware(m.get(name)) if name.endswith("_at") else m.get(name)
            for name in cls.__dataclass_fields__
        })

    @property
    def address(self) -> str:
        return self.display or self.email

    def as_dict(self) -> dict[str, Any]:
        data = {k: v.isoformat() if isinstance(v, datetime) else v
                for k, v in self.__dict__.items() if k != "display"}
        return {**data, "email": self.address}


def address_key(address: str) -> str:
    """The one key of an address: providers treat the local part case-insensitively too."""
    return address.lower()


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    """What an import did, or, when any row was rejected, why it did nothing."""

    path: str
    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_out: list[str] = field(default_factory=list)  # left the list before: not re-added
    rejected: list[RejectedRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        if self.rejected:
            return (f"{self.path}: {len(self.rejected)} of {self.rows} rows rejected; "
                    "nothing was imported. Fix the rows above and import the file again")
        return (f"{self.path}: {self.rows} rows: {self.added} added, {self.updated} updated, "
                f"{self.unchanged} unchanged ({len(self.kept_out)} had unsubscribed or bounced "
                "and were not re-added)")

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "added": self.added,
                "updated": self.updated, "unchanged": self.unchanged,
                "kept_out": self.kept_out,
                "rejected": [{"line": r.line, "reason": r.reason} for r in self.rejected]}


@dataclass(frozen=True)
class _Row:
    line: int
    email: str  # the key
    display: str
    name: str | None
    state: str


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
        _check_state(state)
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
                    f"{display} {current.state} on {_aware(current.updated_at):%Y-%m-%d}; they "
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
                _aware(current.updated_at) > now - CONFIRMATION_RESEND_AFTER
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
            _check_state(state)
        return self._stream(state, batch)

    def count(self, state: str | None = None) -> int:
        if self._missing:
            return 0
        query = select(func.count()).select_from(subscribers)
        if state is not None:
            query = query.where(subscribers.c.state == _check_state(state))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def export_csv(self, out: TextIO) -> int:
        """Every subscriber, any state (the unsubscribed are the do-not-mail list); returns rows."""
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        rows = 0
        for sub in self._stream(None, 1000):
            data = sub.as_dict()
            writer.writerow([_cell(data[c]) for c in EXPORT_COLUMNS])
            rows += 1
        return rows

    def import_csv(self, path: Path) -> ImportReport:
        """Import `email[,name][,state]` rows: all of them, or, if any is rejected, none.

        A header row naming the columns is optional. Addresses that unsubscribed or bounced
        are never re-added, and an import never demotes an active address to pending.
        """
        path = Path(path)
        report = ImportReport(path=str(path))
        rows = _read_rows(path, report)
        if report.rejected:
            return report
        now = self._now()
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 500):
                chunk = rows[start:start + 500]
                existing = {
                    r.email: r for r in conn.execute(
                        select(subscribers.c.email, subscribers.c.name, subscribers.c.state)
                        .where(subscribers.c.email.in_([row.email for row in chunk]))
                    )
                }
                new = []
                for row in chunk:
                    current = existing.get(row.email)
                    if current is None:
                        new.append(_new_row(row.email, row.name, row.state, now, row.display))
                        continue
                    changes = _import_changes(current, row, now)
                    if current.state in LEFT and row.state not in LEFT:
                        report.kept_out.append(row.display)
                    if changes:
                        conn.execute(update(subscribers)
                                     .where(subscribers.c.email == row.email)
                                     .values(updated_at=now, **changes))
                        report.updated += 1
                    else:
                        report.unchanged += 1
                if new:
                    result = conn.execute(
                        self._insert(subscribers).on_conflict_do_nothing(
                            index_elements=["email"]), new,
                    )
                    added = result.rowcount if result.rowcount >= 0 else len(new)
                    report.added += added
                    report.unchanged += len(new) - added
        return report


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: a leading `'` before what it would run, which
    an import takes off again."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def _uncell(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:2] in _FORMULA_START else text


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


def _import_changes(current: Any, row: _Row, now: datetime) -> dict[str, Any]:
    if current.state in LEFT:
        return {}  # whoever left stays out, untouched; only an operator's `add` brings them back
    changes: dict[str, Any] = {}
    if row.name and row.name != current.name:
        changes["name"] = row.name
    promotes = current.state == "pending" and row.state == "active"
    if row.state in LEFT or promotes:
        changes.update(state=row.state, **_stamps(row.state, now))
    return changes


def _read_rows(path: Path, report: ImportReport) -> list[_Row]:
    """Parse and validate every row; problems go to `report.rejected` with their line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        report.rejected.append(RejectedRow(0, f"{path} is not UTF-8 text ({error.reason} at "
                                              f"byte {error.start}); save it as UTF-8 CSV"))
        return []
    reader = csv.reader(io.StringIO(text, newline=""))
    columns = list(IMPORT_COLUMNS)
    rows: list[_Row] = []
    seen: dict[str, int] = {}
    first, end_of_previous = True, 0
    for cells in reader:
        line, end_of_previous = end_of_previous + 1, reader.line_num
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue
        if first and cells[0].lower() == "email":
            first = False
            unknown = [c for c in cells if c.lower() not in EXPORT_COLUMNS]
            if unknown:
                report.rejected.append(RejectedRow(line, f"unknown column {unknown[0]!r}; "
                                                         "the columns are email, name, state"))
                return []
            columns = [c.lower() for c in cells]
            continue
        first = False
        report.rows += 1
        if len(cells) > len(columns):
            report.rejected.append(RejectedRow(
                line, f"{len(cells)} values, expected at most {len(columns)} "
                      f"({', '.join(columns)}); quote names that contain commas"))
            continue
        data = dict(zip(columns, cells, strict=False))
        try:
            display = normalise_email(data.get("email", ""))
            state = _check_state(data.get("state") or "active")
        except ValueError as error:
            report.rejected.append(RejectedRow(line, str(error)))
            continue
        email = address_key(display)
        if email in seen:
            report.rejected.append(RejectedRow(
                line, f"{display} appears twice (first on line {seen[email]}); keep one row"))
            continue
        seen[email] = line
        rows.append(_Row(line, email, display, _uncell(data.get("name") or "") or None, state))
    return rows


def _dialect_insert(engine: Engine) -> Callable[..., Any]:
    """`insert` with `on_conflict_do_nothing`, for the two databases the ledger supports."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
