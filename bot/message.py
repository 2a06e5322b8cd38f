"""The delivery vocabulary every stage shares: what goes out, its key, its receipt, its state,
and the errors a channel raises. A leaf: it imports nothing of ours, so render, channels, the
ledger and the orchestration all import it and never each other for these names."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class State(StrEnum):
    """A sent-log row's state."""

    CLAIMED = "claimed"  # a worker holds the key and is calling the outside world
    SENT = "sent"
    FAILED = "failed"  # will be retried at next_attempt_at
    DEAD = "dead"  # out of attempts, or refused for good
    SKIPPED = "skipped"  # never sent on purpose (backfill, unsubscribed)
    UNKNOWN = "unknown"  # the far end may or may not have acted


class ChannelError(Exception):
    """A delivery failed; the message must be safe to log (no secrets)."""

    #: An email refused for its recipient: "hard" (5xx) or "soft" (4xx) counts as a bounce.
    bounce: str | None = None
    #: Not this delivery's fault (the server, the login): the run stops, the key is due again.
    run_level: bool = False


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
class DeliveryKey:
    campaign: str
    channel: str
    recipient: str = ""

    def __str__(self) -> str:
        return "|".join((self.campaign, self.channel, self.recipient)).rstrip("|")

    @classmethod
    def parse(cls, text: str) -> DeliveryKey:
        """`brief:ID|channel[|recipient]`, as `status` prints keys."""
        parts = text.split("|")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise ValueError(f"{text!r} is not a delivery key; write CAMPAIGN|CHANNEL[|RECIPIENT]")
        return cls(*parts)


class NoteKind(StrEnum):
    """What a note on a message is about, so a preview can group and place it."""

    HASHTAG_DROPPED = "hashtag-dropped"  # `subject` is the hashtag
    CUT = "cut"  # other text shortened or dropped to fit the network's limit
    IMAGE_LEFT_OUT = "image-left-out"  # the hero image could not go with the post
    WARNING = "warning"  # anything else worth a look before it goes out


@dataclass(frozen=True)
class Note:
    """Something worth showing with a message before it is sent: what was cut, a warning."""

    kind: NoteKind
    text: str  # says it all on its own, for logs, receipts and `run --dry-run`
    severity: str = "warning"  # or "error"
    subject: str | None = None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ProcessedImage:
    """Image bytes ready to upload, plus what was done to them (`bot.images` makes them)."""

    data: bytes
    mime: str
    width: int
    height: int
    original_size: int
    resized: bool


@dataclass(frozen=True)
class LinkCard:
    """What a network's preview of `Message.link` shows: the brief's title and summary."""

    title: str = ""
    summary: str = ""


@dataclass(frozen=True)
class Message:
    """One outgoing unit, rendered and ready to send: a post or an email.

    Every field is the same for every adapter; a plugin that carries data of its own from
    `render` to `send` subclasses this frozen dataclass with its fields.
    """

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
    notes: tuple[Note, ...] = ()  # what was cut to fit, warnings worth showing in a preview
    card: LinkCard | None = None
    language: str | None = None  # the brief's own BCP 47 tag, over the channel's
    facets: tuple[dict[str, Any], ...] = ()  # Bluesky's rich-text facets (links, tags)
    fitted_image: ProcessedImage | None = None  # the hero image fitted to this network
    # The rendered email before its recipients (a bot.render.mime.PreparedEmail; typed Any so
    # this leaf imports nothing of ours), and one recipient's Message-ID.
    prepared_email: Any = None
    message_id: str | None = None

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
