"""The one delivery step: claim → settle an unknown outcome → send → record.

Posts (`bot.publish`) and emails (`bot.mailing`) both go through `DeliveryStep.deliver`; they
only choose what to deliver and report what came of it. The step owns every rule of a single
delivery: the guarded claim, reconciling before resending, which error means what, the retry
schedule, the bound on resending unknown outcomes, and keeping the claim alive while a slow send
runs, so nobody else takes it over and sends a second copy. `deliver_batch` is the same step for
a provider's batch endpoint: a batch claimed in one statement, one call, every recipient's
outcome recorded in one transaction, through the same error mapping (`_decide`).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot import redaction
from bot.channels import Channel
from bot.channels.batch import BatchChannel, BatchItem, BatchOutcome, waiting_out
from bot.config import PublishConfig
from bot.ledger import Ledger, Outcome
from bot.message import (
    CannotReconcile,
    ChannelError,
    DeliveryKey,
    Message,
    PermanentError,
    Receipt,
    UnknownOutcome,
)
from bot.retry import next_attempt

log = logging.getLogger("briefbot.delivery")


@dataclass(frozen=True)
class Prior:
    """What the sent-log held for a key before this attempt (None: never tried)."""

    state: str  # failed or unknown
    attempts: int


@dataclass(frozen=True)
class Result:
    #: sent, failed (retried later), dead, unknown, elsewhere (another worker has it), or
    #: lost (the claim was taken over while sending: it may have gone out twice)
    state: str
    detail: str = ""
    receipt: Receipt | None = None
    message: Message | None = None
    error: ChannelError | None = None


@dataclass(frozen=True)
class BatchEntry:
    """One recipient of a batch: its key, its row so far, and its personalised item (None with
    `problem` when the address cannot be written into a message)."""

    key: DeliveryKey
    prior: Prior | None
    item: BatchItem | None
    problem: str = ""


def _message(item: BatchItem) -> Message:
    return Message(key=item.key, kind="email", text="", raw=item.raw,
                   message_id=item.message_id)


class DeliveryStep:
    """Delivers keys over one channel with one ledger; safe to share between threads."""

    def __init__(self, ledger: Ledger, channel: Channel, publish: PublishConfig, *,
                 rng: Callable[[], float] = random.random):
        self.ledger = ledger
        self.channel = channel
        self.publish = publish
        self.rng = rng
        self.policy = channel.unknown_policy
        self._renewer = _LeaseRenewer(ledger)

    def deliver(self, key: DeliveryKey, prior: Prior | None, now: datetime,
                build: Callable[[], Message], *, content_hash: str | None = None,
                send: Callable[[Message], Receipt] | None = None) -> Result:
        """One attempt at `key`. `build` renders the message once the claim is held; `send`
        defaults to the channel's."""
        if not self._claim(key, prior, now, content_hash):
            return Result("elsewhere", "another worker has it")
        attempts = (prior.attempts if prior else 0) + 1
        try:
            message = build()
        except Exception as error:  # noqa: BLE001 - one broken message must not stop a run
            detail = f"cannot render: {_said(error)}"
            self.ledger.record_failure(key, detail, retry_at=None)
            return Result("dead", detail)

        if prior is not None and prior.state == "unknown":
            settled = self._settle(key, message, attempts, now)
            if settled is not None:
                return settled

        with self._renewer.holding(key):
            try:
                receipt = (send or self.channel.send)(message)
            except (ChannelError, OSError) as error:
                return self._failed(key, error, attempts, now, message)
            except Exception as error:  # noqa: BLE001 - an adapter's bug must not stop the run
                log.exception("channel %s failed on %s", self.channel.name, key)
                detail = (f"the adapter failed unexpectedly ({redaction.redact(repr(error))}); "
                          "it may have sent")
                self.ledger.release(key, note=detail)
                return Result("unknown", detail, message=message)
        if not self.ledger.record_sent(key, remote_id=receipt.remote_id, remote_url=receipt.url,
                                       note=receipt.note):
            detail = ("sent, but the claim had been taken over meanwhile: another worker may "
                      "have sent it too; check the receiver")
            log.error("%s: %s", key, detail)
            return Result("lost", detail, receipt, message)
        return Result("sent", receipt.note or "", receipt, message)

    def deliver_batch(self, entries: Sequence[BatchEntry], now: datetime,
                      prepared: Any) -> list[Result]:
        """One attempt at every entry's key through the channel's batch endpoint: the new keys
        claimed in one statement, one `send_batch` call, every outcome recorded in one
        statement. The results are in the entries' order. All keys share campaign and channel.
        """
        channel: BatchChannel = self.channel  # type: ignore[assignment]
        if not entries:
            return []
        campaign, name = entries[0].key.campaign, entries[0].key.channel
        fresh = [e.key.recipient for e in entries if e.prior is None]
        claimed = self.ledger.claim_batch(campaign, name, fresh)
        results: dict[str, Result] = {}
        held: list[tuple[BatchEntry, int]] = []
        dead: list[Outcome] = []
        for entry in entries:
            key, prior = entry.key, entry.prior
            if not (key.recipient in claimed if prior is None
                    else self._claim(key, prior, now, None)):
                results[key.recipient] = Result("elsewhere", "another worker has it")
                continue
            attempts = (prior.attempts if prior else 0) + 1
            if entry.item is None:  # an address that cannot be written into a header
                detail = f"cannot render: {entry.problem}"
                dead.append(Outcome(key.recipient, "dead", note=detail))
                results[key.recipient] = Result("dead", detail)
                continue
            if prior is not None and prior.state == "unknown":
                settled = self._settle(key, _message(entry.item), attempts, now)
                if settled is not None:
                    results[key.recipient] = settled
                    continue
            held.append((entry, attempts))
        outcomes = dead
        if held:
            answers = self._send_batch(channel, prepared, [e.item for e, _ in held])
            for (entry, attempts), answer in zip(held, answers, strict=True):
                recipient = entry.key.recipient
                if isinstance(answer, Receipt):
                    outcomes.append(Outcome(recipient, "sent", remote_id=answer.remote_id,
                                            remote_url=answer.url, note=answer.note))
                    results[recipient] = Result("sent", answer.note or "", answer)
                else:
                    outcome, results[recipient] = self._decide(
                        recipient, answer, attempts, now, None)
                    outcomes.append(outcome)
        recorded = self.ledger.record_batch(campaign, name, outcomes)
        for outcome in outcomes:
            if outcome.recipient not in recorded:
                detail = ("the claim had been taken over meanwhile: another worker may have "
                          "sent it too; check the receiver")
                log.error("%s|%s|%s: %s", campaign, name, outcome.recipient, detail)
                results[outcome.recipient] = Result("lost", detail)
        return [results[e.key.recipient] for e in entries]

    def _send_batch(self, channel: BatchChannel, prepared: Any,
                    items: list[BatchItem]) -> list[BatchOutcome | Exception]:
        """One answer per item. A 429 (or another refusal that names a delay) means the call
        was not taken: wait as asked, within bounds, and make the same call again."""
        def paced() -> Sequence[BatchOutcome]:
            channel.pace(len(items))
            return channel.send_batch(prepared, items)

        def said(wait: float) -> None:
            log.info("%s asked to wait %.1f s before the next batch", channel.name, wait)

        with self._renewer.holding(*(item.key for item in items)):
            try:
                answers = waiting_out(paced, on_wait=said)
            except (ChannelError, OSError) as error:
                return [error] * len(items)
            except Exception as error:  # noqa: BLE001 - an adapter's bug must not stop a run
                log.exception("channel %s failed on a batch of %d", channel.name, len(items))
                return [UnknownOutcome(f"the adapter failed unexpectedly "
                                       f"({redaction.redact(repr(error))}); it may have "
                                       "sent")] * len(items)
        if len(answers) != len(items):
            return [UnknownOutcome(f"the adapter answered {len(answers)} outcomes for "
                                   f"{len(items)} recipients; it may have sent")] * len(items)
        return list(answers)

    def _claim(self, key: DeliveryKey, prior: Prior | None, now: datetime,
               content_hash: str | None) -> bool:
        if prior is None:
            return self.ledger.claim(key, content_hash=content_hash)
        if prior.state == "failed":
            return self.ledger.reclaim(key, from_states=["failed"], due_by=now,
                                       content_hash=content_hash)
        return self.ledger.reclaim(key, from_states=["unknown"], due_by=now,
                                   content_hash=content_hash)

    def _settle(self, key: DeliveryKey, message: Message, attempts: int,
                now: datetime) -> Result | None:
        """An unknown outcome: a Result when settled here, None when it is to be sent again.
        Resending is bounded like retrying: after `max_attempts` it is dead."""
        try:
            receipt = self.channel.reconcile(message)
        except CannotReconcile as error:
            if self.policy != "resend":
                self.ledger.release(key, note=f"outcome unknown: {_said(error)}")
                return Result("unknown", _said(error), message=message)
            receipt = None
        except (ChannelError, OSError) as error:
            self.ledger.release(key, note=f"reconcile failed: {_said(error)}")
            return Result("unknown", f"reconcile failed: {_said(error)}", message=message)
        if receipt is not None:
            self.ledger.record_sent(key, remote_id=receipt.remote_id, remote_url=receipt.url,
                                    note="reconciled after an unknown outcome")
            return Result("sent", "reconciled: it had gone out", receipt, message)
        if attempts > self.publish.max_attempts:
            detail = (f"gave up after {attempts - 1} attempts whose outcome stayed unknown; "
                      "`briefbot retry` to try again")
            self.ledger.record_failure(key, detail, retry_at=None)
            return Result("dead", detail, message=message)
        return None

    def _failed(self, key: DeliveryKey, error: Exception, attempts: int, now: datetime,
                message: Message | None) -> Result:
        """Record what an error from `send` means (`_decide`) for one key."""
        outcome, result = self._decide(key.recipient, error, attempts, now, message)
        if outcome.state == "unknown":
            self.ledger.release(key, note=outcome.note, retry_at=outcome.retry_at)
        else:
            self.ledger.record_failure(key, outcome.note or "", retry_at=outcome.retry_at)
        return result

    def _decide(self, recipient: str, error: Exception, attempts: int, now: datetime,
                message: Message | None) -> tuple[Outcome, Result]:
        """What an error from a send means: the one mapping, for every channel, for one key
        or for each recipient of a batch. Returns the row's outcome and the caller's result."""
        channel_error = error if isinstance(error, ChannelError) else None
        said = _said(error)
        if channel_error is not None and channel_error.run_level:
            # Not this key's fault (the server, the login): due again at once, the run stops.
            return (Outcome(recipient, "failed", note=said, retry_at=now),
                    Result("failed", said, message=message, error=channel_error))
        if isinstance(error, PermanentError):
            return (Outcome(recipient, "dead", note=said),
                    Result("dead", said, message=message, error=error))
        if isinstance(error, UnknownOutcome):
            # Under `resend`, it is sent again no sooner than the retry schedule says, never
            # twice in one run; otherwise it waits for `reconcile` or an operator.
            retry_at = None
            if self.policy == "resend":
                retry_at = next_attempt(attempts, error, now, self.publish, self.rng) or now
            return (Outcome(recipient, "unknown", note=f"outcome unknown: {said}",
                            retry_at=retry_at),
                    Result("unknown", f"{said}; settled on a later run", message=message,
                           error=error))
        retry_at = next_attempt(attempts, error, now, self.publish, self.rng)
        if retry_at is None:
            detail = f"gave up after {attempts} attempts: {said}"
            return (Outcome(recipient, "dead", note=detail),
                    Result("dead", detail, message=message, error=channel_error))
        return (Outcome(recipient, "failed", note=said, retry_at=retry_at),
                Result("failed", f"{said} (attempt {attempts} of "
                       f"{self.publish.max_attempts}; "
                       f"retry at {retry_at:%Y-%m-%d %H:%M:%S} UTC)", message=message,
                       error=channel_error))


def _said(error: BaseException) -> str:
    """An error's text as the sent-log, `status` and the preview may show it: every secret
    an adapter registered masked (a server may echo a password back in its error)."""
    return redaction.redact(str(error))


class _LeaseRenewer:
    """Keeps the leases of keys whose send is in flight from running out: one thread per
    step, waking every third of a lease, so a send slower than `publish.lease` keeps its
    claim instead of letting another process send it again."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.keys: set[DeliveryKey] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def holding(self, *keys: DeliveryKey) -> _Held:
        return _Held(self, keys)

    def _run(self) -> None:
        period = max(1.0, self.ledger.lease.total_seconds() / 3)
        while True:
            with self.lock:
                keys = set(self.keys)
                if not keys:
                    self.thread = None
                    return
            try:
                self.ledger.renew(keys)
            except Exception:  # noqa: BLE001 - a failed renewal shows as a lost claim later
                log.warning("could not renew the leases of %d sends in flight", len(keys))
            finally:
                self.ledger.release_thread()
            threading.Event().wait(period)


class _Held:
    def __init__(self, renewer: _LeaseRenewer, keys: tuple[DeliveryKey, ...]):
        self.renewer, self.held = renewer, keys

    def __enter__(self) -> None:
        renewer = self.renewer
        with renewer.lock:
            renewer.keys.update(self.held)
            if renewer.thread is None:
                renewer.thread = threading.Thread(target=renewer._run, daemon=True,
                                                  name="lease-renewer")
                renewer.thread.start()

    def __exit__(self, *_exc: object) -> None:
        with self.renewer.lock:
            self.renewer.keys.difference_update(self.held)
