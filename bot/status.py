"""`briefbot status`: the sent-log read against the briefs folder, attention items first."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from bot.briefs import BriefReader
from bot.config import Settings
from bot.ledger import Delivery, Ledger
from bot.plan import make_plan, open_for_planning, plan_digest, unknown_reason

ATTENTION = ("unknown", "dead", "claimed", "failed")
#: Plan states listed under "Queued": what goes out now, later, or after its publish time.
WAITING = ("due", "queued", "scheduled")
# A daemon refreshes its heartbeat every 15 seconds; silence for longer than this means stopped.
ALIVE_WITHIN = timedelta(seconds=60)
# Emails have a row per recipient: `status` counts them per campaign and lists only this many.
MAX_RECIPIENT_ROWS = 50
# Above these, a mailing is flagged: the rates at which mailbox providers start to block a
# sender (Gmail and Yahoo ask for complaints under 0.3%; Amazon SES reviews at 5% bounces).
WARN_BOUNCE_RATE = 0.02
WARN_COMPLAINT_RATE = 0.001


def collect_status(settings: Settings, now: datetime) -> dict[str, Any]:
    channels, channel_issues = open_for_planning(settings)
    ledger = Ledger(settings.database_url, readonly=True)
    try:
        counts = ledger.counts()
        rows, mailings, recipient_attention = _split_recipients(ledger.deliveries())
        _add_rates(ledger, mailings)
        jobs = ledger.jobs()
        beats = ledger.heartbeats()
        scan = BriefReader.from_settings(settings).scan(settings.brief_folders)
        plan = make_plan(settings, ledger, channels, now, scan)
        digest = [d.as_dict() for d in plan_digest(settings, ledger, scan.briefs, now)] if any(
            c.sends_digest for c in channels.values()) else []
        wall = ledger.clock()
    finally:
        ledger.close()
        for channel in channels.values():
            channel.close()

    attention = sorted(
        [*(r for r in rows if r.state in ATTENTION), *recipient_attention],
        key=lambda r: (ATTENTION.index(r.state), r.updated_at),
    )
    steps = plan.as_dicts()
    waiting = [s for s in steps if s["state"] in WAITING]
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
        "database": ledger.url if "@" not in ledger.url and "password" not in ledger.url.lower()
        else "(redacted)",
        "channel_issues": channel_issues,
        "counts": {state: counts.get(state, 0) for state in
                   ("sent", "failed", "dead", "unknown", "claimed", "skipped")}
        | {state: sum(1 for s in waiting if s["state"] == state) for state in WAITING},
        "attention": [{**r.as_dict(), "reason": unknown_reason(r) if r.state == "unknown"
                       else r.last_error, "fix": how_to_settle(r)} for r in attention],
        "mailings": mailings,
        "digest": digest,
        "queued": waiting,
        "changed_since_sent": [s for s in steps if s["state"] == "changed"],
        "skipped": [r.as_dict() for r in rows if r.state == "skipped"]
        + [s for s in steps if s["action"] == "skip"],
        "plan": steps,
    }


def how_to_settle(row: Delivery) -> str:
    """The command, or the wait, that settles a delivery needing attention."""
    key = f"'{row.key}'"
    if row.state == "unknown":
        return f"briefbot retry {key} sends it again; briefbot skip {key} drops it"
    if row.state == "dead":
        return f"fix the cause, then briefbot retry {key}"
    if row.state == "claimed":
        return "being sent now; if its process is gone, the next run settles it"
    when = row.next_attempt_at.isoformat() if row.next_attempt_at else "the next run"
    return f"retried automatically at {when}"


def print_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
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
            table.add_row(*(escape(str(row.get(c) or "")) for c in columns))
        console.print(table)

    show("Needs attention", status["attention"], ["state", "key", "reason", "fix"])
    show("Mailings (one delivery per recipient)", status.get("mailings", []),
         ["campaign", "channel", "recipients", *ATTENTION, "sent", "skipped", "bounces",
          "complaints"])
    for mailing in status.get("mailings", []):
        for warning in mailing.get("warnings", []):
            console.print(f"[red]{escape(mailing['campaign'])}: {escape(warning)}[/red]")
    show("Digest", status["digest"], ["period", "state", "reason"])
    show("Queued", status["queued"], ["key", "state", "reason"])
    show("Changed since sent", status["changed_since_sent"], ["key", "sent_at", "reason"])
    show("Skipped", [{**row, "reason": row.get("reason") or row.get("last_error")}
                     for row in status["skipped"]], ["key", "reason"])
    for issue in status["channel_issues"]:
        console.print(f"[red]{escape(issue)}[/red]")
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


def _add_rates(ledger: Ledger, mailings: list[dict[str, Any]]) -> None:
    """Per campaign, the addresses that bounced or complained (from `bounces fetch`, and the
    refusals during the SMTP session, which are dead deliveries), as counts and as rates of
    what was sent, with a warning past what mailbox providers tolerate."""
    from sqlalchemy import inspect

    from bot.bounce_applying import campaign_counts

    reports = campaign_counts(ledger) if ledger.exists and inspect(ledger.engine).has_table(
        "mail_reports") else {}
    sent: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for mailing in mailings:
        sent[mailing["campaign"]] += mailing["sent"]
        refused[mailing["campaign"]] += mailing["dead"]
    for mailing in mailings:
        campaign = mailing["campaign"]
        counts = reports.get(campaign, Counter())
        bounces = counts["hard"] + counts["soft"] + refused[campaign]
        complaints = counts["complaint"]
        attempted = sent[campaign] + refused[campaign]
        mailing["bounces"], mailing["complaints"] = bounces, complaints
        mailing["bounce_rate"] = round(bounces / attempted, 4) if attempted else 0.0
        mailing["complaint_rate"] = round(complaints / attempted, 5) if attempted else 0.0
        mailing["warnings"] = [
            *([f"bounce rate {mailing['bounce_rate']:.1%} is above "
               f"{WARN_BOUNCE_RATE:.0%}: clean the list before the next send"]
              if mailing["bounce_rate"] > WARN_BOUNCE_RATE else []),
            *([f"complaint rate {mailing['complaint_rate']:.2%} is above "
               f"{WARN_COMPLAINT_RATE:.1%}: mailbox providers start to block senders here"]
              if mailing["complaint_rate"] > WARN_COMPLAINT_RATE else []),
        ]
