"""The subscribers table and its row: what a subscriber is, for the list and whoever reads it.

The table is on the sent-log's `metadata`, so the ledger's upgrade creates it with the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, Integer, String, Table

from bot.ledger_db import metadata

STATES = ("pending", "active", "unsubscribed", "bounced")
LEFT = ("unsubscribed", "bounced")  # states an import or `add` from a file never overrides

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


def check_state(state: str) -> str:
    """`state`, or ValueError naming the states there are."""
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}; use one of: {', '.join(STATES)}")
    return state


def aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
            name: aware(m.get(name)) if name.endswith("_at") else m.get(name)
            for name in cls.__dataclass_fields__
        })

    @property
    def address(self) -> str:
        return self.display or self.email

    def as_dict(self) -> dict[str, Any]:
        data = {k: v.isoformat() if isinstance(v, datetime) else v
                for k, v in self.__dict__.items() if k != "display"}
        return {**data, "email": self.address}


@dataclass(frozen=True)
class Entry:
    """One address to merge into the list, as an import gives it."""

    email: str  # the key
    display: str  # as written
    name: str | None
    state: str
