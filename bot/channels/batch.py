"""The batch protocol: an email channel that sends one prepared email to many recipients per call.

A provider's batch endpoint (Mailgun's recipient variables, Postmark's `/email/batch`, SES
`SendBulkEmail`) takes up to its maximum of recipients in one request and answers per recipient.
An adapter that can use one subclasses `BatchChannel` and implements `send_batch`; the mailing
(`bot.mailing`) then streams subscribers into batches of `batch_size`, and the delivery step
(`bot.delivery.DeliveryStep.deliver_batch`) claims a whole batch in one statement, calls
`send_batch` once, and records every recipient's outcome in one statement.

The contract, stable for every adapter:

- `max_batch` (class data): the provider's own limit per call. `batch_size` (per instance,
  from the options, default `max_batch`) is capped by it.
- `connections`: how many batches may be in flight at once (threads of the mailing).
- `max_rate`: messages a second across those threads (None: no limit but the provider's 429s);
  the delivery step calls `pace(n)` before each call.
- `wants_raw` (class data): True for providers that take a complete message per recipient; each
  `BatchItem.raw` then holds the personalised RFC 5322 bytes, else it is None and the adapter
  builds its template from `prepared` (`template_html`/`template_text` put a placeholder of the
  provider's syntax where the unsubscribe URL goes) and the items' variables.
- `send_batch(prepared, items)` returns one outcome per item, in the same order: a `Receipt`
  whose `remote_id` is the provider's message id (what its webhooks name), or a `ChannelError`
  for that address only (`PermanentError` with `bounce = "hard"` for a refused address, a
  `TransientError` to try it again later). A recipient refused on its own never fails the others.
- A failure of the whole call raises, with the mapping of `bot.channels.http`: nothing sent
  (connection refused, 408/429/503) `TransientError` (429 with its `retry_after`, which the
  delivery step waits out and resends); the body went out and no answer came (read timeout,
  connection dropped, another 5xx) `UnknownOutcome`: every recipient of the batch is unknown and
  the channel's `unknown_policy` settles them (email: `resend`, with the same Message-ID);
  401/403 a `PermanentError` with `run_level = True` (the run stops); another 4xx for the whole
  call: `PermanentError` (each recipient dead).
- Only the delivery step claims and records; an adapter never touches the sent-log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

from bot.channels.base import (
    Channel,
    ChannelError,
    DeliveryKey,
    Message,
    Pacer,
    PermanentError,
    Receipt,
    TransientError,
    UnknownOutcome,
)

if TYPE_CHECKING:
    from bot.briefs import Brief
    from bot.render.mime import PreparedEmail


@dataclass(frozen=True)
class BatchItem:
    """One recipient of a batch, personalised: everything that differs between recipients."""

    key: DeliveryKey
    address: str  # as the list holds it (key.recipient)
    name: str | None
    message_id: str  # ours, `<...@domain>`, derived from the key (the same on a resend)
    unsubscribe_url: str
    unsubscribe_mailto: str | None = None
    raw: bytes | None = None  # the complete message, only for a channel with `wants_raw`


#: What `send_batch` says of one item.
BatchOutcome = Receipt | ChannelError


class BatchChannel(Channel):
    """An email channel with a batch endpoint (see the module docstring)."""

    sends_digest: ClassVar[bool] = True
    fans_out: ClassVar[bool] = True
    posts_briefs: bool = False
    #: The provider's limit of recipients per call.
    max_batch: ClassVar[int] = 1
    #: The provider takes a complete message per recipient (`BatchItem.raw` filled in).
    wants_raw: ClassVar[bool] = False
    # An email in a batch that died in flight may or may not have gone: sending it again (same
    # Message-ID) loses nobody; leaving it to an operator would leave readers without the issue.
    default_unknown_policy: ClassVar[str] = "resend"

    def __init__(self, name, config, settings):
        super().__init__(name, config, settings)
        self.posts_briefs = settings.config.email.single_brief_email
        size = int(self.options.get("batch_size") or self.max_batch)
        self.batch_size = max(1, min(size, self.max_batch))
        self.connections = int(self.options.get("connections", 1))
        rate = self.options.get("max_rate")
        self.max_rate = None if rate is None else float(rate)
        self._pacer = Pacer(self.max_rate) if self.max_rate else None

    def send_batch(self, prepared: PreparedEmail,
                   items: Sequence[BatchItem]) -> list[BatchOutcome]:
        raise NotImplementedError

    def pace(self, messages: int) -> None:
        """Wait until `messages` more may go out under `max_rate` (shared by all threads)."""
        if self._pacer is not None:
            self._pacer.wait(messages)

    def render(self, brief: Brief, key: DeliveryKey) -> Message:
        """The single-brief email, fanned out to subscribers by `bot.mailing.mail_brief`."""
        from bot.render.email import brief_email_message  # mjml loads only when rendering

        return brief_email_message(self.settings, brief, key)

    def send(self, message: Message) -> Receipt:
        raise PermanentError(f"{self.type} sends mailings in batches (send_batch), "
                             "through the mailing")

    def send_email(self, key: DeliveryKey, data: bytes, message_id: str) -> Receipt:
        raise PermanentError(f"{self.type} sends mailings in batches (send_batch)")

    def reconcile(self, message: Message) -> Receipt | None:
        if message.key.recipient:
            return super().reconcile(message)
        # A single-brief mailing is resumable: every recipient has their own delivery, so
        # sending "again" only reaches those who have not had it.
        return None


def template_html(prepared: PreparedEmail, placeholder: str) -> str:
    """The HTML body with `placeholder` (`%recipient.unsubscribe_url%`, `{{unsubscribe}}`...)
    where each recipient's unsubscribe URL goes: one template for the whole mailing."""
    return prepared.html.replace(prepared.token, placeholder)


def template_text(prepared: PreparedEmail, placeholder: str) -> str:
    return prepared.text.replace(prepared.token, placeholder)




#: A call refused with a delay (a 429's Retry-After, SES throttling) is made again after it, at
#: most this many times and for delays up to this many seconds; beyond, the error goes up.
RATE_LIMIT_RETRIES = 5
RATE_LIMIT_WAIT = 120.0
T = TypeVar("T")


def waiting_out(call: Callable[[], T], *, on_wait: Callable[[float], None] | None = None) -> T:
    """`call()`, made again after a `TransientError` that names a delay, within the bounds
    above. An unknown outcome, an error naming no delay, or one past the bounds goes up."""
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        try:
            return call()
        except UnknownOutcome:
            raise
        except TransientError as error:
            wait = error.retry_after
            if wait is None or wait > RATE_LIMIT_WAIT or attempt == RATE_LIMIT_RETRIES:
                raise
            if on_wait is not None:
                on_wait(wait)
            threading.Event().wait(wait)
    raise AssertionError("unreachable")  # pragma: no cover
