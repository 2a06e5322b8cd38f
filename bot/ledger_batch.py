"""Batch claims: N recipients of one campaign and channel claimed in one statement and their N
outcomes recorded in one transaction, on SQLite and PostgreSQL alike.

The rules are the single-key ones of `bot.ledger` (a claim is an insert that only succeeds for a
key nobody has; an outcome is an update that only matches while this worker still holds the
claim, under its lease), written as one statement over a list: SQLite reads the list from one
JSON parameter (`json_each`), PostgreSQL from arrays (`unnest`). One statement is one
transaction, so a batch is claimed, or recorded, whole or not at all. PostgreSQL records with
one `UPDATE ... FROM unnest(...)`. SQLite, whose planner would drive such an update by the
campaign's rows rather than the key's index, fills a temporary table in the same transaction
and updates from it; there every statement runs in one step, since the driver gives the GIL
back at each step (see `LedgerDatabase.run_transaction`). Statements are built once per
dialect; only the parameters change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.ledger_db import LedgerDatabase
from bot.message import DeliveryKey


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed recipient: `sent` (with the provider's id), `failed` (due
    again at `retry_at`), `dead`, or `unknown` (settled later; `retry_at` under `resend`)."""

    recipient: str
    state: str
    remote_id: str | None = None
    remote_url: str | None = None
    note: str | None = None
    retry_at: datetime | None = None


@dataclass(frozen=True)
class OpenRow:
    """A recipient's row that is already there, as a batch needs to know it."""

    state: str
    attempts: int
    next_attempt_at: datetime | None


# SQLite: every statement runs in one step, lists travel as JSON (see
# `LedgerDatabase.run_transaction` for why), and outcomes go through a temporary table so the
# update is driven by the key's unique index.
_SQLITE = {
    "claim": (
        "INSERT INTO deliveries (campaign, channel, recipient, state, attempts, worker, "
        "lease_until, created_at, updated_at) SELECT ?, ?, value, 'claimed', 1, ?, ?, ?, ? "
        "FROM json_each(?) WHERE true "
        "ON CONFLICT (campaign, channel, recipient) DO NOTHING"),
    "claimed": (
        "SELECT json_group_array(recipient) FROM deliveries WHERE campaign = ? AND channel = ? "
        "AND recipient IN (SELECT value FROM json_each(?)) AND worker = ? AND created_at = ?"),
    "outcomes": ("CREATE TEMP TABLE IF NOT EXISTS briefbot_outcomes (recipient TEXT PRIMARY "
                 "KEY, state TEXT, remote_id TEXT, remote_url TEXT, note TEXT, retry_at TEXT, "
                 "sent_at TEXT)"),
    "clear": "DELETE FROM temp.briefbot_outcomes",
    "fill": ("INSERT INTO temp.briefbot_outcomes SELECT value ->> 0, value ->> 1, value ->> 2, "
             "value ->> 3, value ->> 4, value ->> 5, value ->> 6 FROM json_each(?)"),
    "record": (
        "UPDATE deliveries SET (state, remote_id, remote_url, last_error, next_attempt_at, "
        "sent_at) = (SELECT state, remote_id, remote_url, note, retry_at, sent_at "
        "FROM temp.briefbot_outcomes AS o WHERE o.recipient = deliveries.recipient), "
        "lease_until = NULL, updated_at = ? WHERE campaign = ? AND channel = ? AND recipient IN "
        "(SELECT recipient FROM temp.briefbot_outcomes) AND +state = 'claimed' "
        "AND +worker = ?"),
    "updated": (
        "SELECT json_group_array(recipient) FROM deliveries WHERE campaign = ? AND channel = ? "
        "AND recipient IN (SELECT value FROM json_each(?)) AND updated_at = ? AND worker = ?"),
    "rows": (
        "SELECT json_group_array(json_array(recipient, state, attempts, next_attempt_at)) "
        "FROM deliveries WHERE campaign = ? AND channel = ? "
        "AND recipient IN (SELECT value FROM json_each(?))"),
    "any": "SELECT 1 FROM deliveries WHERE campaign = ? AND channel = ? LIMIT 1",
    "by_remote": ("SELECT campaign FROM deliveries WHERE recipient = ? AND remote_id = ? "
                  "ORDER BY id DESC LIMIT 1"),
}

_RENEW = ("UPDATE deliveries SET lease_until = %s WHERE campaign = %s AND channel = %s "
          "AND recipient = %s AND state = 'claimed' AND worker = %s RETURNING id")

_POSTGRES = {
    "claim": (
        "INSERT INTO deliveries (campaign, channel, recipient, state, attempts, worker, "
        "lease_until, created_at, updated_at) SELECT %s, %s, r, 'claimed', 1, %s, %s, %s, %s "
        "FROM unnest(%s::text[]) AS r "
        "ON CONFLICT (campaign, channel, recipient) DO NOTHING RETURNING recipient"),
    "record": (
        "UPDATE deliveries AS d SET state = o.state, remote_id = o.remote_id, "
        "remote_url = o.remote_url, last_error = o.note, next_attempt_at = o.retry_at, "
        "sent_at = CASE WHEN o.state = 'sent' THEN %s::timestamptz END, lease_until = NULL, "
        "updated_at = %s FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
        "%s::text[], %s::timestamptz[]) AS o(recipient, state, remote_id, remote_url, note, "
        "retry_at) WHERE d.campaign = %s AND d.channel = %s AND d.recipient = o.recipient "
        "AND d.state = 'claimed' AND d.worker = %s RETURNING d.recipient"),
    "rows": (
        "SELECT recipient, state, attempts, next_attempt_at FROM deliveries "
        "WHERE campaign = %s AND channel = %s AND recipient = ANY(%s::text[])"),
    "any": "SELECT 1 FROM deliveries WHERE campaign = %s AND channel = %s LIMIT 1",
    "by_remote": ("SELECT campaign FROM deliveries WHERE recipient = %s AND remote_id = %s "
                  "ORDER BY id DESC LIMIT 1"),
}


class BatchClaims(LedgerDatabase):
    """The batch statements; `bot.ledger.Ledger` supplies `worker`, `lease` and `clock`."""

    worker: str
    readonly: bool
    lease: timedelta
    clock: Callable[[], datetime]

    def _batch_sql(self, name: str) -> str:
        return (_SQLITE if self._sqlite else _POSTGRES)[name]

    def _list(self, values: Sequence[Any]) -> Any:
        return json.dumps(list(values)) if self._sqlite else list(values)

    def claim_batch(self, campaign: str, channel: str, recipients: Sequence[str]) -> set[str]:
        """Claim every recipient nobody has (or had) yet; returns those this worker now holds."""
        if not recipients:
            return set()
        moment = self.clock()
        now = self._time(moment)
        params = (campaign, channel, self.worker, self._time(moment + self.lease), now, now,
                  self._list(recipients))
        if not self._sqlite:
            return {row[0] for row in self.run_sql(self._batch_sql("claim"), params,
                                                   write=True)}
        [inserted] = self.run_transaction([(self._batch_sql("claim"), params)])
        if inserted == len(recipients):
            return set(recipients)
        # Some were taken before (a resumed run, another process): say which are ours now.
        return set(self._json_column("claimed", (campaign, channel, params[-1], self.worker,
                                                 now)))

    def record_batch(self, campaign: str, channel: str,
                     outcomes: Sequence[Outcome]) -> set[str]:
        """Record every outcome where this worker still holds the claim; returns those
        recipients (a missing one was taken over meanwhile)."""
        if not outcomes:
            return set()
        moment = self.clock()
        now = self._time(moment)
        if self._sqlite:
            return self._record_sqlite(campaign, channel, outcomes, now)
        else:
            columns = list(zip(*[(o.recipient, o.state, o.remote_id, o.remote_url,
                                  o.note and o.note[:2000], o.retry_at) for o in outcomes],
                               strict=True))
            params = (moment, moment, *map(list, columns), campaign, channel, self.worker)
        return {row[0] for row in self.run_sql(self._batch_sql("record"), params, write=True)}

    def _record_sqlite(self, campaign: str, channel: str, outcomes: Sequence[Outcome],
                       now: str) -> set[str]:
        data = json.dumps([[o.recipient, o.state, o.remote_id, o.remote_url,
                            o.note and o.note[:2000], self._time(o.retry_at),
                            now if o.state == "sent" else None] for o in outcomes])
        sql = self._batch_sql
        *_, matched = self.run_transaction([
            (sql("outcomes"), ()), (sql("clear"), ()), (sql("fill"), (data,)),
            (sql("record"), (now, campaign, channel, self.worker))])
        names = [o.recipient for o in outcomes]
        if matched == len(outcomes):
            return set(names)
        # Some claims were taken over meanwhile (rare): say which rows this call wrote.
        return set(self._json_column("updated", (campaign, channel, json.dumps(names), now,
                                                 self.worker)))

    def _json_column(self, name: str, params: tuple[Any, ...]) -> list[Any]:
        """A SQLite query answering one `json_group_array` row, as a list."""
        rows = self.run_sql(self._batch_sql(name), params)
        return json.loads(rows[0][0]) if rows and rows[0][0] else []

    def renew_each(self, keys: Iterable[DeliveryKey], until: datetime) -> int:
        """`Ledger.renew` on PostgreSQL: each key's lease in its own autocommitted statement,
        so the renewer never holds one row's lock while waiting for another's (a batch being
        recorded locks its rows in an order of the planner's)."""
        return sum(len(self.run_sql(_RENEW, (until, key.campaign, key.channel, key.recipient,
                                             self.worker))) for key in keys)

    def has_rows(self, campaign: str, channel: str) -> bool:
        """Whether anyone has claimed any recipient of this campaign on this channel yet."""
        return bool(self.run_sql(self._batch_sql("any"), (campaign, channel)))

    def open_rows(self, campaign: str, channel: str,
                  recipients: Sequence[str]) -> dict[str, OpenRow]:
        """The rows these recipients already have (none, on a first run)."""
        if not recipients:
            return {}
        params = (campaign, channel, self._list(recipients))
        rows = (self._json_column("rows", params) if self._sqlite
                else self.run_sql(self._batch_sql("rows"), params))
        return {r[0]: OpenRow(r[1], r[2], self._read_time(r[3])) for r in rows}

    def campaign_of_receipt(self, remote_id: str, recipient: str) -> str | None:
        """The campaign a provider's message id was recorded for, for this recipient: a batch
        provider names one id for a whole call, so the pair says which delivery it was."""
        if self.readonly and not self.exists:
            return None
        rows = self.run_sql(self._batch_sql("by_remote"), (recipient, remote_id))
        return rows[0][0] if rows else None
