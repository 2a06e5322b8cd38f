"""Dry-run previews: every outgoing message, as it would be sent, in one static HTML gallery.

`build_gallery` reads the briefs and the sent-log (read-only: a preview never claims) and renders
each brief on each enabled channel through the channel's own `render`, so the text, counted
length, fitted hero image and notes are exactly what `send` would be given. Nothing is sent: no
channel is asked to do anything but render (the Mastodon adapter reads its instance's public
limits, as a dry run does). Hero images are loaded once per preview and fitted once per limit
(`bot.render.media.images_once`), then written next to the gallery, so the folder opens offline;
a Content-Security-Policy keeps the page (and the emails in it) from loading anything else.

`briefbot serve` serves the same gallery at `/preview/`, rebuilt on request when a brief, a
template, the configuration or the SQLite sent-log has changed, or a scheduled brief fell due.
"""

from __future__ import annotations

import hashlib
import html
import io
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from bot.briefs import Brief, BriefReader, Problem, brief_files
from bot.channels import Channel, Message
from bot.config import Settings
from bot.images import (
    BLUESKY_MAX_BYTES,
    MASTODON_DEFAULT_MAX_BYTES,
    X_MAX_BYTES,
    ImageError,
    ProcessedImage,
)
from bot.ledger import Ledger
from bot.message import DeliveryKey
from bot.plan import DigestStep, Plan, Step, make_plan, open_for_planning, plan_digest
from bot.redaction import redact
from bot.render.media import ImageMemo, images_once, prepare_image, publish_email_image
from bot.words import counted

if TYPE_CHECKING:
    from bot.render.mime import PreparedEmail

# Gmail cuts the HTML of longer emails behind "[Message clipped]" (102 KB; the lower reading).
GMAIL_CLIP_BYTES = 102_000
SAMPLE_RECIPIENT = "subscriber@example.org"
TOKEN_PLACEHOLDER = "RECIPIENT-TOKEN"  # a preview shows no real (signed) unsubscribe token
POST_NETWORKS = ("x", "mastodon", "bluesky")
NETWORK_NAMES = {"x": "X", "mastodon": "Mastodon", "bluesky": "Bluesky", "generic": "Post"}
UNITS = {"x": "weighted characters", "bluesky": "graphemes", "mastodon": "characters",
         "generic": "characters"}
IMAGE_LIMITS = {"x": X_MAX_BYTES, "bluesky": BLUESKY_MAX_BYTES,
                "mastodon": MASTODON_DEFAULT_MAX_BYTES}
BLUESKY_MAX_TEXT_BYTES = 3000
EMAIL_HEADERS = ("From", "Reply-To", "To", "Subject", "List-Unsubscribe",
                 "List-Unsubscribe-Post", "List-Id")
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; frame-src 'self'; "
       "base-uri 'none'; form-action 'none'")
# A brief's states on one channel, most urgent first: a brief shows the first of its channels'.
_MISSING_IMAGE = "hero image left out:"
_CUTS = ("dropped hashtag ", "dropped extra text", "shortened title", "dropped title")
_PICTURE_NAME = re.compile(r"[0-9a-f]{20}\.(?:jpg|png|gif|webp|bin)")
_URL = re.compile(r"https?://\S+")
_TAG = re.compile(r"(?<![\w#])#\w+")
_IMG_SRC = re.compile(r'(<img\b[^>]*?\ssrc=")([^"]*)(")', re.IGNORECASE)
_UNAVAILABLE = "data:image/svg+xml," + quote(
    "<svg xmlns='http://www.w3.org/2000/svg' width='552' height='120'>"
    "<rect width='100%' height='100%' fill='#fde8e8'/><text x='50%' y='55%' "
    "text-anchor='middle' font-family='sans-serif' font-size='18' fill='#a00'>"
    "hero image unavailable</text></svg>")


# -- what the gallery shows --------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """A problem banner: what is wrong and, where it can, what to do."""

    severity: str  # "error" or "warning"
    text: str


@dataclass(frozen=True)
class State:
    name: str  # one of STATES, or "draft" / "blocked" / "error"
    detail: str = ""
    url: str | None = None


@dataclass(frozen=True)
class Picture:
    """An image as the gallery shows it: a content-addressed file in `images/`."""

    name: str
    mime: str
    width: int | None
    height: int | None
    size: int
    alt: str | None = None
    caption: str = ""

    @property
    def src(self) -> str:
        return f"images/{self.name}"


@dataclass(frozen=True)
class Segment:
    kind: str  # "text", "link" or "tag"
    text: str
    href: str | None = None


@dataclass(frozen=True)
class LinkCard:
    url: str
    domain: str
    title: str
    description: str
    thumb: Picture | None = None
    note: str = ""


@dataclass
class Card:
    """One message of one brief (or the digest) on one channel."""

    kind: str  # "post", "email", "receipt" or "error"
    channel: str
    network: str
    state: State
    issues: list[Issue] = field(default_factory=list)
    # posts
    text: str = ""
    segments: list[Segment] = field(default_factory=list)
    length: int | None = None
    limit: int | None = None
    unit: str = ""
    text_bytes: int | None = None
    image: Picture | None = None
    image_missing: str | None = None
    link_card: LinkCard | None = None
    # emails
    email: EmailView | None = None
    # receipts: the text the post went out with, as the sent-log kept it
    sent_text: str | None = None

    @property
    def network_name(self) -> str:
        return "Email" if self.kind == "email" else NETWORK_NAMES.get(self.network,
                                                                      self.network.title())


@dataclass
class EmailView:
    title: str
    subject: str
    headers: list[tuple[str, str]]
    preheader: str
    html: str  # for the iframes: images swapped for the gallery's copies
    text: str
    html_bytes: int
    message_bytes: int
    max_html_bytes: int

    @property
    def clip_percent(self) -> int:
        return round(100 * self.html_bytes / GMAIL_CLIP_BYTES)


@dataclass
class Entry:
    brief: Brief
    anchor: str
    state: State
    issues: list[Issue] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)


@dataclass
class Gallery:
    settings: Settings
    now: datetime
    include_drafts: bool
    channels: list[str]
    entries: list[Entry]
    digest: Card | None
    digest_note: str
    channel_issues: list[Issue]
    unreadable: list[Problem]
    pictures: dict[str, bytes]
    seconds: float
    valid_until: datetime | None  # when a scheduled brief falls due or the digest period turns

    @property
    def counts(self) -> Counter[str]:
        return Counter(entry.state.name for entry in self.entries)

    @property
    def cards(self) -> list[Card]:
        found = [card for entry in self.entries for card in entry.cards]
        return found + ([self.digest] if self.digest else [])

    @property
    def failed(self) -> bool:
        """Something could not be rendered at all (a broken channel, template or adapter)."""
        return bool(self.channel_issues) or any(card.kind == "error" for card in self.cards)

    def summary(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        problems = sum(len(c.issues) for c in self.cards) + sum(len(e.issues)
                                                                  for e in self.entries)
        return (f"{counted(len(self.entries), 'brief')} ({states or 'none'}) on "
                f"{counted(len(self.channels), 'channel')}: {counted(len(self.cards), 'message')}"
                f", {counted(problems, 'problem')} shown; built in {self.seconds:.1f} s, "
                "nothing sent")

    def html(self) -> str:
        return _template().render(gallery=self, csp=CSP, gmail_clip=GMAIL_CLIP_BYTES,
                                  tz=self.settings.tz)


# -- building ------------------------------------------------------------------------------------


def build_gallery(settings: Settings, *, now: datetime, include_drafts: bool = False,
                  memo: ImageMemo | None = None) -> Gallery:
    """Render every brief on every enabled channel, and the digest, without sending anything."""
    return _Builder(settings, now, include_drafts, memo or ImageMemo()).build()


def write_gallery(gallery: Gallery, folder: Path) -> Path:
    """`folder/index.html` plus `folder/images/`; images no longer shown are removed."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name, data in gallery.pictures.items():
        target = images / name
        if not target.exists():
            _write_atomically(target, data)
    for stale in images.iterdir():  # only files a gallery wrote: `--out` may be any folder
        if stale.name not in gallery.pictures and _PICTURE_NAME.fullmatch(stale.name):
            stale.unlink(missing_ok=True)
    index = folder / "index.html"
    _write_atomically(index, gallery.html().encode("utf-8"))
    return index


class _Builder:
    def __init__(self, settings: Settings, now: datetime, include_drafts: bool,
                 memo: ImageMemo):
        self.settings = settings
        self.now = now
        self.include_drafts = include_drafts
        self.memo = memo
        self.statuses = [s.lower() for s in settings.config.briefs.published_statuses]
        self.pictures: dict[str, bytes] = {}
        self.anchors: set[str] = set()

    def build(self) -> Gallery:
        started = time.perf_counter()
        scan = BriefReader.from_settings(self.settings).scan(self.settings.brief_folders)
        channels, issues = open_for_planning(self.settings)
        ledger = self.ledger = Ledger(self.settings.database_url,
                                      lease=self.settings.config.publish.lease, readonly=True)
        try:
            plan = make_plan(self.settings, ledger, channels, self.now, scan)
            digests = plan_digest(self.settings, ledger, scan.briefs, self.now)
            briefs = sorted(scan.briefs, key=lambda b: (
                -(b.published_at.timestamp() if b.published_at else float("inf")), b.id))
            entries = []
            with images_once(self.memo):
                for brief in briefs:
                    entry = self._entry(brief, channels, plan)
                    if entry is not None:
                        entries.append(entry)
                digest, digest_note = self._digest(channels, *digests)
        finally:
            ledger.close()
            for channel in channels.values():
                channel.close()
        read = {str(brief.path) for brief in scan.briefs}
        unreadable = [p for p in scan.problems if p.path not in read]
        return Gallery(
            settings=self.settings, now=self.now, include_drafts=self.include_drafts,
            channels=list(channels), entries=entries, digest=digest, digest_note=digest_note,
            channel_issues=[Issue("error", text) for text in issues], unreadable=unreadable,
            pictures=self.pictures, seconds=time.perf_counter() - started,
            valid_until=self._valid_until(scan.briefs),
        )

    # -- briefs ------------------------------------------------------------------------------

    def _entry(self, brief: Brief, channels: dict[str, Channel], plan: Plan) -> Entry | None:
        draft = (brief.status or "").lower() not in self.statuses
        if draft and not self.include_drafts:
            return None
        blockers = [b for b in brief.blockers(self.statuses) if not b.startswith("status is")]
        issues: list[Issue] = []
        if draft:
            issues.append(Issue("warning", f"Draft: status is {brief.status or 'missing'!r}, "
                                f"so it is never published; set `status: {self.statuses[0]}` "
                                "when it is ready"))
        elif blockers:
            issues.append(Issue("error", "Blocked: will not be published until fixed: "
                                + "; ".join(blockers)))
        for problem in brief.problems:
            where = f"line {problem.line}: " if problem.line else ""
            issues.append(Issue(problem.severity, f"{where}{problem.message}"))
        cards = [self._card(brief, channels[step.channel], self._state(step))
                 for step in plan.for_brief(brief.id) if step.state != "not-posted"]
        state, reason = plan.brief_state(brief)
        if draft:
            state, reason = "draft", "drafts are previewed, never published"
        return Entry(brief, self._anchor(brief.id), State(state, reason), issues, cards)

    @staticmethod
    def _state(step: Step) -> State:
        url = step.row.remote_url if step.row and step.state in ("sent", "changed") else None
        return State(step.state, step.reason, url if _is_web(url) else None)

    def _card(self, brief: Brief, channel: Channel, state: State) -> Card:
        network = _network(channel)
        if state.name in ("sent", "changed", "skipped", "in-flight"):
            card = Card("receipt", channel.name, network, state)
            card.sent_text = self.ledger.sent_text(DeliveryKey(f"brief:{brief.id}",
                                                               channel.name))
            return card
        key = DeliveryKey(f"brief:{brief.id}", channel.name)
        try:
            message = channel.render(brief, key)
            if message.kind == "email":
                prepared = message.extra.get("prepared")
                card = Card("email", channel.name, "email", state)
                card.email = self._email(prepared, "Single-brief email", card.issues,
                                         [brief]) if prepared else None
                if card.email is None:
                    card.issues.append(Issue("error", "the channel rendered an email without "
                                             "its prepared parts; nothing to preview"))
                return card
            return self._post(brief, channel, network, state, message)
        except Exception as error:  # noqa: BLE001 - one broken brief must not stop the preview
            return Card("error", channel.name, network, State("error", "cannot render"),
                        [Issue("error", f"cannot render for {channel.name}: "
                               f"{redact(str(error))}")])

    # -- posts -------------------------------------------------------------------------------

    def _post(self, brief: Brief, channel: Channel, network: str, state: State,
              message: Message) -> Card:
        card = Card("post", channel.name, network, state, text=message.text,
                    length=message.length, limit=message.limit,
                    unit=UNITS.get(network, "characters"))
        card.segments = _segments(message.text, message.extra.get("facets") or ())
        cuts = [note for note in message.notes if note.startswith(_CUTS)]
        if cuts:
            tags = [note.removeprefix("dropped hashtag ") for note in cuts
                    if note.startswith("dropped hashtag ")]
            rest = [note for note in cuts if not note.startswith("dropped hashtag ")]
            parts = ([f"dropped hashtag{'s' if len(tags) > 1 else ''} {' '.join(tags)}"]
                     if tags else []) + rest
            card.issues.append(Issue("warning", f"cut to fit {message.limit} {card.unit}: "
                                     + "; ".join(parts)))
        card.issues.extend(Issue("warning", redact(note)) for note in message.notes
                           if note not in cuts)
        if message.length is not None and message.limit is not None and (
            message.length > message.limit
        ):
            card.issues.append(Issue("error", f"{message.length} {card.unit} is over the limit "
                                     f"of {message.limit}: the network will refuse it"))
        if network == "bluesky":
            card.text_bytes = len(message.text.encode("utf-8"))
            if card.text_bytes > BLUESKY_MAX_TEXT_BYTES:
                card.issues.append(Issue("error", f"{card.text_bytes} bytes is over Bluesky's "
                                         f"{BLUESKY_MAX_TEXT_BYTES}-byte limit"))
        self._post_image(brief, channel, network, message, card)
        card.link_card = self._link_card(channel, network, message, card.image)
        return card

    def _post_image(self, brief: Brief, channel: Channel, network: str, message: Message,
                    card: Card) -> None:
        if not brief.image:
            return
        processed = message.extra.get("image")
        warning = next((n for n in message.notes if n.startswith(_MISSING_IMAGE)), None)
        stand_in = channel.type not in POST_NETWORKS and network in IMAGE_LIMITS
        limit = IMAGE_LIMITS.get(network) if channel.type not in ("mastodon",) else None
        how = "as uploaded"
        if processed is None and warning is None and stand_in:
            # An outbox standing in for a network: fit the image as that network's adapter would.
            processed, warning = prepare_image(self.settings, brief,
                                               max_bytes=IMAGE_LIMITS[network])
            if warning:
                card.issues.append(Issue("warning", redact(warning)))
            how = f"as {NETWORK_NAMES[network]} would receive it"
        if isinstance(processed, ProcessedImage):
            card.image = self._picture(processed.data, processed.mime, processed.width,
                                       processed.height, alt=message.image_alt)
            card.image = _captioned(card.image, f"{how}: {processed.width}×{processed.height} "
                                    f"{_kind(processed.mime)}, {human_bytes(len(processed.data))}")
            self._image_size_issues(brief, processed, network, limit, card)
        elif warning:
            card.image_missing = "the hero image could not be loaded: this post goes without it"
        elif message.image:
            try:
                data = self.memo.load(self.settings, brief)
                picture = self._picture(data, alt=message.image_alt)
            except ImageError as error:
                card.image_missing = "the image this post links to cannot be loaded"
                card.issues.append(Issue("warning", f"hero image cannot be loaded: "
                                         f"{redact(str(error))}"))
                return
            card.image = _captioned(picture, f"sent as a link to the original: {picture.width}×"
                                    f"{picture.height} {_kind(picture.mime)}, "
                                    f"{human_bytes(picture.size)}")
        else:
            return
        if card.image is not None and not (message.image_alt or "").strip():
            card.issues.append(Issue("warning", "the hero image has no alt text; add `image_alt` "
                                     "to the brief"))

    def _image_size_issues(self, brief: Brief, processed: ProcessedImage, network: str,
                           limit: int | None, card: Card) -> None:
        name = NETWORK_NAMES.get(network, network)
        if limit is not None and processed.original_size > limit:
            original = human_bytes(processed.original_size)
            card.issues.append(Issue("warning", f"hero image is {original}, over {name}'s "
                                     f"{human_bytes(limit)} limit: it is re-encoded to "
                                     f"{human_bytes(len(processed.data))}"))
        if processed.resized:
            try:
                original = _sniff(self.memo.load(self.settings, brief))
                before = f" from {original[1]}×{original[2]}"
            except (ImageError, ValueError):
                before = ""
            card.issues.append(Issue("warning", f"hero image shrunk{before} to "
                                     f"{processed.width}×{processed.height} to fit {name}'s "
                                     "limits"))

    def _link_card(self, channel: Channel, network: str, message: Message,
                   image: Picture | None) -> LinkCard | None:
        if not message.link or network not in POST_NETWORKS:
            return None
        title = str(message.extra.get("title") or "")
        summary = str(message.extra.get("summary") or "")
        domain = urlsplit(message.link).hostname or message.link
        if network == "bluesky":
            embed = str(channel.options.get("embed") or "auto")
            if embed == "image" or (image is not None and embed != "card"):
                return None
            return LinkCard(message.link, domain, title, summary,
                            image if embed == "card" else None,
                            "the link card is posted with the brief's title and summary")
        if image is not None:
            return None  # X and Mastodon show no link card under an attached image
        return LinkCard(message.link, domain, title, summary, None,
                        f"{NETWORK_NAMES[network]} builds this card from the page's own "
                        "metadata; the brief's title and summary stand in for it here")

    # -- emails ------------------------------------------------------------------------------

    def _digest(self, channels: dict[str, Channel], collecting: DigestStep,
                closed: DigestStep) -> tuple[Card | None, str]:
        """The digest still to go: the closed period if it has not gone out in full, else
        the one being collected. The note tells both."""
        from bot.render.email import prepare_digest

        senders = [name for name, channel in channels.items() if channel.sends_digest]
        if not senders:
            return None, ("No enabled channel sends the digest (add an smtp or outbox channel "
                          "to the configuration to have one).")
        note = (f"Collecting {collecting.period.describe()}: {collecting.reason}. Last closed "
                f"{closed.period.describe()}: {closed.state}, {closed.reason}.")
        shown = closed if closed.state in ("due", "partial") else collecting
        if not shown.briefs:
            return None, note
        state = State(shown.state, shown.reason)
        card = Card("email", ", ".join(senders), "email", state)
        try:
            prepared = prepare_digest(self.settings, shown.briefs,
                                      period_label=shown.period.label, now=self.now)
            card.email = self._email(prepared, f"Digest {shown.period.describe()}", card.issues,
                                     shown.briefs)
        except Exception as error:  # noqa: BLE001 - a broken template is shown, not raised
            card.kind = "error"
            card.issues.append(Issue("error", f"cannot render the digest: {redact(str(error))}"))
        left_out = [b.id for b in shown.briefs
                    if b.image and urlsplit(b.image).scheme not in ("https", "")]
        if left_out:
            more = f" and {len(left_out) - 10} more" if len(left_out) > 10 else ""
            card.issues.append(Issue("warning", "emails show https:// and local hero images "
                                     "only (a local one through `briefbot serve`); left out "
                                     f"for: {', '.join(left_out[:10])}{more}"))
        return card, f"{note} Sent through {', '.join(senders)}."

    def _email(self, prepared: PreparedEmail, title: str, issues: list[Issue],
               briefs: list[Brief]) -> EmailView:
        from bot.render.mime import Recipient

        email = self.settings.config.email
        base = email.base_url.rstrip("/")
        unsubscribe = f"{base}/unsubscribe/{TOKEN_PLACEHOLDER}"
        mailto = None
        if email.unsubscribe_mailto:
            mailto = (f"mailto:{email.unsubscribe_mailto.strip().removeprefix('mailto:')}"
                      f"?subject=unsubscribe%20{TOKEN_PLACEHOLDER}")
        domain = email.from_address.rpartition("@")[2].strip("> ") or "localhost"
        raw = prepared.personalise(Recipient(SAMPLE_RECIPIENT), message_id=f"<preview@{domain}>",
                                   unsubscribe_url=unsubscribe, unsubscribe_mailto=mailto,
                                   date=self.now)
        parsed = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        headers = [(name, " ".join(str(parsed[name]).split())) for name in EMAIL_HEADERS
                   if parsed[name] is not None]
        if prepared.html_bytes > GMAIL_CLIP_BYTES:
            issues.append(Issue("error", f"the HTML is {human_bytes(prepared.html_bytes)}, over "
                                f"Gmail's {human_bytes(GMAIL_CLIP_BYTES)}: Gmail clips it behind "
                                "[Message clipped]; shorten the briefs or lower "
                                "email.max_html_bytes"))
        elif prepared.html_bytes > email.max_html_bytes:
            issues.append(Issue("warning", f"the HTML is {human_bytes(prepared.html_bytes)}, over "
                                f"email.max_html_bytes ({human_bytes(email.max_html_bytes)})"))
        shown = self._email_images(prepared.html_for(unsubscribe), briefs, issues)
        return EmailView(title=title, subject=prepared.subject, headers=headers,
                         preheader=prepared.preheader, html=shown,
                         text=prepared.text_for(unsubscribe), html_bytes=prepared.html_bytes,
                         message_bytes=len(raw), max_html_bytes=email.max_html_bytes)

    def _email_images(self, source: str, briefs: list[Brief], issues: list[Issue]) -> str:
        """Remote images → the gallery's copies (or a placeholder): the page loads nothing."""
        by_url = {b.image: b for b in briefs if b.image}
        for brief in briefs:  # a local image is linked where `briefbot serve` answers for it
            if brief.image and not urlsplit(brief.image).scheme:
                published = publish_email_image(self.settings, brief)
                if published is not None:
                    by_url[published[0]] = brief

        def swap(match: re.Match[str]) -> str:
            url = html.unescape(match.group(2))
            if url.startswith(("data:", "images/")):
                return match.group(0)
            brief = by_url.get(url)
            if brief is None:
                issues.append(Issue("warning", f"image {url} is not a brief's hero image; the "
                                    "preview does not load it"))
                return match.group(1) + _UNAVAILABLE + match.group(3)
            try:
                picture = self._picture(self.memo.load(self.settings, brief))
            except ImageError as error:
                issues.append(Issue("warning", f"hero image of {brief.id} cannot be loaded, "
                                    f"readers will see a broken image: {redact(str(error))}"))
                return match.group(1) + _UNAVAILABLE + match.group(3)
            return match.group(1) + picture.src + match.group(3)

        return _IMG_SRC.sub(swap, source)

    # -- helpers -----------------------------------------------------------------------------

    def _picture(self, data: bytes, mime: str | None = None, width: int | None = None,
                 height: int | None = None, *, alt: str | None = None) -> Picture:
        if mime is None or width is None or height is None:
            mime, width, height = _sniff(data)
        name = f"{hashlib.sha256(data).hexdigest()[:20]}.{EXTENSIONS.get(mime, 'bin')}"
        self.pictures.setdefault(name, data)
        return Picture(name, mime, width, height, len(data), alt)

    def _anchor(self, brief_id: str) -> str:
        anchor = base = "brief-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", brief_id).strip("-") or "x")
        number = 1
        while anchor in self.anchors:
            number += 1
            anchor = f"{base}-{number}"
        self.anchors.add(anchor)
        return anchor

    def _valid_until(self, briefs: list[Brief]) -> datetime | None:
        from bot.timing import period_containing

        upcoming = [b.published_at for b in briefs if b.published_at and b.published_at > self.now]
        turn = period_containing(self.now, self.settings.tz,
                                 self.settings.config.email.period_days).end.astimezone(UTC)
        return min([*upcoming, turn])


def _network(channel: Channel) -> str:
    if channel.type in POST_NETWORKS:
        return channel.type
    network = str(channel.options.get("network") or "generic")
    return network if network in NETWORK_NAMES else "generic"


def _segments(text: str, facets: Iterable[dict[str, Any]]) -> list[Segment]:
    """The post text cut into plain text, links and hashtags, for display."""
    spans: list[tuple[int, int, str, str | None]] = []
    encoded = text.encode("utf-8")
    for facet in facets:
        uri = next((f.get("uri") for f in facet.get("features", []) if f.get("uri")), None)
        index = facet.get("index", {})
        start = len(encoded[: index.get("byteStart", 0)].decode("utf-8", "ignore"))
        end = len(encoded[: index.get("byteEnd", 0)].decode("utf-8", "ignore"))
        if uri and end > start:
            spans.append((start, end, "link", uri))
    if not spans:
        spans = [(m.start(), m.end(), "link", m.group()) for m in _URL.finditer(text)]
    for match in _TAG.finditer(text):
        if not any(s < match.end() and match.start() < e for s, e, _, _ in spans):
            spans.append((match.start(), match.end(), "tag", None))
    segments, position = [], 0
    for start, end, kind, href in sorted(spans):
        if start < position:
            continue
        if start > position:
            segments.append(Segment("text", text[position:start]))
        segments.append(Segment(kind, text[start:end], href if _is_web(href) else None))
        position = end
    if position < len(text):
        segments.append(Segment("text", text[position:]))
    return segments


def _is_web(url: str | None) -> bool:
    return bool(url) and urlsplit(str(url)).scheme in ("http", "https")


def _sniff(data: bytes) -> tuple[str, int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            mime = Image.MIME.get(image.format or "", "application/octet-stream")
            return mime, image.width, image.height
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"not an image: {error}") from None


def _captioned(picture: Picture, caption: str) -> Picture:
    return Picture(picture.name, picture.mime, picture.width, picture.height, picture.size,
                   picture.alt, caption)


def _kind(mime: str) -> str:
    return EXTENSIONS.get(mime, mime).upper().replace("JPG", "JPEG")


def human_bytes(size: int) -> str:
    """Decimal units, as the networks state their limits (X: 5 MB = 5,000,000 bytes)."""
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.1f} KB"
    return f"{size / 1_000_000:.1f} MB"


def _write_atomically(target: Path, data: bytes) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, target)


@cache
def _template():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from bot.render.templates import builtin_templates

    env = Environment(loader=FileSystemLoader(str(builtin_templates() / "preview")),
                      autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["bytes"] = human_bytes
    env.filters["local"] = lambda moment, tz, fmt="%Y-%m-%d %H:%M %Z": (
        moment.astimezone(tz).strftime(fmt) if moment else "")
    return env.get_template("gallery.html.j2")


# -- `briefbot serve`: the live gallery ---------------------------------------------------------


class LivePreview:
    """The gallery for `/preview/`, rebuilt only when what it shows may have changed."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._built: dict[bool, tuple[tuple[Any, ...], Gallery, str]] = {}

    def page(self, include_drafts: bool) -> str:
        now = datetime.now(UTC)
        with self._lock:
            cached = self._built.get(include_drafts)
            stamp = self._fingerprint(cached[1] if cached else None)
            if cached is not None and cached[0] == stamp and (
                cached[1].valid_until is None or now < cached[1].valid_until
            ):
                return cached[2]
            gallery = build_gallery(self.settings, now=now, include_drafts=include_drafts)
            page = gallery.html()
            self._built[include_drafts] = (self._fingerprint(gallery), gallery, page)
            return page

    def image(self, name: str) -> bytes | None:
        with self._lock:
            for _, gallery, _ in self._built.values():
                if name in gallery.pictures:
                    return gallery.pictures[name]
        return None

    def _fingerprint(self, gallery: Gallery | None) -> tuple[Any, ...]:
        """Sizes and mtimes of the briefs, their local hero images, the templates, the
        configuration and the SQLite ledger: a few hundred stat calls, no reading."""
        from bot.render.templates import template_folders

        problems: list[Problem] = []
        found = [(name, s.st_size, s.st_mtime_ns)
                 for name, s in brief_files(self.settings.brief_folders, problems)]
        for folder in template_folders(self.settings):
            for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
                found.append(_stat(path))
        extra = [self.settings.path] if self.settings.path else []
        for entry in gallery.entries if gallery else ():
            image = entry.brief.image
            if image and not urlsplit(image).scheme:
                extra.append(entry.brief.path.parent / Path(image).expanduser())
        url = self.settings.database_url
        if url.startswith("sqlite:///"):
            database = Path(url.removeprefix("sqlite:///"))
            extra += [database, Path(f"{database}-wal")]
        found.extend(_stat(path) for path in extra)
        return tuple(found)


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), stat.st_size, stat.st_mtime_ns)


__all__ = ["Card", "EmailView", "Entry", "Gallery", "Issue", "LinkCard", "LivePreview",
           "Picture", "State", "build_gallery", "human_bytes", "write_gallery"]
