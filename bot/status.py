"""`briefbot status`: the sent-log read against the briefs folder, attention items first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.briefs import BriefReader
from bot.config import Settings
from bot.ledger import Ledger

ATTENTION = ("unknown", "dead", "claimed", "failed")


def collect_status(settings: Settings, now: datetime) -> dict[str, Any]:
    cfg = settings.config
    ledger = Ledger(settings.database_url, readonly=True)
    try:
        counts = ledger.counts()
        rows = list(ledger.deliveries())
    finally:
        ledger.close()
    reader = BriefReader(tz=settings.tz, max_bytes=cfg.briefs.max_file_bytes,
                         required_sections=cfg.briefs.required_sections,
                         published_statuses=cfg.briefs.published_statuses)
    briefs = {b.id: b for b in reader.scan(settings.brief_folders).briefs}
    by_key = {(r.key.campaign, r.key.channel, r.key.recipient): r for r in rows}

    attention = sorted(
        (r for r in rows if r.state in ATTENTION),
        key=lambda r: (ATTENTION.index(r.state), r.updated_at),
    )
    changed = []
    skipped = []
    for row in rows:
        brief = briefs.get(row.key.campaign.removeprefix("brief:"))
        if row.state == "sent" and brief and row.content_hash and (
            row.content_hash != brief.content_hash
        ):
            changed.append({**row.as_dict(), "note": "brief edited since it was sent; "
                            "not re-posted"})
        if row.state == "skipped":
            skipped.append(row.as_dict())

    queued = []
    statuses = cfg.briefs.published_statuses
    for brief in sorted(briefs.values(), key=lambda b: (b.published_at or now, b.id)):
        if not brief.is_publishable(statuses) or not brief.published_at:
            continue
        for name, channel in cfg.channels.items():
            if not channel.enabled:
                continue
            row = by_key.get((f"brief:{brief.id}", name, ""))
            if row is None or row.state == "failed":
                queued.append({
                    "key": f"brief:{brief.id}|{name}",
                    "brief": brief.id,
                    "channel": name,
                    "published_at": brief.published_at.isoformat(),
                    "due": brief.published_at <= now,
                    "next_attempt_at": row.next_attempt_at.isoformat()
                    if row and row.next_attempt_at else None,
                })
    return {
        "now": now.isoformat(),
        "database": ledger.url if "@" not in ledger.url else "(redacted)",
        "counts": {state: counts.get(state, 0) for state in
                   ("sent", "queued", "failed", "dead", "unknown", "claimed", "skipped")}
        | {"queued": len(queued)},
        "attention": [r.as_dict() for r in attention],
        "queued": queued,
        "changed_since_sent": changed,
        "skipped": skipped,
    }


def print_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    counts = status["counts"]
    console.print("  ".join(f"{state}: {n}" for state, n in counts.items()))

    def show(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        if not rows:
            return
        table = Table(title=title, title_justify="left", header_style="bold")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(str(row.get(c) or "") for c in columns))
        console.print(table)

    show("Needs attention", status["attention"], ["state", "key", "attempts", "last_error"])
    show("Queued", status["queued"], ["key", "published_at", "due", "next_attempt_at"])
    show("Changed since sent", status["changed_since_sent"], ["key", "sent_at", "note"])
    show("Skipped", status["skipped"], ["key", "last_error"])
    if not status["attention"] and not status["queued"]:
        console.print("nothing needs attention and nothing is queued")
