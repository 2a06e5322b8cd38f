"""A mailing: one prepared email to every active subscriber, each recipient a delivery.

The email is rendered once (a digest, or a single brief). One thread streams the subscriber
list and builds each message by swapping the personal parts into the prepared bytes;
`connections` sender threads then, per recipient, check the address is still active, claim the
delivery `(digest:<period>, <channel>, <email>)` with one atomic insert, send over their own
persistent connection, and record the outcome with one update. Because the claim comes before
the send and the ledger's unique key is the lock, a run that crashed resumes at the next unsent
recipient, and several processes or machines sending the same digest share the work without
doubles. Only a message in flight when a process dies can have an unknown outcome; the
channel's `unknown_policy` settles it (`resend` reuses the same Message-ID, so the copy is
recognisable).

Over SMTP, ledger writes are not batched: on SQLite (WAL) a claim or a record is one
autocommitted statement of about 40 µs, small next to an SMTP transaction, while batching them
would widen the window of sent-but-unrecorded messages (duplicates after a crash under
`resend`) from one per sender to one batch per sender. Through a provider's batch endpoint
(`bot.channels.batch`) the call itself is the batch, so the subscribers are streamed in chunks
of `batch_size` and each chunk is claimed, sent and recorded together
(`DeliveryStep.deliver_batch`); a crash can then leave the batches in flight unknown.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from functools import cache
from typing import Any

from bot import watermark
from bot.channels import Channel
from bot.channels.batch import BatchChannel, BatchItem
from bot.config import Settings
from bot.delivery import BatchEntry, DeliveryStep, Prior, Result
from bot.ledger import Delivery, Ledger, open_ledger
from bot.mailing_report import MAX_ERRORS, SETTLED, DigestReport, Tally  # noqa: F401
from bot.message import (
    DeliveryKey,
    Message,
    Receipt,
    TransientError,
)
from bot.progress import ProgressBar
from bot.render.email import PreparedEmail, Recipient, message_id_for
from bot.render.mime import format_recipient
from bot.subscribers import Subscribers


def mail_brief(channel: Channel, message: Message) -> Receipt:
    """Fan a single-brief email out to every subscriber (`email.single_brief_email`).

    The publisher's delivery `(brief:<id>, <channel>, "")` stands for the whole mailing; each
    subscriber gets their own `(brief:<id>, <channel>, <email>)`. While some are still to be
    retried this raises `TransientError`, so the publisher runs the mailing again later and
    only those are tried again.
    """
    settings = channel.settings
    prepared: PreparedEmail = message.prepared_email
    now = datetime.now(UTC)
    report = DigestReport(period=None, now=now, briefs=[message.key.campaign])
    mail(settings, [channel], message.key.campaign, prepared, report, progress=False)
    counts = ", ".join(f"{report.counts[s]} {s}" for s in report.ORDER if report.counts[s])
    if report.stopped:
        raise TransientError(f"mailing stopped: {report.stopped} ({counts})")
    if report.retryable:
        raise TransientError(f"some subscribers are still to be reached ({counts})")
    return Receipt(note=f"mailed to subscribers: {counts or 'nobody subscribed'}")


def mail(settings: Settings, channels: list[Channel], campaign: str, prepared: PreparedEmail,
          report: DigestReport, *, should_stop: Callable[[], bool] = lambda: False,
          progress: bool) -> None:
    """Mail `prepared` to every active subscriber through each channel, sharing one ledger."""
    ledger = open_ledger(settings)
    try:
        watermark.guard(settings, ledger)
        subscribers = Subscribers(ledger)
        ledger.expire_leases()
        report.recipients = subscribers.count("active")
        for channel in channels:
            Mailing(settings, ledger, subscribers, channel, campaign, prepared,
                    now=report.now, report=report, should_stop=should_stop,
                    progress=progress).run()
        watermark.guard(settings, ledger)
    finally:
        ledger.close()


def recipient_rows(ledger: Ledger, campaign: str) -> Iterator[Delivery]:
    """The campaign's per-recipient deliveries (the prefix query also matches longer names)."""
    for row in ledger.deliveries(campaign_prefix=campaign):
        if row.key.campaign == campaign and row.key.recipient:
            yield row


def domain(settings: Settings) -> str:
    return _domain_of(settings.config.email.from_address)


@cache
def _domain_of(from_address: str) -> str:
    """The sender's domain, for Message-IDs (cached: parsing an address is slow, per message)."""
    return parseaddr(from_address)[1].rpartition("@")[2] or "localhost"


def personalise(settings: Settings, prepared: PreparedEmail, key: DeliveryKey,
                 recipient: Recipient, now: datetime, *,
                 message_id: str | None = None) -> tuple[str, bytes]:
    from bot import tokens

    message_id = message_id or message_id_for(key, domain(settings))
    data = prepared.personalise(
        recipient, message_id=message_id,
        unsubscribe_url=tokens.unsubscribe_url(settings, recipient.email),
        unsubscribe_mailto=tokens.unsubscribe_mailto(settings, recipient.email), date=now,
    )
    return message_id, data


def _size(item: Any) -> int:
    """Recipients in a unit of work: a chunk of a batched mailing, or one."""
    return len(item) if isinstance(item, list) else 1


@dataclass(frozen=True)
class _Row:
    state: str
    attempts: int
    next_attempt_at: datetime | None


ALREADY = _Row("sent", 0, None)  # settled before this run: nothing to do


@dataclass(frozen=True)
class _Item:
    """One subscriber's work: their ledger row so far, and their message (or why none)."""

    subscriber: Any
    row: _Row | None
    key: DeliveryKey | None = None
    message: tuple[str, bytes] | ValueError | None = None


class Mailing:
    """One prepared email to every active subscriber through one channel."""

    def __init__(self, settings: Settings, ledger: Ledger, subscribers: Subscribers,
                 channel: Channel, campaign: str, prepared: PreparedEmail, *, now: datetime,
                 report: DigestReport, should_stop: Callable[[], bool] = lambda: False,
                 progress: bool = False):
        self.settings = settings
        self.ledger = ledger
        self.subscribers = subscribers
        self.channel = channel
        self.campaign = campaign
        self.prepared = prepared
        self.now = now
        self.report = report
        self.should_stop = should_stop
        self.progress = progress
        self.policy = channel.unknown_policy
        self.stop = threading.Event()
        self.crashed: Exception | None = None
        self.email = settings.config.email
        self.step = DeliveryStep(ledger, channel, settings.config.publish)
        #: Through a provider's batch endpoint: chunks of `batch_size` recipients, each
        #: claimed, sent and recorded together (`DeliveryStep.deliver_batch`).
        self.batched = isinstance(channel, BatchChannel)
        self.resuming = True

    # -- the run ------------------------------------------------------------------------

    def run(self) -> None:
        started = time.perf_counter()
        workers = max(1, self.channel.connections)
        with ProgressBar(self.progress, self.report.recipients,
                       f"{self.campaign} → {self.channel.name}") as bar:
            if self.batched:
                # A first run (no row yet) reads no rows per batch: a key someone else takes
                # meanwhile is one their claim beats ours to ("elsewhere").
                self.resuming = self.ledger.has_rows(self.campaign, self.channel.name)
                self._threaded(self._chunks(), workers, bar)
            else:
                done, open_rows = self._existing()
                self._threaded(self._work(done, open_rows), workers, bar)
        self.report.seconds += time.perf_counter() - started
        self.report.stats.update(self.channel.stats)
        if self.crashed is not None:
            raise self.crashed  # not a delivery problem (the database, a bug): say so loudly

    def _existing(self) -> tuple[set[str], dict[str, _Row]]:
        """This campaign's rows so far: settled addresses, and the open ones in detail."""
        done: set[str] = set()
        open_rows: dict[str, _Row] = {}
        for row in recipient_rows(self.ledger, self.campaign):
            if row.key.channel != self.channel.name:
                continue
            if row.state in SETTLED:
                done.add(row.key.recipient)
            else:
                open_rows[row.key.recipient] = _Row(row.state, row.attempts, row.next_attempt_at)
        return done, open_rows

    def _work(self, done: set[str], open_rows: dict[str, _Row]) -> Iterator[_Item]:
        """Every active subscriber with their open row, and their message already built.

        Building the message here, in the thread that reads the list, overlaps it with the
        senders' waits for the server; it depends on nothing the claim decides.
        """
        for subscriber in self.subscribers.iter_active():
            email = subscriber.email
            if email in done:
                yield _Item(subscriber, ALREADY)
                continue
            key = DeliveryKey(self.campaign, self.channel.name, email)
            try:
                message = personalise(self.settings, self.prepared, key,
                                       Recipient(email, subscriber.name), self.now)
            except ValueError as error:
                message = error
            yield _Item(subscriber, open_rows.get(email), key, message)

    def _stopping(self) -> bool:
        return self.stop.is_set() or self.should_stop()

    def _chunks(self) -> Iterator[list[Any]]:
        """Active subscribers, `batch_size` at a time, streamed: never the whole list."""
        size = self.channel.batch_size
        chunk: list[Any] = []
        for subscriber in self.subscribers.stream_active(batch=max(size, 1000)):
            chunk.append(subscriber)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _worker(self, work: Iterator[Any], bar: ProgressBar) -> None:
        tally = Tally()
        try:
            for item in work:
                if self._stopping():
                    tally.counts["left"] += _size(item)
                    continue
                try:
                    if self.batched:
                        self._batch(item, tally)
                    else:
                        self._one(item, tally)
                except Exception as error:  # noqa: BLE001 - re-raised by `run` once all stop
                    self.crashed = self.crashed or error
                    self.stop.set()
                for _ in range(_size(item)):
                    bar.advance()
        finally:
            self.ledger.release_thread()
            self.report.add(tally.counts, tally.errors, tally.bounced)

    def _threaded(self, work: Iterator[_Item], workers: int, bar: ProgressBar) -> None:
        """This thread reads the list and builds messages; `workers` threads send them."""
        items: queue.Queue = queue.Queue(maxsize=workers * (2 if self.batched else 16))

        def drain() -> Iterator[_Item]:
            while (item := items.get()) is not None:
                yield item

        threads = [threading.Thread(target=self._worker, args=(drain(), bar), daemon=True,
                                    name=f"digest-{self.channel.name}-{n}")
                   for n in range(workers)]
        for thread in threads:
            thread.start()
        try:
            for item in work:
                if self._stopping():
                    self.report.add(Counter(left=_size(item)), [], 0)
                    continue
                items.put(item)
        except BaseException:
            self.stop.set()
            raise
        finally:
            for _ in threads:
                items.put(None)
            for thread in threads:
                thread.join()

    # -- one recipient --------------------------------------------------------------------

    def _one(self, item: _Item, tally: Tally) -> None:
        subscriber, row, key = item.subscriber, item.row, item.key
        email = subscriber.email
        waits = self._waits(row)
        if waits:
            tally.counts[waits] += 1
            return
        # Asked again right before the claim: an unsubscribe stops even a send under way.
        if self.subscribers.state_of(email) != "active":
            tally.counts["unsubscribed"] += 1
            return
        prepared = item.message

        def build() -> Message:
            if isinstance(prepared, ValueError):
                raise prepared  # an address that cannot be written into a header
            message_id, data = prepared
            return Message(key=key, kind="email", text="", raw=data, message_id=message_id)

        result = self.step.deliver(
            key, Prior(row.state, row.attempts) if row is not None else None, self.now, build,
            send=lambda m: self.channel.send_email(key, m.raw, m.message_id))
        self._account(result, subscriber, tally)

    def _waits(self, row: _Row | None) -> str | None:
        """Why a recipient with this row is not tried now (a count of the report), or None."""
        if row is ALREADY or (row is not None and row.state in SETTLED):
            return "already"
        if row is None:
            return None
        if row.state == "claimed":
            return "busy"  # another worker's, or a dead one's until its lease ends
        if row.state in ("failed", "unknown") and row.next_attempt_at and (
                row.next_attempt_at > self.now):
            return "queued"
        if row.state == "unknown" and self.policy == "skip" and not self.channel.can_reconcile:
            return "unknown"
        return None

    # -- a batch of recipients --------------------------------------------------------------

    def _batch(self, chunk: list[Any], tally: Tally) -> None:
        """A chunk of subscribers through the channel's batch endpoint: their rows and states
        read in one query each, the rest is the delivery step's."""
        emails = [subscriber.email for subscriber in chunk]
        rows = (self.ledger.open_rows(self.campaign, self.channel.name, emails)
                if self.resuming else {})
        # Asked again right before the claim: an unsubscribe stops even a send under way.
        active = self.subscribers.active_among(emails)
        entries: list[BatchEntry] = []
        whose = []
        for subscriber in chunk:
            email = subscriber.email
            found = rows.get(email)
            row = _Row(found.state, found.attempts, found.next_attempt_at) if found else None
            waits = self._waits(row)
            if waits or email not in active:
                tally.counts[waits or "unsubscribed"] += 1
                continue
            key = DeliveryKey(self.campaign, self.channel.name, email)
            prior = Prior(row.state, row.attempts) if row is not None else None
            try:
                entries.append(BatchEntry(key, prior, self._item(key, subscriber)))
            except ValueError as error:
                entries.append(BatchEntry(key, prior, None, str(error)))
            whose.append(subscriber)
        results = self.step.deliver_batch(entries, self.now, self.prepared)
        for subscriber, result in zip(whose, results, strict=True):
            self._account(result, subscriber, tally)

    def _item(self, key: DeliveryKey, subscriber: Any) -> BatchItem:
        """One recipient's personal parts (and whole message, for a provider that wants it)."""
        from bot import tokens

        recipient = Recipient(key.recipient, subscriber.name)
        format_recipient(recipient)  # ValueError: an address no header can carry
        message_id = message_id_for(key, domain(self.settings))
        url = tokens.unsubscribe_url(self.settings, key.recipient)
        mailto = tokens.unsubscribe_mailto(self.settings, key.recipient)
        raw = None
        if self.channel.wants_raw:
            raw = self.prepared.personalise(recipient, message_id=message_id,
                                            unsubscribe_url=url, unsubscribe_mailto=mailto,
                                            date=self.now)
        return BatchItem(key=key, address=key.recipient, name=subscriber.name,
                         message_id=message_id, unsubscribe_url=url,
                         unsubscribe_mailto=mailto, raw=raw)

    def _account(self, result: Result, subscriber: Any, tally: Tally) -> None:
        """What one recipient's delivery means for the list and the run."""
        email = subscriber.email
        error = result.error
        if result.state == "elsewhere":
            tally.counts["elsewhere"] += 1  # another process took it first
        elif result.state == "sent":
            # Accepted by the server. Through a relay with a return path, that says nothing of
            # the mailbox (its reports come later, by mail), so soft bounces keep counting.
            # A provider's acceptance says nothing of the mailbox either (its webhooks do).
            if subscriber.soft_bounces and not self.email.bounce_address and not self.batched:
                self.subscribers.record_delivered(email)
            tally.counts["sent"] += 1
        else:
            tally.fail(result.state, email, result.detail)
        if error is not None and error.run_level and not self.stop.is_set():
            self.stop.set()
            self.report.stopped = str(error)
        if error is not None and error.bounce and self.subscribers.record_bounce(
            email, hard=error.bounce == "hard", hard_limit=self.email.hard_bounces,
            soft_limit=self.email.soft_bounces,
        ):
            tally.bounced += 1
