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

This module owns the building (the briefs and their post cards) and the live gallery; what the
gallery shows and its page are `bot.gallery`'s, the email cards `bot.preview_email`'s.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.briefs import Brief, BriefReader, Problem, brief_files
from bot.channels import Channel, Message, network_of
from bot.config import Settings
from bot.gallery import (  # noqa: F401  (CSP, GMAIL_CLIP_BYTES: re-exported)
    CSP,
    EXTENSIONS,
    GMAIL_CLIP_BYTES,
    Card,
    EmailView,
    Entry,
    Gallery,
    Issue,
    LinkCard,
    Picture,
    State,
    _captioned,
    _is_web,
    _kind,
    _segments,
    _sniff,
    human_bytes,
    write_gallery,
)
from bot.images import ImageError, ProcessedImage
from bot.ledger import Ledger
from bot.message import DeliveryKey, NoteKind
from bot.network import EMBED_CARD, NO_CARD, Network
from bot.plan import Plan, Step, make_plan, open_for_planning, plan_digest
from bot.preview_email import (  # noqa: F401  (re-exported)
    SAMPLE_RECIPIENT,
    TOKEN_PLACEHOLDER,
    EmailCards,
)
from bot.redaction import redact
from bot.render.media import ImageMemo, images_once, prepare_for
from bot.render.post import link_problem

# A brief's states on one channel, most urgent first: a brief shows the first of its channels'.
_CUTS = (NoteKind.HASHTAG_DROPPED, NoteKind.CUT)


# -- building ------------------------------------------------------------------------------------


def build_gallery(settings: Settings, *, now: datetime, include_drafts: bool = False,
                  memo: ImageMemo | None = None) -> Gallery:
    """Render every brief on every enabled channel, and the digest, without sending anything."""
    return _Builder(settings, now, include_drafts, memo or ImageMemo()).build()


class _Builder(EmailCards):
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
        issues: list[Issue] = []
        if draft:
            issues.append(Issue("warning", f"Draft: status is {brief.status or 'missing'!r}, "
                                f"so it is never published; set `status: {self.statuses[0]}` "
                                "when it is ready"))
        elif blockers := brief.blockers(self.statuses):  # a draft's only blocker is its status
            issues.append(Issue("error", "Blocked: will not be published until fixed: "
                                + "; ".join(blockers)))
        for problem in (*brief.problems, *filter(None, [link_problem(brief)])):
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
        network = network_of(channel)
        if state.name in ("sent", "changed", "skipped", "in-flight"):
            card = Card("receipt", channel.name, network.name, state,
                        network_title=network.title)
            card.sent_text = self.ledger.sent_text(DeliveryKey(f"brief:{brief.id}",
                                                               channel.name))
            return card
        key = DeliveryKey(f"brief:{brief.id}", channel.name)
        try:
            message = channel.render(brief, key)
            if message.kind == "email":
                prepared = message.prepared_email
                card = Card("email", channel.name, "email", state)
                card.email = self._email(prepared, "Single-brief email", card.issues,
                                         [brief]) if prepared else None
                if card.email is None:
                    card.issues.append(Issue("error", "the channel rendered an email without "
                                             "its prepared parts; nothing to preview"))
                return card
            return self._post(brief, channel, network, state, message)
        except Exception as error:  # noqa: BLE001 - one broken brief must not stop the preview
            return Card("error", channel.name, network.name, State("error", "cannot render"),
                        [Issue("error", f"cannot render for {channel.name}: "
                               f"{redact(str(error))}")], network_title=network.title)

    # -- posts -------------------------------------------------------------------------------

    def _post(self, brief: Brief, channel: Channel, network: Network, state: State,
              message: Message) -> Card:
        card = Card("post", channel.name, network.name, state, text=message.text,
                    length=message.length, limit=message.limit, unit=network.unit,
                    network_title=network.title)
        card.segments = _segments(message.text, message.facets)
        cuts = [note for note in message.notes if note.kind in _CUTS]
        if cuts:
            tags = [note.subject or "" for note in cuts
                    if note.kind is NoteKind.HASHTAG_DROPPED]
            rest = [note.text for note in cuts if note.kind is NoteKind.CUT]
            parts = ([f"dropped hashtag{'s' if len(tags) > 1 else ''} {' '.join(tags)}"]
                     if tags else []) + rest
            card.issues.append(Issue("warning", f"cut to fit {message.limit} {card.unit}: "
                                     + "; ".join(parts)))
        card.issues.extend(Issue(note.severity, redact(note.text)) for note in message.notes
                           if note.kind not in _CUTS)
        if message.length is not None and message.limit is not None and (
            message.length > message.limit
        ):
            card.issues.append(Issue("error", f"{message.length} {card.unit} is over the limit "
                                     f"of {message.limit}: the network will refuse it"))
        max_bytes = network.rules(channel.options).max_bytes
        if max_bytes is not None:
            card.text_bytes = len(message.text.encode("utf-8"))
            if card.text_bytes > max_bytes:
                card.issues.append(Issue("error", f"{card.text_bytes} bytes is over "
                                         f"{network.title}'s {max_bytes}-byte limit"))
        self._post_image(brief, channel, network, message, card)
        card.link_card = self._link_card(channel, network, message, card.image)
        return card

    def _post_image(self, brief: Brief, channel: Channel, network: Network, message: Message,
                    card: Card) -> None:
        if not brief.image:
            return
        processed = message.fitted_image
        warning = next((n.text for n in message.notes if n.kind is NoteKind.IMAGE_LEFT_OUT),
                       None)
        stand_in = channel.network is None and network.images is not None
        # The declared byte limit, unless the adapter fitted the image to the limits the
        # service announced (a Mastodon instance's own).
        announced = network.limits_announced and not stand_in
        limit = network.images.max_bytes if network.images and not announced else None
        how = "as uploaded"
        if processed is None and warning is None and stand_in and network.images is not None:
            # An outbox standing in for a network: fit the image as that network's adapter would.
            processed, warning = prepare_for(self.settings, brief, network.images)
            if warning:
                card.issues.append(Issue("warning", redact(warning)))
            how = f"as {network.title} would receive it"
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

    def _image_size_issues(self, brief: Brief, processed: ProcessedImage, network: Network,
                           limit: int | None, card: Card) -> None:
        name = network.title
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

    def _link_card(self, channel: Channel, network: Network, message: Message,
                   image: Picture | None) -> LinkCard | None:
        if not message.link or network.link_card == NO_CARD:
            return None
        title = message.card.title if message.card else ""
        summary = message.card.summary if message.card else ""
        domain = urlsplit(message.link).hostname or message.link
        if network.link_card == EMBED_CARD:
            embed = str(channel.options.get("embed") or "auto")
            if embed == "image" or (image is not None and embed != "card"):
                return None
            return LinkCard(message.link, domain, title, summary,
                            image if embed == "card" else None,
                            "the link card is posted with the brief's title and summary")
        if image is not None:
            return None  # a network that builds the card shows none under an attached image
        return LinkCard(message.link, domain, title, summary, None,
                        f"{network.title} builds this card from the page's own "
                        "metadata; the brief's title and summary stand in for it here")

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
