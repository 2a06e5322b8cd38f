"""Briefs → the digest email and the single-brief email: Jinja → MJML → HTML, plus a text part.

Both parts are rendered from the same item data by `templates/email/*.j2` (a user's templates
folder overrides any of them), then MIME-encoded once by `bot.render.mime`; per recipient only
the personal parts are swapped in.

Hero images: an absolute `https://` URL is used as it is (front-matter `image_width` and
`image_height` give its height; otherwise it scales). A local file is fitted for email (at most
1200 px, JPEG or PNG, no metadata), kept in the state folder and linked at
`email.base_url/images/NAME`, where `briefbot serve` answers for it. A plain `http://` URL is
left out (mail clients block or warn about it); the brief still goes out, without its picture.

Every email links its web version (`archive_url`, "View in your browser") and names the archive
in `List-Archive`. `web=True` renders that web version for `bot.archive`: the same templates
with `web_version` set, every item whole, and no unsubscribe link (nobody's token in it).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import jinja2
import mjml
import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

from bot.briefs import Brief, clean_text
from bot.config import ConfigError, Settings
from bot.message import DeliveryKey, Message
from bot.render.dates import date_range
from bot.render.media import publish_email_image
from bot.render.mime import HeaderValueError, PreparedEmail, Recipient, assemble
from bot.render.templates import template_env
from bot.render.width import wrap
from bot.timing import parse_period

__all__ = ["PreparedEmail", "Recipient", "RenderedEmail", "archive_url", "brief_archive_url",
           "digest_headline", "message_id_for", "prepare_brief_email", "prepare_digest",
           "render_brief_email", "render_digest"]

IMAGE_WIDTH = 552  # the 600px column minus its padding
PREHEADER_LIMIT = 140
UNCATEGORISED = "Other news"
TEXT_COLUMNS = 70  # the text part's lines, plus the items' two-space indent: 72 columns
_WRAP = re.compile(rf"\S.{{0,{TEXT_COLUMNS - 1}}}(?=\s|$)|\S+")
_SPACE = re.compile(r"\s")
_EPOCH = datetime.min.replace(tzinfo=UTC)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
_MARKDOWN = MarkdownIt("commonmark", {"html": False})
# Resolving the template folders costs more than rendering a small email; settings don't change.
_template_env = lru_cache(maxsize=16)(template_env)
_SECTION_TAGS = {"p", "br", "strong", "em", "b", "i", "a", "ul", "ol", "li", "blockquote",
                 "code", "pre", "h3", "h4", "hr"}


class Image(NamedTuple):
    src: str
    alt: str
    width: int
    height: int | None


class Section(NamedTuple):
    name: str
    html: Markup  # sanitised
    text: str  # the Markdown source, readable as it is


class Item(NamedTuple):
    """What a template sees of one brief."""

    id: str
    title: str
    summary: str
    source: str
    url: str
    category: str
    published_at: datetime | None
    image: Image | None
    compact: bool = False  # shown as title and link only, to keep the HTML under the size cap
    summary_wrapped: str = ""  # the summary in lines of at most 70 columns, for the text part
    title_wrapped: str = ""  # the title, likewise
    sections: tuple[Section, ...] = ()


class Group(NamedTuple):
    name: str
    items: list[Item]


@dataclass(frozen=True)
class RenderedEmail:
    """Both bodies before MIME encoding, for previews; `token` stands where each recipient's
    unsubscribe URL goes (`PreparedEmail.html_for` fills it in)."""

    subject: str
    preheader: str
    html: str
    text: str
    token: str


def archive_url(settings: Settings, period_label: str | None = None) -> str:
    """Where the web archive (or one period's page in it) is: `email.base_url/archive/...`."""
    base = settings.config.email.base_url.rstrip("/") + "/archive/"
    return base + quote(period_label, safe="+") + "/" if period_label else base


def brief_archive_url(settings: Settings, brief_id: str) -> str | None:
    """A single-brief email's web version; none for an id that cannot be a folder name."""
    if not _SAFE_ID.fullmatch(brief_id):
        return None
    return archive_url(settings) + "briefs/" + brief_id + "/"


def prepare_digest(settings: Settings, briefs: list[Brief], *, period_label: str,
                   now: datetime) -> PreparedEmail:
    """The period's digest, rendered and MIME-encoded once, ready to `personalise`."""
    return _prepare(settings, render_digest(settings, briefs, period_label=period_label, now=now))


def prepare_brief_email(settings: Settings, brief: Brief, *, now: datetime) -> PreparedEmail:
    return _prepare(settings, render_brief_email(settings, brief, now=now))


def brief_email_message(settings: Settings, brief: Brief, key: DeliveryKey) -> Message:
    """A brief's own email as a message, which the mailing fans out to every subscriber."""
    prepared = prepare_brief_email(settings, brief, now=datetime.now(UTC))
    return Message(key=key, kind="email", text=prepared.text, subject=prepared.subject,
                   html=prepared.html, length=prepared.html_bytes, prepared_email=prepared)


def render_digest(settings: Settings, briefs: list[Brief], *, period_label: str,
                  now: datetime, web: bool = False) -> RenderedEmail:
    """The period's briefs grouped by category; later items shrink to fit `max_html_bytes`.

    `web` renders the archive's web version: every item whole (no mail client clips it), no
    "view in your browser" link and no unsubscribe link, so nothing in it is anyone's."""
    email = settings.config.email
    items = [_item(brief, settings) for brief in _display_order(briefs)]
    label = _tidy(period_label)
    dates = _period_dates(settings, period_label)
    subject, preheader = _headline(settings, [item.title for item in items], label, dates)
    token = _token(subject, briefs)
    base = _context(settings, subject=subject, preheader=preheader, token=token, now=now,
                    archive=archive_url(settings, period_label), web=web)

    newest_first = sorted(items, key=_recency, reverse=True)

    @cache
    def render(full: int, shown: int) -> tuple[str, str]:
        whole = {item.id for item in newest_first[:full]}
        listed = {item.id for item in newest_first[:shown]}
        cards = [item for item in items if item.id in whole]
        more = [_compact(item) for item in items if item.id in listed and item.id not in whole]
        context = {**base, "period_label": label, "period_dates": dates, "items": cards + more,
                   "groups": _groups(cards), "more": more, "count": len(items),
                   "omitted": len(items) - shown}
        return _render(settings, "digest", context, token, web=web)

    if web:
        html, text = render(len(items), len(items))
    else:
        html, text = _fit(render, len(items), email.max_html_bytes)
    return RenderedEmail(subject, preheader, html, text, token)


def digest_headline(settings: Settings, briefs: list[Brief], *,
                    period_label: str) -> tuple[str, str]:
    """The digest's subject and preheader, without rendering it (for the archive's index)."""
    titles = [brief.title or brief.id for brief in _display_order(briefs)]
    return _headline(settings, titles, _tidy(period_label),
                     _period_dates(settings, period_label))


def _headline(settings: Settings, titles: list[str], label: str,
              dates: str) -> tuple[str, str]:
    subject = _subject(settings, {"list_name": _tidy(settings.config.email.list_name),
                                  "period_label": label, "period_dates": dates,
                                  "count": len(titles)})
    count = f"{len(titles)} brief{'s' if len(titles) != 1 else ''}"
    preheader = _shorten(f"{count}: " + "; ".join(titles)
                         if titles else f"No new briefs for {dates}.")
    return subject, preheader


def render_brief_email(settings: Settings, brief: Brief, *, now: datetime,
                       web: bool = False) -> RenderedEmail:
    """One brief on its own, with its sections rendered from Markdown (`web`: as
    `render_digest`'s, the archive's version with nobody's links in it)."""
    item = _item(brief, settings, with_sections=True)
    preheader = _shorten(item.summary or item.title)
    token = _token(item.title, [brief])
    context = {**_context(settings, subject=item.title, preheader=preheader, token=token,
                          now=now, archive=brief_archive_url(settings, brief.id), web=web),
               "item": item}
    html, text = _render(settings, "brief", context, token, web=web)
    return RenderedEmail(item.title, preheader, html, text, token)


def message_id_for(key: DeliveryKey, domain: str) -> str:
    """The same `<...@domain>` for the same delivery key, so a resent email is recognisably the
    same message (receivers and our own reconciliation deduplicate on it)."""
    domain = domain.strip().lower()
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"{domain!r} is not a domain name for a Message-ID")
    digest = hashlib.sha256(str(key).encode("utf-8")).hexdigest()[:32]
    return f"<{digest}.briefbot@{domain}>"


def section_html(markdown: str) -> Markup:
    """Brief Markdown → HTML safe to place inside the MJML (no raw HTML, scripts or images)."""
    html = _MARKDOWN.render(_COMMENT.sub("", markdown))
    return Markup(nh3.clean(html, tags=_SECTION_TAGS, attributes={"a": {"href", "title"}},
                            url_schemes={"http", "https", "mailto"}))


def _item(brief: Brief, settings: Settings, *, with_sections: bool = False) -> Item:
    title = brief.title or brief.id
    url = brief.source_url or ""
    source = brief.source or urlsplit(url).hostname or ""
    sections: tuple[Section, ...] = ()
    if with_sections:
        sections = tuple(
            Section(_heading(name), section_html(text), _COMMENT.sub("", text).strip())
            for name, text in brief.sections.items()
            if _COMMENT.sub("", text).strip() and text.strip() != url
        )
    published = brief.published_at.astimezone(settings.tz) if brief.published_at else None
    return Item(id=brief.id, title=title, summary=brief.summary, source=source, url=url,
                category=brief.category or UNCATEGORISED, published_at=published,
                image=_image(settings, brief, title), sections=sections,
                summary_wrapped=_wrap(brief.summary), title_wrapped=_wrap(title))


def _wrap(text: str) -> str:
    """Lines of at most `TEXT_COLUMNS` display columns (a CJK character counts two), broken at
    spaces or between CJK characters (`bot.render.width`); a longer word gets its own line.

    ASCII takes one regular expression: Jinja's `wordwrap` (textwrap) costs more than the MJML
    compile."""
    if text.isascii():
        return "\n".join(_WRAP.findall(text))
    return "\n".join(wrap(text, TEXT_COLUMNS))


def _image(settings: Settings, brief: Brief, title: str) -> Image | None:
    src = (brief.image or "").strip()
    parts = urlsplit(src)
    alt = brief.image_alt or title
    if not parts.scheme and src:  # a local file: fitted, and served by `briefbot serve`
        published = publish_email_image(settings, brief)
        if published is None:
            return None
        url, fitted = published
        return Image(src=url, alt=alt, width=IMAGE_WIDTH,
                     height=max(1, round(IMAGE_WIDTH * fitted.height / fitted.width)))
    if parts.scheme != "https" or not parts.netloc or _SPACE.search(src):
        return None
    width, height = brief.extra.get("image_width"), brief.extra.get("image_height")
    scaled = None
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        scaled = max(1, round(IMAGE_WIDTH * height / width))
    return Image(src=src, alt=alt, width=IMAGE_WIDTH, height=scaled)


def _compact(item: Item) -> Item:
    return item._replace(summary="", summary_wrapped="", image=None, sections=(), compact=True)


def _heading(name: str) -> str:
    return name.capitalize() if name.isupper() else name


def _display_order(briefs: Iterable[Brief]) -> list[Brief]:
    """Oldest first, grouped by category in the order categories first appear."""
    ordered = sorted(briefs, key=lambda b: (b.published_at is None, b.published_at or 0, b.id))
    categories: dict[str, list[Brief]] = {}
    for brief in ordered:
        categories.setdefault(brief.category or UNCATEGORISED, []).append(brief)
    uncategorised = categories.pop(UNCATEGORISED, [])
    return [brief for group in categories.values() for brief in group] + uncategorised


def _groups(items: list[Item]) -> list[Group]:
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.category, []).append(item)
    return [Group(name, members) for name, members in groups.items()]


def _fit(render: Callable[[int, int], tuple[str, str]], count: int,
         limit: int) -> tuple[str, str]:
    """As many whole cards as fit in `limit` bytes, then as many title-and-link rows as still
    fit; `render(full, shown)` shows the `shown` newest items, the `full` newest of them whole.
    The footer is in every rendering, so it always survives."""

    def fits(full: int, shown: int) -> bool:
        html = render(full, shown)[0]
        return (len(html) if html.isascii() else len(html.encode("utf-8"))) <= limit

    if fits(count, count):
        return render(count, count)
    full = _largest(lambda n: fits(n, n), count) or 0
    shown = full + (_largest(lambda n: fits(full, full + n), count - full) or 0)
    return render(full, shown)


def _recency(item: Item) -> tuple[bool, datetime, str]:
    """Newest first when sorted in reverse; a brief without a time counts as the oldest."""
    return (item.published_at is not None, item.published_at or _EPOCH, item.id)


def _largest(ok: Callable[[int], bool], high: int) -> int | None:
    """The largest n in 0..high with ok(n), for an `ok` that turns false and stays false."""
    low, best = 0, None
    while low <= high:
        middle = (low + high) // 2
        if ok(middle):
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best


def _period_dates(settings: Settings, label: str) -> str:
    """The period's days as readers write them ("November 23 – 29, 2026" in `en`); a label
    that names no period (a test's, a template's) stands as it is."""
    try:
        period = parse_period(label, settings.tz)
    except ValueError:
        return _tidy(label)
    return date_range(period.start.date(), (period.end - timedelta(days=1)).date(),
                      settings.config.email.language)


def _subject(settings: Settings, context: dict[str, Any]) -> str:
    """The digest's subject from `email/digest_subject.txt.j2`, which a user may override."""
    name = "email/digest_subject.txt.j2"
    try:
        subject = _template_env(settings).get_template(name).render(context)
    except jinja2.TemplateError as error:
        raise ConfigError(f"template {name}: {error}; fix the template in "
                          f"{settings.config.templates}/ or delete it to use the built-in "
                          "one") from None
    return _tidy(subject) or context["list_name"]


def _context(settings: Settings, *, subject: str, preheader: str, token: str,
             now: datetime, archive: str | None, web: bool) -> dict[str, Any]:
    email = settings.config.email
    return {
        "language": email.language,
        "archive_url": archive,  # this email's web version ("view in your browser")
        "archive_index_url": archive_url(settings),
        "web_version": web,
        "subscribe_url": (email.base_url.rstrip("/") + "/subscribe"
                          if settings.config.web.subscribe_form else ""),
        "subject": subject,
        "preheader": preheader,
        "list_name": _tidy(email.list_name),
        "postal_address": _tidy(email.postal_address),
        "base_url": email.base_url.rstrip("/"),
        "unsubscribe_url": token,
        "now": now.astimezone(settings.tz),
    }


def _render(settings: Settings, name: str, context: dict[str, Any],
            token: str, *, web: bool = False) -> tuple[str, str]:
    env = _template_env(settings)
    parts = []
    for template in (f"email/{name}.mjml.j2", f"email/{name}.txt.j2"):
        try:
            parts.append(env.get_template(template).render(context).strip() + "\n")
        except jinja2.TemplateError as error:
            raise ConfigError(f"template {template}: {error}; fix the template in "
                              f"{settings.config.templates}/ or delete it to use the "
                              "built-in one") from None
        if web:
            # The web version carries nobody's unsubscribe link; a user template that still
            # writes one gets the list's home page there instead.
            parts[-1] = parts[-1].replace(token, context["base_url"] + "/")
        elif token not in parts[-1]:
            raise ConfigError(f"template {template} has no unsubscribe link; every email must "
                              "carry one: put {{ unsubscribe_url }} in it")
    source, text = parts
    try:
        html = mjml.mjml2html(source, disable_comments=True)
    except ValueError as error:
        raise ConfigError(f"template email/{name}.mjml.j2 is not valid MJML ({error}); "
                          "fix the template") from None
    return html, text


def _prepare(settings: Settings, rendered: RenderedEmail) -> PreparedEmail:
    email = settings.config.email
    try:
        return assemble(from_address=email.from_address, subject=rendered.subject,
                        list_id=email.list_id, reply_to=email.reply_to, html=rendered.html,
                        text=rendered.text, preheader=rendered.preheader, token=rendered.token,
                        list_archive=archive_url(settings))
    except HeaderValueError as error:
        key = {"From": "from_address", "Reply-To": "reply_to", "List-Id": "list_id",
               "List-Archive": "base_url"}[error.header]
        raise ConfigError(f"`email.{key}`: {error}; fix it in the configuration") from None


def _token(subject: str, briefs: Iterable[Brief]) -> str:
    """Stands for the unsubscribe URL until `personalise`: letters, digits and hyphens only, so
    HTML escaping, MJML and quoted-printable leave it alone; derived from the content, so no
    brief can contain it."""
    seed = "\0".join([subject, *(brief.content_hash for brief in briefs)])
    return "briefbot-unsubscribe-" + hashlib.sha256(seed.encode("utf-8")).hexdigest()[:16]


def _tidy(text: str) -> str:
    """`clean_text`, with a fast path for the usual already-clean text."""
    if text.isprintable() and unicodedata.is_normalized("NFC", text):
        return " ".join(text.split())
    return clean_text(text)


def _shorten(text: str, limit: int = PREHEADER_LIMIT) -> str:
    text = _tidy(text)
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
