"""The one delivery step: claim → settle an unknown outcome → send → record.

Posts (`bot.publish`) and emails (`bot.mailing`) both go through `DeliveryStep.deliver`; they
only choose what to deliver and report what came of it. The step owns every rule of a single
delivery: the guarded claim, reconciling before resending, which error means what, the retry
schedule, the bound on resending unknown outcomes, and keeping the claim alive while a slow send
runs, so nobody else takes it over and sends a second copy.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bot import redaction
from bot.channels import Channel
from bot.config import PublishConfig
from bot.ledger import Ledger
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

    def _unknown(self, key: DeliveryKey, detail: str, attempts: int, error: ChannelError,
                 now: datetime, message: Message) -> Result:
        """Under `resend`, it is sent again no sooner than the retry schedule says, never twice
        in one run; otherwise it waits for `reconcile` or an operator."""
        retry_at = None
        if self.policy == "resend":
            retry_at = next_attempt(attempts, error, now, self.publish, self.rng) or now
        self.ledger.release(key, note=f"outcome unknown: {detail}", retry_at=retry_at)
        return Result("unknown", f"{detail}; settled on a later run", message=message,
                      error=error)

    def _failed(self, key: DeliveryKey, error: Exception, attempts: int, now: datetime,
                message: Message) -> Result:
        """What an error from `send` means: the one mapping, for every channel."""
        channel_error = error if isinstance(error, ChannelError) else None
        if channel_error is not None and channel_error.run_level:
            # Not this key's fault (the server, the login): due again at once, the run stops.
            self.ledger.record_failure(key, _said(error), retry_at=now)
            return Result("failed", _said(error), message=message, error=channel_error)
        if isinstance(error, PermanentError):
            self.ledger.record_failure(key, _said(error), retry_at=None)
            return Result("dead", _said(error), message=message, error=error)
        if isinstance(error, UnknownOutcome):
            return self._unknown(key, _said(error), attempts, error, now, message)
        retry_at = next_attempt(attempts, error, now, self.publish, self.rng)
        if retry_at is None:
            detail = f"gave up after {attempts} attempts: {_said(error)}"
            self.ledger.record_failure(key, detail, retry_at=None)
            return Result("dead", detail, message=message, error=channel_error)
        self.ledger.record_failure(key, _said(error), retry_at=retry_at)
        return Result("failed", f"{_said(error)} (attempt {attempts} of "
                      f"{self.publish.max_attempts}; "
                      f"retry at {retry_at:%Y-%m-%d %H:%M:%S} UTC)", message=message,
                      error=channel_error)


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

    def holding(self, key: DeliveryKey) -> _Held:
        return _Held(self, key)

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
    def __init__(self, renewer: _LeaseRenewer, key: DeliveryKey):
        self.renewer, self.key = renewer, key

    def __enter__(self) -> None:
        renewer = self.renewer
        with renewer.lock:
            renewer.keys.add(self.key)
            if renewer.thread is None:
                renewer.thread = threading.Thread(target=renewer._run, daemon=True,
                                                  name="lease-renewer")
                renewer.thread.start()

    def __exit__(self, *_exc: object) -> None:
        with self.renewer.lock:
            self.renewer.keys.discard(self.key)
