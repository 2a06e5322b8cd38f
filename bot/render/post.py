"""A brief → a social post for one network: its Jinja template, fitted to the network's rules,
both read from the network's declaration (`bot.network.Network`, declared by its channel)."""

from __future__ import annotations

import unicodedata
from typing import Any

import regex

from bot.briefs import Brief, Problem
from bot.config import Settings
from bot.message import DeliveryKey, LinkCard, Message
from bot.network import NO_CARD, Network
from bot.render import fit
from bot.render.counting import linked_part
from bot.render.templates import template_env

# A post for no network in particular (an outbox, a webhook): graphemes, no image of its own.
GENERIC = Network("generic", "Post", "characters", rules=lambda options: fit.GENERIC,
                  link_card=NO_CARD)


def hashtags_for(brief: Brief, options: dict[str, Any]) -> list[str]:
    """`#Category #tag ...` as configured (`hashtags = "category" | "tags" | "both" | "none"`)."""
    mode = options.get("hashtags", "both")
    words: list[str] = []
    if mode in ("category", "both") and brief.category:
        words.append(brief.category)
    if mode in ("tags", "both"):
        words.extend(brief.tags)
    in_title = {match.casefold() for match in _TITLE_TAG.findall(brief.title or "")}
    tags = (_hashtag(word) for word in words)
    return list(dict.fromkeys(tag for tag in tags
                              if tag and tag[1:].casefold() not in in_title))


_NOT_TAG = regex.compile(r"[^\p{L}\p{M}\p{N}_]")
_TITLE_TAG = regex.compile(r"[#＃]([\p{L}\p{M}\p{N}_]+)")


def _hashtag(word: str) -> str:
    """`#Word` that every network links whole, or "" when none would.

    Combining marks stay (Devanagari vowel signs and viramas, Thai vowels: dropping them
    spells another word); words of a phrase get a capital first letter only (`str.title`
    makes "don't" `DonT`); a tag of digits alone is not a hashtag on X or Mastodon.
    """
    words = word.split()
    if len(words) > 1:
        words = [w[:1].upper() + w[1:] for w in words]
    body = _NOT_TAG.sub("", "".join(words))
    return "" if not body or body.isdigit() else "#" + body


def brief_language(brief: Brief) -> str | None:
    """The brief's own `lang`/`language` (a BCP 47 tag such as `hi`), which wins over the
    channel's: one channel carries briefs in several languages."""
    value = brief.extra.get("language")
    return str(value).strip() or None if value else None


def render_post(brief: Brief, key: DeliveryKey, *, network: Network, settings: Settings,
                options: dict[str, Any]) -> Message:
    rules = network.rules(options)
    template = template_env(settings).get_template(network.template_name)
    url = brief.source_url or ""
    utm = options.get("utm") or {}
    if utm:
        url = fit.add_utm(url, {str(k): str(v) for k, v in utm.items()})

    def layout(title: str, shown_url: str, tags: list[str]) -> str:
        return template.render(title=title, url=shown_url, hashtags=tags, brief=brief).strip()

    fitted = fit.fit_post(
        rules,
        title=brief.title or "",
        url=url,
        hashtags=hashtags_for(brief, options),
        render=layout,
    )
    return Message(
        key=key,
        kind="post",
        text=fitted.text,
        link=url,
        image=brief.image,
        image_alt=brief.image_alt,
        length=fitted.length,
        limit=fitted.limit,
        notes=fitted.notes,
        card=LinkCard(title=brief.title or "", summary=brief.summary or ""),
        language=brief_language(brief),
        facets=fitted.facets,
    )


def link_problem(brief: Brief) -> Problem | None:
    """A warning when X and Mastodon would link only part of the brief's source URL (a
    trailing `.` or `)`, a `user:pass@`, a top-level domain they do not know): readers would
    land on the wrong page."""
    url = brief.source_url
    if not url:
        return None
    whole = unicodedata.normalize("NFC", url)
    short = {name: linked_part(url, name.lower()) for name in ("X", "Mastodon")}
    short = {name: part for name, part in short.items() if part != whole}
    if not short:
        return None
    said = "; ".join(f"{name} would link {f'only {part!r}' if part else 'none of it'}"
                     for name, part in short.items())
    return Problem(str(brief.path), "warning", "partly-linked-url",
                   f"{said} of the source URL {url!r}; remove trailing punctuation or "
                   "credentials, or link a page whose address they link whole", "source_url")
