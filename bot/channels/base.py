"""The interface every channel adapter implements."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, ClassVar

from bot.channels.options import AnyOptions, Options, parse_options
from bot.message import (  # noqa: F401  (re-exported: adapters import them from here)
    CannotReconcile,
    ChannelError,
    DeliveryKey,
    Message,
    PermanentError,
    Receipt,
    TransientError,
    UnknownOutcome,
)
from bot.network import Network

if TYPE_CHECKING:
    from bot.briefs import Brief
    from bot.config import ChannelConfig, Settings


class Channel:
    """Base class of channel adapters.

    An adapter renders a brief into a `Message` and sends it. It raises `TransientError` or
    `PermanentError` on failure and may implement `reconcile` to settle an unknown outcome.
    """

    type: ClassVar[str] = ""
    #: What the channel sends: a post per brief, a digest email per subscriber, or both.
    posts_briefs: ClassVar[bool] = True
    sends_digest: ClassVar[bool] = False
    #: A brief's message goes to every subscriber, one delivery each: the orchestration fans
    #: it out (`bot.mailing.mail_brief`) instead of calling `send` once.
    fans_out: ClassVar[bool] = False
    #: The social network this adapter posts to, as data (`bot.network`): its unit, length
    #: rules, image limits, link card and template. None for email and stand-in channels.
    network: ClassVar[Network | None] = None

    #: The adapter's options as a typed schema, checked before the adapter sees them.
    Options: ClassVar[type[Options]] = AnyOptions

    def __init__(self, name: str, config: ChannelConfig, settings: Settings):
        from bot.config import config_source

        self.name = name
        self.config = config
        self.settings = settings
        checked = parse_options(self.Options, name, config.options, config_source(settings))
        self.options = checked.model_dump(exclude_unset=True)
        #: The adapter's own counters (connections opened, logins…), for a mailing's report.
        self.stats: dict[str, int] = {}

    def render(self, brief: Brief, key: DeliveryKey) -> Message:
        raise NotImplementedError

    def send(self, message: Message) -> Receipt:
        raise NotImplementedError

    #: What to do with an unknown outcome `reconcile` cannot settle, unless configured:
    #: leave it to an operator ("skip"), or send it again ("resend", bounded like a retry).
    default_unknown_policy: ClassVar[str] = "skip"

    @property
    def unknown_policy(self) -> str:
        return self.config.unknown_policy or self.default_unknown_policy

    #: Concurrent sends a mailing may run through this channel (SMTP: its connections).
    connections: int = 1

    def send_email(self, key: DeliveryKey, data: bytes, message_id: str) -> Receipt:
        """One subscriber's finished email (`data`, RFC 5322 bytes) to `key.recipient`. An
        adapter that posts an email as a message of its own (the outbox) needs nothing more;
        SMTP sends the bytes as they are."""
        receipt = self.send(Message(key=key, kind="email", text="", raw=data,
                                    message_id=message_id))
        return Receipt(remote_id=message_id, url=receipt.url, note=receipt.remote_id)

    def reconcile(self, message: Message) -> Receipt | None:
        """After a crash: a receipt if `message` went out, None if it certainly did not."""
        raise CannotReconcile(f"{self.type} cannot tell whether a message went out")

    @property
    def can_reconcile(self) -> bool:
        """Whether this adapter implements `reconcile` at all."""
        return type(self).reconcile is not Channel.reconcile

    def close(self) -> None:
        """Release connections; called once at the end of a run."""


class Pacer:
    """At most `rate` messages a second across every thread; a batch counts its size."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, messages: int = 1) -> None:
        with self.lock:
            now = time.monotonic()
            at = max(self.next, now)
            self.next = at + self.interval * messages
        if at > now:
            time.sleep(at - now)
