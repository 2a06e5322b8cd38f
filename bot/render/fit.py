"""Fit a post to each network's own counting rules: X weights, Mastodon and Bluesky graphemes.

Pure: no network, no I/O. This module owns the networks' rules and the fitting (what is cut,
in which order, and the facets); the counting itself (twitter-text, Mastodon, graphemes) is
`bot.render.counting`'s, whose public names are re-exported here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import regex

from bot.message import Note, NoteKind
from bot.render.counting import (
    _GRAPHEME,
    URL_LENGTH,
    X_CONFIGS,
    XConfig,
    XCount,
    bluesky_length,
    grapheme_length,
    mastodon_length,
    url_spans,
    x_parse,
    x_weighted_length,
)

__all__ = [
    "BLUESKY", "GENERIC", "MASTODON", "X", "X_CONFIGS", "FittedPost", "NetworkRules", "Render",
    "XConfig", "XCount", "add_utm", "bluesky_length", "display_url", "fit_post",
    "grapheme_length", "mastodon_length", "mastodon_rules", "x_parse", "x_weighted_length",
]

ELLIPSIS = "…"

Render = Callable[[str, str, list[str]], str]
"""(title, url as displayed, hashtags with their `#`) -> post text: the caller's layout."""


# -- networks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkRules:
    """How one network measures a post; `fit_post` needs nothing else to know about it."""

    name: str
    max_length: int
    count: Callable[[str], int]
    max_bytes: int | None = None
    url_counts_full: bool = True
    shorten_links_for_display: bool = False
    display_link_length: int = 30
    link_facets: bool = False

    def fits(self, text: str) -> bool:
        if self.count(text) > self.max_length:
            return False
        return self.max_bytes is None or len(text.encode("utf-8")) <= self.max_bytes


def mastodon_rules(max_length: int = 500, url_length: int = URL_LENGTH) -> NetworkRules:
    """Mastodon's rules; an instance may change the 500-character default and the link charge."""
    count = mastodon_length if url_length == URL_LENGTH else partial(
        mastodon_length, url_length=url_length)
    return NetworkRules("mastodon", max_length, count, url_counts_full=False)


X = NetworkRules("x", 280, x_weighted_length, url_counts_full=False)
MASTODON = mastodon_rules()
BLUESKY = NetworkRules("bluesky", 300, grapheme_length, max_bytes=3000,
                       shorten_links_for_display=True, link_facets=True)
GENERIC = NetworkRules("generic", 500, grapheme_length)


# -- fitting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedPost:
    """A post that fits, plus what had to go to get there (for previews and logs)."""

    text: str
    length: int
    limit: int
    url: str
    notes: tuple[Note, ...] = ()  # what was cut, in the order it was cut
    facets: tuple[dict[str, Any], ...] = ()

    @property
    def cut(self) -> tuple[str, ...]:
        return tuple(note.text for note in self.notes)


# A noncharacter: stripped from titles and tags, so it can only come from our own url argument.
_URL_MARK = "\uFDD0"
_DROP = regex.compile(r"[\p{Cs}\p{Noncharacter_Code_Point}\uFEFF\u202A-\u202E\u2066-\u2069]")
_BREAK = regex.compile(r"[\p{Cc}\p{Zl}\p{Zp}]")
_SPACE_RUN = regex.compile(r"\s+")
_TRAILING = " ,;:-–—"  # not worth keeping in front of an ellipsis
_SCHEME = re.compile(r"^https?://", re.IGNORECASE)


def _clean(text: str) -> str:
    """One line of plain text: no controls, newlines, bidi overrides or X-invalid characters."""
    text = _BREAK.sub(" ", _DROP.sub("", text))
    return _SPACE_RUN.sub(" ", unicodedata.normalize("NFC", text)).strip()


def _clean_tags(hashtags: Iterable[str]) -> list[str]:
    tags: dict[str, str] = {}
    for raw in hashtags:
        word = _SPACE_RUN.sub("", _clean(raw)).lstrip("#＃")
        if word:
            tags.setdefault(word.casefold(), "#" + word)
    return list(tags.values())


def display_url(url: str, max_graphemes: int = 30) -> str:
    """The link as shown in a Bluesky post: no scheme, capped with `…` (the facet keeps it all)."""
    shown = _SCHEME.sub("", url)
    if shown.endswith("/") and shown.count("/") == 1:
        shown = shown[:-1]
    graphemes = _GRAPHEME.findall(shown)
    if len(graphemes) > max_graphemes:
        shown = "".join(graphemes[: max_graphemes - 1]) + ELLIPSIS
    return shown


def _default_layout(title: str, url: str, hashtags: list[str], extra: str = "") -> str:
    tail = " ".join(part for part in (url, *hashtags) if part)
    return "\n\n".join(part for part in (title, extra, tail) if part)


def fit_post(rules: NetworkRules, *, title: str, url: str, hashtags: Iterable[str] = (),
             render: Render | None = None, extra: str | None = None) -> FittedPost:
    """Lay out title, link and hashtags, then cut until the network accepts it.

    Hashtags go first (last one first), then `extra` (a second paragraph, default layout
    only), then the title is shortened at a word boundary with `…` (by graphemes when one word
    is too long). The URL is never cut: ValueError if the link alone does not fit. `render`
    must put its url argument into the text verbatim; it may be "" for a post without a link.
    """
    if render is not None and extra:
        raise ValueError("extra is for the default layout; pass it to your template instead")
    url = url.strip()
    if url and not _SCHEME.match(url):
        raise ValueError(f"not an http(s) URL: {url!r}")
    shown = display_url(url, rules.display_link_length) if rules.shorten_links_for_display else url
    title, extra_text, tags = _clean(title), _clean(extra or ""), _clean_tags(hashtags)

    def build(title_text: str) -> tuple[str, list[int]]:
        mark = _URL_MARK if url else ""
        raw = (render(title_text, mark, list(tags)) if render
               else _default_layout(title_text, mark, tags, extra_text))
        pieces = raw.split(_URL_MARK)
        if url and len(pieces) < 2:
            raise ValueError("the layout dropped the URL; it must include its url argument")
        starts, offset = [], len(pieces[0])
        for piece in pieces[1:]:
            starts.append(offset)
            offset += len(shown) + len(piece)
        return shown.join(pieces), starts

    cut: list[Note] = []
    text, starts = build(title)
    if not rules.fits(text) and tags:
        # The most leading hashtags that fit, by bisection: a few layouts, not one per tag.
        every, keep, hi = list(tags), 0, len(tags) - 1
        while keep < hi:
            mid = (keep + hi + 1) // 2
            tags[:] = every[:mid]
            keep, hi = (mid, hi) if rules.fits(build(title)[0]) else (keep, mid - 1)
        tags[:] = every[:keep]
        cut += [Note(NoteKind.HASHTAG_DROPPED, f"dropped hashtag {tag}", subject=tag)
                for tag in reversed(every[keep:])]
        text, starts = build(title)
    if not rules.fits(text) and extra_text:
        extra_text = ""
        cut.append(Note(NoteKind.CUT, "dropped extra text"))
        text, starts = build(title)
    if not rules.fits(text) and title:
        short = _shorten(title, lambda candidate: rules.fits(build(candidate)[0]))
        graphemes = grapheme_length(title)
        cut.append(Note(NoteKind.CUT, f"shortened title from {graphemes} to "
                        f"{grapheme_length(short)} characters" if short
                        else f"dropped title ({graphemes} characters)"))
        title = short
        text, starts = build(title)
    if not rules.fits(text):
        raise ValueError(f"the link alone is over {rules.name}'s limit: {text!r}")

    facets: tuple[dict[str, Any], ...] = ()
    if rules.link_facets and url:
        facets = tuple(_link_facet(text, start, shown, url) for start in starts)
    if rules.link_facets:
        facets += tuple(_tag_facets(text, tags))
        facets += tuple(_other_link_facets(text, [(s, s + len(shown)) for s in starts]))
        facets = tuple(sorted(facets, key=lambda f: f["index"]["byteStart"]))
    return FittedPost(text=text, length=rules.count(text), limit=rules.max_length, url=url,
                      notes=tuple(cut), facets=facets)


def _shorten(title: str, fits: Callable[[str], bool]) -> str:
    """The longest `prefix…` that fits, at a word boundary unless that wastes half the room."""
    graphemes = _GRAPHEME.findall(title)

    def candidate(keep: int) -> str:
        while keep and not graphemes[keep - 1].strip(_TRAILING):
            keep -= 1  # whole graphemes only: a stripped "-" may carry a prepended mark
        return "".join(graphemes[:keep]) + ELLIPSIS if keep else ""

    def ok(keep: int) -> bool:
        text = candidate(keep)
        return bool(text) and fits(text)

    # Longest grapheme prefix by bisection. A link inside the title can make the count
    # non-monotonic; then this finds a good prefix rather than the best, but always one that fits.
    best, hi = 0, len(graphemes) - 1
    while best < hi:
        mid = (best + hi + 1) // 2
        best, hi = (mid, hi) if ok(mid) else (best, mid - 1)
    if not best:
        return ""
    if graphemes[best].isspace():
        return candidate(best)  # the cut already falls between words
    for keep in range(best - 1, max(best // 2, 1) - 1, -1):
        if graphemes[keep].isspace() and ok(keep):
            return candidate(keep)
    return candidate(best)  # one long word (or a script without spaces): cut by graphemes


def _link_facet(text: str, start: int, shown: str, url: str) -> dict[str, Any]:
    """An atproto link facet: UTF-8 byte offsets of the link as displayed, the full URL as uri."""
    byte_start = len(text[:start].encode("utf-8"))
    return {
        "index": {"byteStart": byte_start, "byteEnd": byte_start + len(shown.encode("utf-8"))},
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": url}],
    }


def _other_link_facets(text: str, taken: list[tuple[int, int]]) -> Iterable[dict[str, Any]]:
    """Link facets for `https://` links written in the title itself: Bluesky links text only
    through facets, so without one a URL in a title stays plain text."""
    for start, end in url_spans(text):
        if any(start < t_end and t_start < end for t_start, t_end in taken):
            continue  # the brief's own link, which has its facet already
        uri = text[start:end]
        byte_start = len(text[:start].encode("utf-8"))
        yield {"index": {"byteStart": byte_start,
                         "byteEnd": byte_start + len(uri.encode("utf-8"))},
               "features": [{"$type": "app.bsky.richtext.facet#link", "uri": uri}]}


def _tag_facets(text: str, tags: list[str]) -> Iterable[dict[str, Any]]:
    """`app.bsky.richtext.facet#tag` for each hashtag left in the text: Bluesky links a tag
    only through a facet. Offsets are UTF-8 bytes; the tag is stored without its `#`."""
    for tag in tags:
        pattern = regex.compile(rf"(?<![\p{{L}}\p{{M}}\p{{N}}_]){regex.escape(tag)}"
                                rf"(?![\p{{L}}\p{{M}}\p{{N}}_])")
        for match in pattern.finditer(text):
            start = len(text[:match.start()].encode("utf-8"))
            yield {"index": {"byteStart": start, "byteEnd": start + len(tag.encode("utf-8"))},
                   "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": tag[1:]}]}


def add_utm(url: str, params: Mapping[str, str]) -> str:
    """Append `utm_*` parameters the link lacks; ones already set (by hand) win. Keeps `#frag`."""
    parts = urlsplit(url)
    present = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    added = []
    for key, value in params.items():
        key = key if key.startswith("utm_") else f"utm_{key}"
        if value and key not in present:
            added.append((key, value))
            present.add(key)
    if not added:
        return url
    query = "&".join(part for part in (parts.query, urlencode(added)) if part)
    return urlunsplit(parts._replace(query=query))
