"""What a social network is, as data: one `Network` declared by each channel class.

The channel class owns its declaration (`XChannel.network`, in `bot/channels/x.py`; Telegram's
in `bot/channels/telegram.py`), and everything that needs to know a network reads it there
instead of keeping its own table: `bot.render.post` fits and lays out the post with its rules
and template, `bot.render.media` and `bot.images` fit the hero image to its limits, and
`bot.preview` shows its unit, its name, its image limit and its link card. So a new network is
one adapter file (with its declaration and its template) plus one entry point.

This module sits at the bottom of the layers and imports nothing of the bot: rendering, images
and the preview read a declaration without loading any adapter or network SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# How the network shows the post's link (`Network.link_card`).
PAGE_CARD = "page"  # it builds a preview card from the page's own metadata, none under an image
EMBED_CARD = "embed"  # the post itself carries the card (Bluesky's external embed)
NO_CARD = "none"


@dataclass(frozen=True)
class ImageLimits:
    """What the network takes as a hero image: bytes, pixels, sides and formats."""

    max_bytes: int
    max_pixels: int | None = None
    max_side: int | None = None
    formats: tuple[str, ...] = ("image/jpeg", "image/png")  # what we may send it

    @property
    def keeps_png(self) -> bool:
        return "image/png" in self.formats


@dataclass(frozen=True)
class Network:
    """One network's declaration.

    `rules(options)` gives its fitting rules (`bot.render.fit.NetworkRules`: length limit and
    counting function, byte limit, link handling), from the channel's options where those can
    change them (a Mastodon instance's own limit). `images` is None for a network that posts
    text only. `template` defaults to `social/<name>.txt.j2`.
    """

    name: str
    title: str  # as people call it: "X", "Mastodon"
    unit: str  # what its length counts: "weighted characters", "graphemes"
    rules: Callable[[Mapping[str, Any]], Any] = field(repr=False)
    images: ImageLimits | None = None
    # The service announces its own limits (a Mastodon instance), which the adapter reads at
    # render: the declared ones are only its stock defaults, for a channel standing in for it.
    limits_announced: bool = False
    link_card: str = PAGE_CARD
    template: str = ""

    @property
    def template_name(self) -> str:
        return self.template or f"social/{self.name}.txt.j2"
