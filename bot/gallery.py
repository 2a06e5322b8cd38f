"""What the preview gallery shows, and its page: the cards, entries and pictures `bot.preview`
fills in, the post text cut into links and hashtags, the HTML template with its
Content-Security-Policy, and writing a gallery to a folder (content-addressed images).

`bot.preview` builds a `Gallery` and re-exports the public names here.
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.briefs import Brief, Problem
from bot.config import Settings
from bot.words import counted

# Gmail cuts the HTML of longer emails behind "[Message clipped]" (102 KB; the lower reading).
GMAIL_CLIP_BYTES = 102_000
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; frame-src 'self'; "
       "base-uri 'none'; form-action 'none'")
_PICTURE_NAME = re.compile(r"[0-9a-f]{20}\.(?:jpg|png|gif|webp|bin)")
_URL = re.compile(r"https?://\S+")
_TAG = re.compile(r"(?<![\w#])#\w+")


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
    network_title: str = ""  # the network's declared `title` ("X"); "" for an email
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
        return "Email" if self.kind == "email" else (self.network_title
                                                     or self.network.title())


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
