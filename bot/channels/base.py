"""The interface every channel adapter implements, and the messages it exchanges."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from bot.briefs import Brief
    from bot.config import ChannelConfig, Settings
    from bot.ledger import DeliveryKey


class ChannelError(Exception):
    """A delivery failed; the message must be safe to log (no secrets)."""


class TransientError(ChannelError):
    """Worth retrying later: a timeout, a 5xx, a rate limit (with its reset time)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class UnknownOutcome(TransientError):
    """The far end may or may not have acted (the answer was lost after the request went out).

    Recorded as `unknown`, so `reconcile` or the channel's unknown policy decides, never a
    blind retry."""


class PermanentError(ChannelError):
    """Retrying cannot help: bad credentials, a refused recipient, an invalid post."""


class CannotReconcile(Exception):
    """The adapter cannot tell whether an unknown delivery went out."""


@dataclass(frozen=True)
class Message:
    """One outgoing unit, rendered and ready to send: a post or an email."""

    key: DeliveryKey
    kind: str  # "post" or "email"
    text: str
    link: str | None = None
    image: str | None = None
    image_alt: str | None = None
    subject: str | None = None
    html: str | None = None
    raw: bytes | None = None  # a complete RFC 5322 message, for email
    length: int | None = None
    limit: int | None = None
    notes: tuple[str, ...] = ()  # what was cut to fit, warnings worth showing in a preview
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """Stable for a delivery key, so a retried send can be recognised by the far end."""
        return hashlib.sha256(str(self.key).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Receipt:
    remote_id: str | None = None
    url: str | None = None
    sent_at: datetime | None = None
    note: str | None = None


class Channel:
    """Base class of channel adapters.

    An adapter renders a brief into a `Message` and sends it. It raises `TransientError` or
    `PermanentError` on failure and may implement `reconcile` to settle an unknown outcome.
    """

    type: ClassVar[str] = ""
    #: What the channel sends: a post per brief, a digest email per subscriber, or both.
    posts_briefs: ClassVar[bool] = True
    sends_digest: ClassVar[bool] = False

    def __init__(self, name: str, config: ChannelConfig, settings: Settings):
        self.name = name
        self.config = config
        self.settings = settings
        self.options = config.options

    def render(self, brief: Brief, key: DeliveryKey) -> Message:
        raise NotImplementedError

    def send(self, message: Message) -> Receipt:
        raise NotImplementedError

    def reconcile(self, message: Message) -> Receipt | None:
        """After a crash: a receipt if `message` went out, None if it certainly did not."""
        raise CannotReconcile(f"{self.type} cannot tell whether a message went out")

    @property
    def can_reconcile(self) -> bool:
        """Whether this adapter implements `reconcile` at all."""
        return type(self).reconcile is not Channel.reconcile

    def close(self) -> None:
        """Release connections; called once at the end of a run."""
