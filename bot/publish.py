"""Orchestration: select due briefs → claim → render → send → record.

All decisions about *what* goes out live here, as plain functions of an explicit `now`; the
scheduler only decides *when* they run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bot import watermark
from bot.briefs import Brief, BriefReader, Problem
from bot.channels import (
    Channel,
    Message,
    missing_credentials,
    open_channels,
)
from bot.config import ConfigError, Settings
from bot.delivery import DeliveryStep, Prior
from bot.ledger import Ledger, open_ledger
from bot.mailing import mail_brief
from bot.plan import Plan, Step, make_plan
from bot.words import counted

FAILED_STATES = {"failed", "dead", "unknown", "error", "lost"}


@dataclass
class Outcome:
    brief_id: str
    channel: str
    state: str  # sent, failed, dead, unknown, skipped, queued, would-send, error
    detail: str = ""
    url: str | None = None
    message: Message | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "brief": self.brief_id, "channel": self.channel, "state": self.state,
            "detail": self.detail, "url": self.url,
        }
        if self.message is not None:
            data.update(text=self.message.text, length=self.message.length,
                        limit=self.message.limit, notes=[note.text for note in self.message.notes])
        return data


@dataclass
class RunReport:
    now: datetime
    dry_run: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def add(self, brief: Brief, channel: Channel, state: str, detail: str = "",
            url: str | None = None, message: Message | None = None) -> None:
        self.outcomes.append(Outcome(brief.id, channel.name, state, detail, url, message))

    def count(self, state: str) -> int:
        return sum(1 for o in self.outcomes if o.state == state)

    @property
    def failed(self) -> bool:
        return bool(self.problems) or any(o.state in FAILED_STATES for o in self.outcomes)

    def summary(self) -> str:
        if not self.outcomes and self.problems:
            return (f"{counted(len(self.problems), 'error')} in the briefs; nothing "
                    "sent (briefbot check shows each)")
        if not self.outcomes:
            return "nothing to send: every due brief has already gone out"
        order = ("would-send", "sent", "queued", "skipped", "failed", "dead", "unknown", "lost",
                 "error")
        parts = [f"{self.count(s)} {s}" for s in order if self.count(s)]
        return ", ".join(parts)


class Publisher:
    """Publishes due briefs on every enabled channel. Keeps the reader's cache between runs."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        channels: dict[str, Channel],
        *,
        reader: BriefReader | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        rng: Callable[[], float] = random.random,
    ):
        self.settings = settings
        self.ledger = ledger
        self.channels = channels
        self.reader = reader or BriefReader.from_settings(settings)
        self.should_stop = should_stop
        self.rng = rng
        self.steps: dict[str, DeliveryStep] = {}

    def plan(self, now: datetime) -> Plan:
        scan = self.reader.scan(self.settings.brief_folders)
        return make_plan(self.settings, self.ledger, self.channels, now, scan)

    def publish_due(self, now: datetime, *, dry_run: bool = False) -> RunReport:
        report = RunReport(now=now, dry_run=dry_run)
        if not dry_run:
            self.ledger.expire_leases()
        plan = self.plan(now)
        report.problems.extend(plan.errors)
        for channel in self.channels.values():
            for step in plan.for_channel(channel.name):
                self._carry_out(channel, step, now, report, dry_run)
        return report

    def _carry_out(self, channel: Channel, step: Step, now: datetime, report: RunReport,
                   dry_run: bool) -> None:
        brief = step.brief
        if step.action == "skip":
            if not dry_run:
                self.ledger.mark_skipped(step.key, step.reason, content_hash=brief.content_hash)
            report.add(brief, channel, "skipped", step.reason)
        elif step.state in ("queued", "unknown"):
            report.add(brief, channel, step.state, step.reason)
        elif step.action is None:
            return  # sent, scheduled, draft…: nothing for this run to do or say
        elif self.should_stop():
            report.add(brief, channel, "queued", "stopping: waits for the next run")
        elif dry_run:
            self._rehearse(channel, step, report)
        else:
            self._deliver(channel, step, now, report)

    def _rehearse(self, channel: Channel, step: Step, report: RunReport) -> None:
        try:
            message = channel.render(step.brief, step.key)
        except Exception as error:  # noqa: BLE001 - one broken brief must not stop a run
            report.add(step.brief, channel, "error", f"cannot render: {error}")
            return
        report.add(step.brief, channel, "would-send", message.text, message=message)

    def _deliver(self, channel: Channel, step: Step, now: datetime, report: RunReport) -> None:
        brief, row = step.brief, step.row
        if channel.name not in self.steps:
            self.steps[channel.name] = DeliveryStep(self.ledger, channel,
                                                    self.settings.config.publish, rng=self.rng)
        send = (lambda message: mail_brief(channel, message)) if channel.fans_out else None
        result = self.steps[channel.name].deliver(
            step.key, Prior(row.state, row.attempts) if row else None, now,
            lambda: channel.render(brief, step.key), content_hash=brief.content_hash, send=send)
        if result.state == "elsewhere":
            return  # another worker has it: its outcome is its own to report
        if result.state == "sent":
            if brief.source_url:
                self.ledger.remember_source(brief.source_url, brief.id)
            if result.message is not None and result.message.text:
                self.ledger.remember_text(step.key, result.message.text)
        url = result.receipt.url if result.receipt else None
        message = result.message if result.state == "sent" else None
        report.add(brief, channel, result.state, result.detail, url, message)


def check_can_publish(settings: Settings, *, dry_run: bool = False) -> None:
    """A run with nowhere to read from, nothing to send to, or a channel without its secret
    is a configuration error, not "nothing to send"."""
    source = str(settings.path) if settings.path else "the configuration"
    missing = [folder for folder in settings.brief_folders if not folder.exists()]
    if missing:
        raise ConfigError(f"{source}: briefs.folders: {', '.join(map(str, missing))} does not "
                          "exist; create it or fix the path")
    if not any(c.enabled for c in settings.config.channels.values()):
        raise ConfigError(f"{source}: no enabled channel: add a [channels.NAME] table (for "
                          'example type = "outbox") or set enabled = true')
    unset = [] if dry_run else missing_credentials(settings)
    if unset:
        raise ConfigError("\n".join(unset))


def publish_due(settings: Settings, now: datetime, *, dry_run: bool = False,
                should_stop: Callable[[], bool] = lambda: False) -> RunReport:
    """One publishing run with fresh connections: what `briefbot run --once` does."""
    check_can_publish(settings, dry_run=dry_run)
    ledger = open_ledger(settings, readonly=dry_run)
    channels = open_channels(settings, dry_run=dry_run)
    try:
        if not dry_run:
            watermark.guard(settings, ledger)
        report = Publisher(settings, ledger, channels, should_stop=should_stop).publish_due(
            now, dry_run=dry_run)
        if not dry_run:
            watermark.guard(settings, ledger)
        return report
    finally:
        for channel in channels.values():
            channel.close()
        ledger.close()
