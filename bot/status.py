"""`briefbot status`: the sent-log read against the briefs folder, attention items first."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from bot.briefs import BriefReader
from bot.config import Settings
from bot.ledger import Delivery, Ledger

ATTENTION = ("unknown", "dead", "claimed", "failed")
# A daemon refreshes its heartbeat every 15 seconds; silence for longer than this means stopped.
ALIVE_WITHIN = timedelta(seconds=60)
# Emails have a row per recipient: `status` counts them per campaign and lists only this many.
MAX_RECIPIENT_ROWS = 50


def collect_status(settings: Settings, now: datetime) -> dict[str, Any]:
    cfg = settings.config
    ledger = Ledger(settings.database_url, readonly=True)
    try:
        counts = ledger.counts()
        rows, mailings, recipient_attention = _split_recipients(ledger.deliveries())
        jobs = ledger.jobs()
        beats = ledger.heartbeats()
    finally:
        ledger.close()
    reader = BriefReader(tz=settings.tz, max_bytes=cfg.briefs.max_file_bytes,
                         required_sections=cfg.briefs.required_sections,
                         published_statuses=cfg.briefs.published_statuses)
    briefs = {b.id: b for b in reader.scan(settings.brief_folders).briefs}
    by_key = {(r.key.campaign, r.key.channel, r.key.recipient): r for r in rows}

    attention = sorted(
        [*(r for r in rows if r.state in ATTENTION), *recipient_attention],
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
    wall = ledger.clock()
    instances = [
        {**{k: v.isoformat() if isinstance(v, datetime) else v for k, v in beat.items()},
         "running": beat["stopped_at"] is None and wall - beat["seen_at"] <= ALIVE_WITHIN}
        for beat in beats
    ]
    daemon = {
        "running": any(i["running"] for i in instances),
        "instances": [i for i in instances if i["running"]] or instances[:3],
        "jobs": {
            name: {k: v.isoformat() if isinstance(v, datetime) else v
                   for k, v in job.items() if k != "job"}
            for name, job in jobs.items()
        },
    }
    return {
        "now": now.isoformat(),
        "daemon": daemon,
        "database": ledger.url if "@" not in ledger.url else "(redacted)",
        "counts": {state: counts.get(state, 0) for state in
                   ("sent", "queued", "failed", "dead", "unknown", "claimed", "skipped")}
        | {"queued": len(queued)},
        "attention": [r.as_dict() for r in attention],
        "mailings": mailings,
        "queued": queued,
        "changed_since_sent": changed,
        "skipped": skipped,
    }


def print_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    daemon = status["daemon"]
    running = [f"{i['host']} pid {i['pid']}" for i in daemon["instances"] if i["running"]]
    console.print("daemon: " + (f"running ({', '.join(running)})" if running else "not running"))
    for name, job in sorted(daemon["jobs"].items()):
        console.print(f"  {name}: next run {job.get('next_run_at') or '-'}, last "
                      f"{job.get('last_finished_at') or '-'}: {job.get('last_outcome') or '-'}")
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
    show("Mailings (one delivery per recipient)", status.get("mailings", []),
         ["campaign", "channel", "recipients", *ATTENTION, "sent", "skipped"])
    show("Queued", status["queued"], ["key", "published_at", "due", "next_attempt_at"])
    show("Changed since sent", status["changed_since_sent"], ["key", "sent_at", "note"])
    show("Skipped", status["skipped"], ["key", "last_error"])
    if not status["attention"] and not status["queued"]:
        console.print("nothing needs attention and nothing is queued")


def _split_recipients(deliveries: Iterable[Delivery]) -> tuple[
        list[Delivery], list[dict[str, Any]], list[Delivery]]:
    """Posts row by row; emails (a row per recipient) as counts per campaign and channel, with
    their unknown and dead rows first among the few listed. Streams, so 100k rows stay cheap."""
    rows: list[Delivery] = []
    mailings: dict[tuple[str, str], Counter[str]] = {}
    listed: list[Delivery] = []
    for row in deliveries:
        if not row.key.recipient:
            rows.append(row)
            continue
        mailings.setdefault((row.key.campaign, row.key.channel), Counter())[row.state] += 1
        if row.state in ATTENTION:
            listed.append(row)
            if len(listed) > 4 * MAX_RECIPIENT_ROWS:
                listed = sorted(listed, key=lambda r: ATTENTION.index(r.state))
                listed = listed[:MAX_RECIPIENT_ROWS]
    listed = sorted(listed, key=lambda r: ATTENTION.index(r.state))[:MAX_RECIPIENT_ROWS]
    table = [
        {"campaign": campaign, "channel": channel, "recipients": sum(states.values()),
         **{state: states.get(state, 0) for state in (*ATTENTION, "sent", "skipped")}}
        for (campaign, channel), states in mailings.items()
    ]
    table.sort(key=lambda m: m["campaign"], reverse=True)
    table.sort(key=lambda m: -(m["unknown"] + m["dead"]))
    return rows, table, listed
