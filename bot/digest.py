"""The digest: one email per period to every active subscriber.

A period is an ISO week in the configured time zone (or `email.period_days` days); `timing` owns
periods. This module chooses the period's briefs and the channels and reports the run; the
mailing itself (claims, sending, recording) is `bot.mailing`'s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from email.utils import make_msgid

from bot.briefs import Brief, BriefReader
from bot.channels import (
    Channel,
    ChannelError,
    PermanentError,
    missing_credentials,
    open_channels,
)
from bot.config import ConfigError, Settings
from bot.ledger import open_ledger
from bot.mailing import SETTLED, DigestReport, domain, mail, personalise, recipient_rows
from bot.message import DeliveryKey
from bot.plan import digest_briefs
from bot.render.email import PreparedEmail, Recipient, prepare_digest
from bot.subscribers import Subscribers
from bot.timing import Period, parse_period


def period_briefs(settings: Settings, period: Period, now: datetime) -> list[Brief]:
    """Publishable briefs whose publish time falls in the period (and has come)."""
    scan = BriefReader.from_settings(settings).scan(settings.brief_folders)
    return digest_briefs(scan.briefs, period, now, settings.config.briefs.published_statuses)


def digest_channels(settings: Settings, name: str | None = None, *,
                    dry_run: bool = False) -> dict[str, Channel]:
    channels = open_channels(settings, [name] if name else None, dry_run=dry_run)
    if name and not channels[name].sends_digest:
        kind = channels[name].type
        raise ConfigError(f"channel {name!r} (type {kind}) does not send the digest; choose an "
                          "smtp or outbox channel")
    chosen = {n: c for n, c in channels.items() if c.sends_digest}
    if not chosen:
        raise ConfigError('no enabled channel sends the digest: add [channels.email] with '
                          'type = "smtp" (or "outbox") to the configuration')
    unset = [] if dry_run else missing_credentials(settings, list(chosen))
    if unset:
        for channel in channels.values():
            channel.close()
        raise ConfigError("\n".join(unset))
    return chosen


def send_digest(settings: Settings, period: Period | str, *, now: datetime,
                dry_run: bool = False, to: str | None = None, progress: bool = True,
                channel: str | None = None,
                should_stop: Callable[[], bool] = lambda: False) -> DigestReport:
    """Send (or, with `dry_run`, describe) the period's digest; `to` mails one test copy."""
    if isinstance(period, str):
        period = parse_period(period, settings.tz)
    report = DigestReport(period=period, now=now, dry_run=dry_run, test_to=to)
    briefs = period_briefs(settings, period, now)
    report.briefs = [b.id for b in briefs]
    if not briefs:
        return report
    prepared = prepare_digest(settings, briefs, period_label=period.label, now=now)
    report.subject, report.html_bytes = prepared.subject, prepared.html_bytes
    channels = digest_channels(settings, channel, dry_run=dry_run)
    report.channels = list(channels)
    try:
        campaign = f"digest:{period.label}"
        sample = personalise(settings, prepared, DeliveryKey(campaign, report.channels[0],
                              "subscriber@example.org"), Recipient("subscriber@example.org"),
                              now)
        report.size = len(sample[1])
        if dry_run:
            _describe(settings, campaign, channels, report)
        elif to:
            _send_test_copy(settings, prepared, next(iter(channels.values())), to, report, now)
        else:
            mail(settings, list(channels.values()), campaign, prepared, report,
                  should_stop=should_stop, progress=progress)
            if not report.pending and not should_stop():
                _mark_sent(settings, campaign, report)
    finally:
        for item in channels.values():
            item.close()
    return report


def _mark_sent(settings: Settings, campaign: str, report: DigestReport) -> None:
    """The period's `digest:PERIOD|*` row says it went out (the daemon opens and finishes the
    same row around its own sends; a `digest send` by hand leaves the same mark), which is
    what the web archive publishes."""
    ledger = open_ledger(settings)
    try:
        ledger.mark_campaign_sent(DeliveryKey(campaign, "*"), note=report.summary())
    finally:
        ledger.close()


def _describe(settings: Settings, campaign: str, channels: dict[str, Channel],
              report: DigestReport) -> None:
    """A dry run: who would get it, read from a ledger that is never written."""
    ledger = open_ledger(settings, readonly=True)
    try:
        report.recipients = Subscribers(ledger).count("active")
        settled = Counter(row.key.channel for row in recipient_rows(ledger, campaign)
                          if row.state in SETTLED)
    finally:
        ledger.close()
    for name in channels:
        report.counts["already"] += settled[name]
        report.counts["would-send"] += max(0, report.recipients - settled[name])


def _send_test_copy(settings: Settings, prepared: PreparedEmail, channel: Channel, to: str,
                    report: DigestReport, now: datetime) -> None:
    """One copy to `to`, with its own unsubscribe link and a fresh Message-ID; no ledger."""
    from bot.addresses import normalise_email

    try:
        address = normalise_email(to)
    except ValueError as error:
        raise ConfigError(f"--to: {error}") from None
    key = DeliveryKey(f"digest:{report.period.label}:test", channel.name, address)
    message_id, data = personalise(settings, prepared, key, Recipient(address), now,
                                    message_id=make_msgid(domain=domain(settings)))
    try:
        channel.send_email(key, data, message_id)
    except (ChannelError, OSError) as error:
        report.counts["dead" if isinstance(error, PermanentError) else "failed"] += 1
        report.errors.append({"recipient": address, "error": str(error)})
    else:
        report.counts["sent"] += 1
