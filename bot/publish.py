"""Orchestration: select due briefs → claim → render → send → record.

All decisions about *what* goes out live here, as plain functions of an explicit `now`; the
scheduler only decides *when* they run.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bot.briefs import Brief, BriefReader, Problem
from bot.channels import (
    CannotReconcile,
    Channel,
    ChannelError,
    Message,
    PermanentError,
    TransientError,
    UnknownOutcome,
    missing_credentials,
    open_channels,
)
from bot.config import ConfigError, Settings
from bot.ledger import Ledger, open_ledger
from bot.mailing import mail_brief
from bot.message import DeliveryKey
from bot.plan import Plan, Step, make_plan
from bot.retry import next_attempt
from bot.words import counted

FAILED_STATES = {"failed", "dead", "unknown", "error"}
log = logging.getLogger("briefbot.publish")


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
                        limit=self.message.limit, notes=list(self.message.notes))
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
        order = ("would-send", "sent", "queued", "skipped", "failed", "dead", "unknown", "error")
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
        brief, key, row = step.brief, step.key, step.row
        content_hash = brief.content_hash
        if step.action == "send":
            claimed = self.ledger.claim(key, content_hash=content_hash)
        elif step.action == "retry":
            claimed = self.ledger.reclaim(key, from_states=["failed"], due_by=now,
                                          content_hash=content_hash)
        else:
            claimed = self.ledger.reclaim(key, from_states=["unknown"], content_hash=content_hash)
        if not claimed:
            return  # another worker has it: its outcome is its own to report
        attempts = (row.attempts if row else 0) + 1

        try:
            message = channel.render(brief, key)
        except Exception as error:  # noqa: BLE001
            detail = f"cannot render: {error}"
            self.ledger.record_failure(key, detail, retry_at=None)
            report.add(brief, channel, "dead", detail)
            return

        if step.action == "settle":
            try:
                receipt = channel.reconcile(message)
            except CannotReconcile as error:
                if channel.config.unknown_policy == "skip":
                    self.ledger.release(key, note=f"outcome unknown: {error}")
                    report.add(brief, channel, "unknown", str(error))
                    return
                receipt = None
            except ChannelError as error:
                self.ledger.release(key, note=f"reconcile failed: {error}")
                report.add(brief, channel, "unknown", f"reconcile failed: {error}")
                return
            if receipt is not None:
                self.ledger.record_sent(key, remote_id=receipt.remote_id, remote_url=receipt.url,
                                        note="reconciled after an unknown outcome")
                report.add(brief, channel, "sent", "reconciled: it had gone out", receipt.url)
                return

        try:
            receipt = mail_brief(channel, message) if channel.fans_out else channel.send(message)
        except PermanentError as error:
            self.ledger.record_failure(key, str(error), retry_at=None)
            report.add(brief, channel, "dead", str(error))
        except UnknownOutcome as error:
            self.ledger.release(key, note=f"outcome unknown: {error}")
            report.add(brief, channel, "unknown", f"{error}; settled on the next run")
        except (TransientError, ChannelError, OSError) as error:
            self._retry_later(key, brief, channel, attempts, error, now, report)
        except Exception as error:  # noqa: BLE001 - an adapter's bug must not stop the run
            log.exception("channel %s failed on %s", channel.name, key)
            detail = f"the adapter failed unexpectedly ({error!r}); it may have sent"
            self.ledger.release(key, note=detail)
            report.add(brief, channel, "unknown", detail)
        else:
            self.ledger.record_sent(key, remote_id=receipt.remote_id, remote_url=receipt.url)
            report.add(brief, channel, "sent", receipt.note or "", receipt.url, message)

    def _retry_later(self, key: DeliveryKey, brief: Brief, channel: Channel, attempts: int,
                     error: Exception, now: datetime, report: RunReport) -> None:
        publish = self.settings.config.publish
        retry_at = next_attempt(attempts, error, now, publish, self.rng)
        if retry_at is None:
            detail = f"gave up after {attempts} attempts: {error}"
            self.ledger.record_failure(key, detail, retry_at=None)
            report.add(brief, channel, "dead", detail)
            return
        self.ledger.record_failure(key, str(error), retry_at=retry_at)
        report.add(brief, channel, "failed",
                   f"{error} (attempt {attempts} of {publish.max_attempts}; retry at "
                   f"{retry_at:%Y-%m-%d %H:%M:%S} UTC)")


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


def publish_due(settings: Settings, now: datetime, *, dry_run: bool = False) -> RunReport:
    """One publishing run with fresh connections: what `briefbot run --once` does."""
    check_can_publish(settings, dry_run=dry_run)
    ledger = open_ledger(settings, readonly=dry_run)
    channels = open_channels(settings, dry_run=dry_run)
    try:
        return Publisher(settings, ledger, channels).publish_due(now, dry_run=dry_run)
    finally:
        for channel in channels.values():
            channel.close()
        ledger.close()
