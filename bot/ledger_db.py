"""The sent-log's database: its tables and migrations, the engine tuned for it, each thread's
held connections and compiled statements, and what a database failure means to a user.

`bot.ledger` builds the sent-log's rules (claims, outcomes, leases, campaigns) on `LedgerDatabase`
and re-exports the names here, so callers import them from `bot.ledger`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, make_url

SCHEMA_VERSION = 3
SCHEMA_LOCK = 0x62726966  # PostgreSQL advisory lock id held while the schema is upgraded

metadata = MetaData()

meta = Table(
    "briefbot_meta",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(300), nullable=False),
    Column("channel", String(100), nullable=False),
    Column("recipient", String(320), nullable=False, default=""),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("remote_id", String(300)),
    Column("remote_url", Text),
    Column("content_hash", String(64)),
    Column("worker", String(200)),
    Column("lease_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    UniqueConstraint("campaign", "channel", "recipient", name="uq_delivery_key"),
    Index("ix_deliveries_state", "state", "next_attempt_at"),
)

# What the daemon did and will do, per job, shared by every instance through the database.
job_runs = Table(
    "job_runs",
    metadata,
    Column("job", String(100), primary_key=True),
    Column("last_scheduled_at", DateTime(timezone=True)),
    Column("last_started_at", DateTime(timezone=True)),
    Column("last_finished_at", DateTime(timezone=True)),
    Column("last_outcome", Text),
    Column("next_run_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# One row per running daemon, refreshed while it lives, so `status` works across machines.
heartbeats = Table(
    "heartbeats",
    metadata,
    Column("worker", String(200), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("stopped_at", DateTime(timezone=True)),
)

# Which brief first went out with a source URL: a brief renamed (or whose `id` changed) is not
# taken for a new one by surprise (`bot.plan`). New tables need no migration.
sources = Table(
    "brief_sources",
    metadata,
    Column("source_url", String(2000), primary_key=True),
    Column("brief", String(300), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The text of each post as it went out, so `preview` and `status` show what readers saw even
# after the brief was edited. New tables need no migration.
sent_texts = Table(
    "sent_texts",
    metadata,
    Column("campaign", String(300), primary_key=True),
    Column("channel", String(100), primary_key=True),
    Column("text", Text, nullable=False),
)

# Each entry upgrades the schema from version N-1 to N; `metadata.create_all` makes new tables.
MIGRATIONS: dict[int, Callable[[Any], None]] = {}

# Most restrictive first: when two spellings of one address merge, consent is never re-added.
_MERGED_STATE = ("bounced", "unsubscribed", "active", "pending")


def _one_subscriber_per_address(conn: Any) -> None:
    """v2: subscribers are keyed by the lower-cased address, the first spelling kept for
    display; rows that were two spellings of one address become one, the most restrictive
    state winning (an unsubscribe stands)."""
    from sqlalchemy import inspect as inspect_schema

    schema = inspect_schema(conn)
    if not schema.has_table("subscribers"):
        return
    if "display" not in {c["name"] for c in schema.get_columns("subscribers")}:
        conn.exec_driver_sql("ALTER TABLE subscribers ADD COLUMN display VARCHAR(320)")
    rows = conn.execute(text("SELECT id, email, state FROM subscribers ORDER BY id")).all()
    groups: dict[str, list[Any]] = {}
    for row in rows:
        groups.setdefault(row.email.lower(), []).append(row)
    for key, group in groups.items():
        first, others = group[0], group[1:]
        states = [r.state for r in group]
        state = min(states, key=lambda s: _MERGED_STATE.index(s) if s in _MERGED_STATE else 9)
        for other in others:
            conn.execute(text("DELETE FROM subscribers WHERE id = :id"), {"id": other.id})
        if first.email != key or state != first.state:
            conn.execute(text("UPDATE subscribers SET email = :key, display = :display, "
                              "state = :state WHERE id = :id"),
                         {"key": key, "display": first.email, "state": state, "id": first.id})


MIGRATIONS[2] = _one_subscriber_per_address


def _subscriber_reason(conn: Any) -> None:
    """v3: `subscribers.reason`, why an address left (the table is bot.subscribers')."""
    from sqlalchemy import inspect

    found = inspect(conn)
    if found.has_table("subscribers") and "reason" not in {
            c["name"] for c in found.get_columns("subscribers")}:
        conn.exec_driver_sql("ALTER TABLE subscribers ADD COLUMN reason VARCHAR(500)")


MIGRATIONS[3] = _subscriber_reason



class LedgerError(Exception):
    """The sent-log cannot be used; the message says which one and what to do."""


def describe_database_error(error: BaseException, url: str) -> str | None:
    """One line for a database failure a user can act on, or None if it is not one."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(error, DBAPIError):
        return None
    where = make_url(url)
    name = where.database if where.get_backend_name() == "sqlite" else redact_database_url(url)
    cause = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
    lowered = cause.lower()
    if "not a database" in lowered or "malformed" in lowered:
        return (f"the sent-log {name} is damaged ({cause}); restore it from a backup (README: "
                "Backing up the SQLite sent-log)")
    if "readonly" in lowered or "read-only" in lowered:
        return f"the sent-log {name} is read-only ({cause}); let briefbot's user write it"
    if "full" in lowered:
        return (f"the disk holding the sent-log {name} is full ({cause}); free some space: "
                "nothing was recorded as sent that was not")
    if "unable to open" in lowered:
        return f"cannot open the sent-log {name} ({cause}); check the folder and its rights"
    if where.get_backend_name() != "sqlite":
        return (f"cannot use the PostgreSQL sent-log at {name} ({cause}); check that the "
                "server runs and that $BRIEFBOT_DATABASE_URL is right")
    return f"the sent-log {name} failed: {cause}"


def redact_database_url(url: str) -> str:
    from bot.config import redact_url

    return redact_url(url)


def create_ledger_engine(url: str, *, create_folder: bool = True) -> Engine:
    """An engine tuned for the sent-log: SQLite in WAL mode with `BEGIN IMMEDIATE`."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        if path.is_file() and path.stat().st_size == 0:
            # SQLite would take an empty file for a new database, and everything in the briefs
            # folder would go out again.
            raise LedgerError(f"the sent-log {path} is empty (0 bytes): it was truncated. "
                              "Restore it from a backup; or, to start a new sent-log on purpose "
                              "(everything due would be sent again), delete the file")
        if create_folder:
            path.parent.mkdir(parents=True, exist_ok=True)
    # `?synchronous=full` (SQLite's own word) makes every commit survive a power cut too;
    # the default, NORMAL in WAL mode, survives a crash of briefbot or of the system's processes.
    synchronous = str(parsed.query.get("synchronous", "normal")).upper()
    if synchronous not in ("NORMAL", "FULL", "EXTRA"):
        raise LedgerError(f"the sent-log URL's synchronous={synchronous.lower()} is not one of "
                          "normal, full, extra; fix $BRIEFBOT_DATABASE_URL")
    engine = create_engine(parsed.difference_update_query(["synchronous"]),
                           connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves, so every write transaction takes the lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class _Prepared:
    """A Core statement compiled once: the hot path (claim, record) skips SQLAlchemy's
    per-call statement building and runs the driver SQL on a held connection."""

    def __init__(self, statement: Any, dialect: Any):
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.order = compiled.positiontup if compiled.positional else None
        self.defaults = dict(compiled.params)

    def args(self, values: dict[str, Any]) -> Any:
        merged = {**self.defaults, **values}
        return tuple(merged[name] for name in self.order) if self.order else merged


class LedgerDatabase:
    """The sent-log's engine and each thread's long-lived connections; `upgrade` creates or
    migrates the schema. `bot.ledger.Ledger` adds what the rows mean."""

    def __init__(self, url: str, *, readonly: bool = False):
        self.url = url
        self.readonly = readonly
        self.engine = create_ledger_engine(url, create_folder=not readonly)
        self._insert = self._dialect_insert()
        self._local = threading.local()
        self._sqlite = self.engine.dialect.name == "sqlite"
        self._writing = threading.Lock()  # this process's batch writers, one at a time

    def _time(self, moment: datetime | None) -> Any:
        """A timestamp as the driver wants it (SQLite stores SQLAlchemy's text format)."""
        if moment is None or not self._sqlite:
            return moment
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def prepare(self, statement: Any) -> _Prepared:
        """Compile a Core statement once, for `run` on a hot path."""
        return _Prepared(statement, self.engine.dialect)

    def run(self, prepared: _Prepared, **values: Any) -> Any:
        """Run one statement on its own, autocommitted, on this thread's held connection: a
        single statement is atomic, so the hot path needs no BEGIN/COMMIT round trips.
        Returns the driver's cursor."""
        with self._held() as driver:
            return driver.execute(prepared.sql, prepared.args(values))

    @contextmanager
    def _held(self) -> Iterator[Any]:
        """This thread's long-lived driver connection (autocommitted on PostgreSQL), dropped
        when a statement on it fails so the next one starts on a fresh connection."""
        raw = getattr(self._local, "raw", None)
        if raw is None:
            raw = self._local.raw = self.engine.raw_connection()
            if not self._sqlite:
                raw.driver_connection.autocommit = True
        try:
            yield raw.driver_connection
        except Exception:
            self._local.raw = None
            raw.invalidate()
            raise

    def run_sql(self, sql: str, params: Any, *, write: bool = False) -> list[Any]:
        """Driver SQL (in the driver's parameter style) as one autocommitted statement on this
        thread's held connection, like `run`; returns every row it gave back. A `write` on
        SQLite waits for this process's other writers on a lock of ours, which wakes at once,
        rather than in SQLite's busy handler, which sleeps up to 100 ms at a time."""
        with self._held() as driver:
            if write and self._sqlite:
                with self._writing:
                    return driver.execute(sql, params).fetchall()
            return driver.execute(sql, params).fetchall()

    def run_transaction(self, statements: list[tuple[str, Any]]) -> list[int]:
        """SQLite: driver statements in one `BEGIN IMMEDIATE` transaction on this thread's held
        connection, under this process's writer lock; returns each one's changed rows.

        Batch work on SQLite keeps to a few statements that each run in one step: the driver
        gives the GIL back around every step, and with busy sender threads taking it back
        costs up to a switch interval (5 ms), so a statement stepping once per row is slow."""
        with self._held() as driver, self._writing:
            driver.execute("BEGIN IMMEDIATE")
            try:
                changed = [driver.execute(sql, params).rowcount for sql, params in statements]
            except BaseException:
                driver.execute("ROLLBACK")
                raise
            driver.execute("COMMIT")
            return changed

    def _read_time(self, value: Any) -> datetime | None:
        """A timestamp read by the driver alone: aware, in UTC."""
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A transaction on this thread's own long-lived connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._local.conn = self.engine.connect()
        try:
            with conn.begin():
                yield conn
        except Exception:
            if conn.invalidated:
                conn.close()
                self._local.conn = None
            raise

    def _upsert(self, table: Table, key_column: str, values: dict[str, Any]) -> None:
        """Insert a row, or update it when its key is taken (one statement, one transaction)."""
        statement = self._insert(table).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[key_column],
            set_={k: v for k, v in values.items() if k != key_column},
        )
        with self._tx() as conn:
            conn.execute(statement)

    def _dialect_insert(self) -> Callable[..., Any]:
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert

    @property
    def exists(self) -> bool:
        """False for a read-only ledger whose database has never been written."""
        if self.engine.dialect.name == "sqlite":
            database = make_url(self.url).database
            if database and database != ":memory:" and not Path(database).exists():
                return False
        from sqlalchemy import inspect

        with self._tx() as conn:
            return inspect(conn).has_table("deliveries")

    def release_thread(self) -> None:
        """Give the connections this thread holds back to the pool (a worker thread's end)."""
        for name in ("conn", "raw"):
            held = getattr(self._local, name, None)
            if held is not None:
                held.close()
                setattr(self._local, name, None)

    def close(self) -> None:
        self.release_thread()
        self.engine.dispose()

    # -- schema ---------------------------------------------------------------

    def upgrade(self) -> int:
        """Create or upgrade the schema in place; returns the version now in force."""
        with self._tx() as conn:
            if not self._sqlite:  # instances starting together: one creates, the others wait
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            metadata.create_all(conn)
            current = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version"))
            version = int(current.scalar() or 0)
            if version == 0:
                conn.execute(insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
                return SCHEMA_VERSION
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](conn)
            if version < SCHEMA_VERSION:
                conn.execute(
                    update(meta).where(meta.c.key == "schema_version")
                    .values(value=str(SCHEMA_VERSION))
                )
            return max(version, SCHEMA_VERSION)
