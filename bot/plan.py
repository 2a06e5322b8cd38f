"""What goes out where, and why: the one decision `run`, `run --dry-run`, `status`, `list` and
`preview` all read.

For every brief and every enabled channel the plan holds one `Step`: its state, the reason in
words, and what a run does with it (`action`). The backfill window, pacing, retry times and the
unknown-outcome policy are applied here and nowhere else; callers only act on or show steps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.briefs import Brief, BriefReader, Problem, Scan
from bot.channels import Channel, open_channel
from bot.config import Settings
from bot.ledger import CRASH_NOTE, Delivery, Ledger
from bot.message import DeliveryKey
from bot.redaction import redact
from bot.timing import Period, format_duration, period_containing, period_for
from bot.words import counted

#: Every state a step can be in, most urgent first (a brief shows its most urgent one).
STATES = (
    "due",        # goes out on this run
    "queued",     # waits: a retry time, or pacing
    "in-flight",  # another worker holds the claim right now
    "unknown",    # a send whose outcome is not known; an operator decides
    "dead",       # gave up; `briefbot retry` after fixing the cause
    "blocked",    # the brief has a problem that keeps it from going out
    "held",       # its source URL already went out as another brief: renamed, or a repost?
    "scheduled",  # publish time still ahead
    "skipped",    # recorded as never to be sent (backfill, an operator)
    "changed",    # sent, and the brief was edited since; not re-posted
    "sent",
    "draft",      # status is not a published one
    "not-posted",  # this channel sends no per-brief message (digest only, posts = false)
)
#: What a run does with a step: send it, retry it, settle an unknown outcome, record a skip.
ACTIONS = ("send", "retry", "settle", "skip")


@dataclass(frozen=True)
class Step:
    brief: Brief
    channel: str
    state: str
    reason: str
    action: str | None = None
    row: Delivery | None = None

    @property
    def key(self) -> DeliveryKey:
        return DeliveryKey(f"brief:{self.brief.id}", self.channel)

    @property
    def goes_out(self) -> bool:
        return self.state == "due"

    def as_dict(self) -> dict[str, Any]:
        row = self.row
        return {
            "key": str(self.key), "campaign": self.key.campaign, "brief": self.brief.id,
            "channel": self.channel,
            "state": self.state, "reason": self.reason, "action": self.action,
            "published_at": self.brief.published_at.isoformat()
            if self.brief.published_at else None,
            "attempts": row.attempts if row else 0,
            "next_attempt_at": row.next_attempt_at.isoformat()
            if row and row.next_attempt_at else None,
            "sent_at": row.sent_at.isoformat() if row and row.sent_at else None,
            "url": row.remote_url if row else None,
        }


@dataclass
class Plan:
    now: datetime
    briefs: list[Brief]  # oldest first
    problems: list[Problem]
    channels: list[str]
    steps: list[Step] = field(default_factory=list)

    def for_channel(self, name: str) -> list[Step]:
        return [s for s in self.steps if s.channel == name]

    def for_brief(self, brief_id: str) -> list[Step]:
        return [s for s in self.steps if s.brief.id == brief_id]

    def brief_state(self, brief: Brief) -> tuple[str, str]:
        """A brief's most urgent state over its channels, with the reason."""
        steps = [s for s in self.for_brief(brief.id) if s.state != "not-posted"]
        if not steps:
            return "not-posted", "no enabled channel posts single briefs"
        first = min(steps, key=lambda s: STATES.index(s.state))
        return first.state, first.reason

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.steps]


def open_for_planning(settings: Settings) -> tuple[dict[str, Channel], list[str]]:
    """Every enabled channel, unable to send; one that cannot be set up is reported, not fatal,
    so `status` and `preview` still show the rest."""
    channels: dict[str, Channel] = {}
    issues: list[str] = []
    for name, config in settings.config.channels.items():
        if not config.enabled:
            continue
        try:
            channels[name] = open_channel(name, config, settings, dry_run=True)
        except Exception as error:  # noqa: BLE001 - a channel that cannot start is shown
            issues.append(f"channel {name!r} cannot be set up: {redact(str(error))}; fix "
                          f"[channels.{name}] in the configuration")
    return channels, issues


def make_plan(settings: Settings, ledger: Ledger, channels: Mapping[str, Channel],
              now: datetime, scan: Scan) -> Plan:
    """The plan at `now` for `channels` (the enabled ones, opened), read against the ledger."""
    briefs = sorted(scan.briefs, key=_order(now))
    plan = Plan(now=now, briefs=briefs, problems=list(scan.problems), channels=list(channels))
    rules = _Rules(settings, ledger, now, ledger.known_sources())
    for channel in channels.values():
        rows = ledger.for_channel(channel.name, "brief:") if channel.posts_briefs else {}
        steps = [rules.step(brief, channel, rows.get(f"brief:{brief.id}")) for brief in briefs]
        plan.steps.extend(rules.pace(channel, steps))
    return plan


def unknown_reason(row: Delivery) -> str:
    """Why an outcome is unknown, in words: "after a crash" only when it was one."""
    note = redact(row.last_error or "")
    if not note or note.startswith(CRASH_NOTE):
        return "outcome unknown after a crash"
    return note if note.startswith("outcome unknown") else f"outcome unknown: {note}"


def _order(now: datetime):
    return lambda b: (b.published_at or now + timedelta(days=36500), b.id)


class _Rules:
    def __init__(self, settings: Settings, ledger: Ledger, now: datetime,
                 sources: Mapping[str, str]):
        self.sources = sources
        self.settings = settings
        self.publish = settings.config.publish
        self.statuses = settings.config.briefs.published_statuses
        self.ledger = ledger
        self.now = now

    def _when(self, moment: datetime) -> str:
        return f"{moment.astimezone(self.settings.tz):%Y-%m-%d %H:%M %Z}"

    def step(self, brief: Brief, channel: Channel, row: Delivery | None) -> Step:
        def make(state: str, reason: str, action: str | None = None) -> Step:
            return Step(brief, channel.name, state, reason, action, row)

        if not channel.posts_briefs:
            return make("not-posted", "this channel sends no per-brief message")
        if row is not None and row.state != "failed":
            return self._recorded(brief, channel, row, make)
        if (brief.status or "").lower() not in [s.lower() for s in self.statuses]:
            return make("draft", f"status is {brief.status or 'missing'!r}: never published")
        blockers = brief.blockers(self.statuses)
        if blockers:
            return make("blocked", "; ".join(blockers))
        assert brief.published_at is not None  # no publish time is a blocker
        if brief.published_at > self.now:
            return make("scheduled", f"goes out after {self._when(brief.published_at)}")
        if row is None:
            first = self.sources.get(brief.source_url or "")
            if first and first != brief.id and not brief.extra.get("repost"):
                return make("held", f"its source URL already went out as brief {first!r}: if "
                            f"this brief was renamed, give it `id: {first}`; if it is a new "
                            "item, add `repost: true`")
            window = self.publish.backfill
            if window != "all" and brief.published_at < self.now - window:
                return make("skipped", "published before the backfill window when the bot "
                            "first saw it: recorded as skipped, not sent", "skip")
            return make("due", "goes out on the next run", "send")
        error = redact(row.last_error or "an error")
        if row.next_attempt_at and row.next_attempt_at > self.now:
            return make("queued", f"retry {row.attempts + 1} at {self._when(row.next_attempt_at)} "
                        f"after: {error}")
        return make("due", f"retry {row.attempts + 1} after: {error}", "retry")

    def _recorded(self, brief: Brief, channel: Channel, row: Delivery, make) -> Step:
        if row.state == "sent":
            if row.content_hash and row.content_hash != brief.content_hash:
                return make("changed", "brief edited since it was sent; not re-posted")
            return make("sent", f"sent {self._when(row.sent_at)}" if row.sent_at else "sent")
        if row.state == "claimed":
            return make("in-flight", "being sent by a worker right now")
        if row.state == "unknown":
            if row.next_attempt_at and row.next_attempt_at > self.now:
                return make("queued", "outcome unknown; sent again (unknown_policy = resend) "
                            f"at {self._when(row.next_attempt_at)}")
            why = unknown_reason(row)
            if channel.unknown_policy == "skip" and not channel.can_reconcile:
                return make("unknown", f"{why}: `briefbot retry {row.key}` to send it again or "
                            f"`briefbot skip {row.key}` to drop it")
            how = "checked with the service" if channel.can_reconcile else "sent again"
            return make("due", f"{why}: {how} on the next run", "settle")
        if row.state == "dead":
            error = redact(row.last_error or "an error")
            return make("dead", f"gave up: {error}; `briefbot retry` after fixing the cause")
        return make("skipped", redact(row.last_error or "skipped"))

    def pace(self, channel: Channel, steps: Iterable[Step]) -> list[Step]:
        """Keep the first `budget` sends of a channel due; the rest wait for the next run."""
        budget, why = self._budget(channel)
        paced = []
        for step in steps:
            if step.state == "due":
                if budget <= 0:
                    step = Step(step.brief, step.channel, "queued", f"paced: {why}", None,
                                step.row)
                budget -= 1
            paced.append(step)
        return paced

    def _budget(self, channel: Channel) -> tuple[int, str]:
        config = channel.config
        limit = config.max_per_run or self.publish.max_per_run
        gap = config.min_gap if config.min_gap is not None else self.publish.min_gap
        if not gap:
            return limit, f"at most {limit} per run; goes out on the next run"
        last = self.ledger.last_sent_at(channel.name)
        if last and self.ledger.clock() - last < gap:  # the sent-log's clock: it wrote `last`
            return 0, f"one post per {format_duration(gap)}; next after {self._when(last + gap)}"
        return 1, f"one post per {format_duration(gap)}; goes out on a later run"




# -- the digest -----------------------------------------------------------------------------


def digest_briefs(briefs: Iterable[Brief], period: Period, now: datetime,
                  statuses: Iterable[str]) -> list[Brief]:
    """The briefs a period's digest carries: publishable, published in the period, by `now`."""
    statuses = list(statuses)
    return sorted(
        (b for b in briefs if b.is_publishable(statuses) and b.published_at
         and period.contains(b.published_at) and b.published_at <= now),
        key=lambda b: (b.published_at, b.id),
    )


@dataclass(frozen=True)
class DigestStep:
    """One period's digest: what it carries and how far its sending has got."""

    period: Period
    briefs: list[Brief]
    state: str  # collecting, due, partial, sent, skipped, empty
    reason: str
    recipients: Mapping[str, int] = field(default_factory=dict)  # state -> deliveries

    def as_dict(self) -> dict[str, Any]:
        return {"period": self.period.label, "describe": self.period.describe(),
                "briefs": [b.id for b in self.briefs], "state": self.state,
                "reason": self.reason, "recipients": dict(self.recipients)}


def plan_digest(settings: Settings, ledger: Ledger, briefs: Iterable[Brief],
                now: datetime) -> tuple[DigestStep, DigestStep]:
    """The period being collected now and the last one that closed."""
    tz, days = settings.tz, settings.config.email.period_days
    statuses = settings.config.briefs.published_statuses
    briefs = list(briefs)
    schedule = settings.config.schedule.digest
    current = period_containing(now, tz, days)
    chosen = digest_briefs(briefs, current, now, statuses)
    collecting = DigestStep(current, chosen, "collecting",
                            f"{counted(len(chosen), 'brief')} so far; goes out "
                            f"at the first digest run ({schedule}) after it closes")
    closed = period_for(now, tz, days)
    return collecting, _closed_digest(ledger, closed,
                                      digest_briefs(briefs, closed, now, statuses), schedule)


def _closed_digest(ledger: Ledger, period: Period, briefs: list[Brief],
                   schedule: str) -> DigestStep:
    campaign = f"digest:{period.label}"
    row = ledger.get(DeliveryKey(campaign, "*"))
    counts = Counter(r.state for r in ledger.deliveries(campaign_prefix=campaign)
                     if r.key.campaign == campaign and r.key.recipient)
    reached = counts.get("sent", 0)
    tally = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    if row is not None and row.state == "sent":
        return DigestStep(period, briefs, "sent", f"sent to "
                          f"{counted(reached, 'subscriber')} ({tally or 'none'})", counts)
    if row is not None and row.state == "skipped":
        return DigestStep(period, briefs, "skipped", row.last_error or "skipped", counts)
    if row is not None or counts:
        return DigestStep(period, briefs, "partial", f"under way or interrupted: {tally}; the "
                          "next digest run resumes at the next unsent subscriber", counts)
    if not briefs:
        return DigestStep(period, briefs, "empty", "no publishable briefs: nothing to send")
    return DigestStep(period, briefs, "due", f"not sent yet: the daemon sends it at its digest "
                      f"run ({schedule}); `briefbot digest send --period {period.label}` sends "
                      "it now")


def read_plan(settings: Settings, now: datetime) -> tuple[Plan, list[str]]:
    """The plan at `now` from a read-only sent-log, and the channels that could not be set up:
    what `briefbot list` shows."""
    channels, issues = open_for_planning(settings)
    ledger = Ledger(settings.database_url, readonly=True)
    try:
        scan = BriefReader.from_settings(settings).scan(settings.brief_folders)
        return make_plan(settings, ledger, channels, now, scan), issues
    finally:
        ledger.close()
        for channel in channels.values():
            channel.close()
