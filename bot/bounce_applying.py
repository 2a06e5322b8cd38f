"""Applying what a returned message says to the list, exactly once, across crashes.

Each message (or webhook event) is applied in one database transaction together with its rows
in `mail_reports`, keyed by a fingerprint (the SHA-256 of a message's bytes, a provider's event
id); a second delivery of the same one finds its key, changes nothing and says so.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)

from bot.bounce_reading import Finding, Reading
from bot.config import Settings
from bot.ledger import Ledger, metadata
from bot.subscribers import Subscribers

# One row per subscriber a processed message concerned (position 0, 1, ...); a message that
# concerned nobody still gets its row 0, `ignored`, so it is never read twice.
mail_reports = Table(
    "mail_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fingerprint", String(64), nullable=False),  # SHA-256 of the message's bytes
    Column("position", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("email", String(320)),
    Column("campaign", String(300)),
    Column("detail", Text),
    Column("message_id", String(998)),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("fingerprint", "position", name="uq_mail_report"),
    Index("ix_mail_reports_campaign", "campaign", "kind"),
    Index("ix_mail_reports_email", "email", "campaign"),
)


_READY: set[Any] = set()  # engines known to have the mail_reports table


class Applier:
    """Applies readings to the list, each with its `mail_reports` rows in one transaction."""

    def __init__(self, settings: Settings, ledger: Ledger, subscribers: Subscribers):
        self.settings = settings
        self.ledger = ledger
        self.subscribers = subscribers
        self.email = settings.config.email
        self._insert = _dialect_insert(ledger)
        if ledger.engine not in _READY:  # this module may be imported after the upgrade ran
            mail_reports.create(ledger.engine, checkfirst=True)
            _READY.add(ledger.engine)

    def apply(self, fingerprint: str, message_id: str, reading: Reading) -> list[str] | None:
        """Outcomes, or None when this message was processed before."""
        now = self.ledger.clock()
        findings = reading.findings or [Finding("ignored", None, None, reading.what)]
        outcomes = []
        with self.ledger.engine.begin() as conn:
            for position, finding in enumerate(findings):
                inserted = conn.execute(
                    self._insert(mail_reports).values(
                        fingerprint=fingerprint, position=position, kind=finding.kind,
                        email=finding.email, campaign=finding.campaign,
                        detail=finding.detail[:2000], message_id=message_id[:998] or None,
                        processed_at=now)
                    .on_conflict_do_nothing(index_elements=["fingerprint", "position"])
                ).rowcount
                if position == 0 and inserted != 1:
                    return None
                outcomes.append(self._one(conn, finding, fingerprint))
        return outcomes

    def previous(self, fingerprint: str) -> tuple[str, str | None] | None:
        """(kind, email) of what was applied under `fingerprint` before, if anything."""
        if self.ledger.engine not in _READY:
            return None
        with self.ledger.engine.connect() as conn:
            row = conn.execute(select(mail_reports.c.kind, mail_reports.c.email).where(
                (mail_reports.c.fingerprint == fingerprint) & (mail_reports.c.position == 0))
            ).first()
        return (row.kind, row.email) if row else None

    def _one(self, conn: Any, finding: Finding, fingerprint: str) -> str:
        who = finding.email or finding.named or "nobody on the list"
        on = f" ({finding.campaign})" if finding.campaign else ""
        if finding.email is None or finding.kind == "ignored":
            return f"{who}{on}: no change: {finding.detail}"
        if finding.kind in ("hard", "soft"):
            hard = finding.kind == "hard"
            if not hard and finding.campaign and self._counted(conn, finding, fingerprint):
                return f"{who}{on}: soft bounce already counted for this campaign"
            became = self.subscribers.record_bounce(
                finding.email, hard=hard, hard_limit=self.email.hard_bounces,
                soft_limit=self.email.soft_bounces, reason=finding.detail, conn=conn)
            label = "hard bounce" if hard else "soft bounce"
            return f"{who}{on}: {label} {finding.detail}" + (": now bounced" if became else "")
        left = self.subscribers.unsubscribe(finding.email, reason=finding.detail, conn=conn)
        return f"{who}{on}: {finding.detail}: " + (
            "now unsubscribed" if left else "was not subscribed")

    @staticmethod
    def _counted(conn: Any, finding: Finding, fingerprint: str) -> bool:
        return conn.execute(
            select(mail_reports.c.id).where(
                (mail_reports.c.email == finding.email)
                & (mail_reports.c.campaign == finding.campaign)
                & mail_reports.c.kind.in_(["hard", "soft"])
                & (mail_reports.c.fingerprint != fingerprint)).limit(1)
        ).first() is not None


def _dialect_insert(ledger: Ledger) -> Any:
    if ledger.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def campaign_counts(ledger: Ledger) -> dict[str, Counter[str]]:
    """Per campaign: how many addresses hard-bounced, soft-bounced, complained."""
    counts: dict[str, Counter[str]] = {}
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(mail_reports.c.campaign, mail_reports.c.kind, mail_reports.c.email)
            .where(mail_reports.c.campaign.is_not(None) & mail_reports.c.email.is_not(None))
            .distinct()
        ).all()
    for campaign, kind, _ in rows:
        counts.setdefault(campaign, Counter())[kind] += 1
    return counts
