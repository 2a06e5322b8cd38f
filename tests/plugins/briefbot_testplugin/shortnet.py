"""A whole new network in one file: its declaration (`bot.network.Network`) and its adapter.

Registered by one entry point (`shortnet`, in this plugin's `entry_points.txt`); nothing in
briefbot names it. Posts are at most 60 graphemes, links charged 10, images 200,000 bytes and
at most 400 px a side, JPEG only; the post uses the generic template.
"""

from __future__ import annotations

import json

from bot.channels import Channel, Message, Receipt
from bot.network import ImageLimits, Network
from bot.render import fit
from bot.render.counting import grapheme_length, url_spans
from bot.render.media import with_hero_image
from bot.render.post import render_post

LINK_CHARGE = 10


def short_length(text: str) -> int:
    """Graphemes, every link charged a flat 10."""
    total, last = 0, 0
    for start, end in url_spans(text):
        total += grapheme_length(text[last:start]) + LINK_CHARGE
        last = end
    return total + grapheme_length(text[last:])


NETWORK = Network(
    "shortnet", "Shortnet", "letters",
    rules=lambda options: fit.NetworkRules("shortnet", 60, short_length,
                                           url_counts_full=False),
    images=ImageLimits(max_bytes=200_000, max_side=400, formats=("image/jpeg",)),
    template="social/generic.txt.j2",
)


class ShortChannel(Channel):
    type = "shortnet"
    network = NETWORK

    def render(self, brief, key) -> Message:
        message = render_post(brief, key, network=NETWORK, settings=self.settings,
                              options=self.options)
        return with_hero_image(message, self.settings, brief, NETWORK.images)

    def send(self, message: Message) -> Receipt:
        path = self.settings.resolve(self.options.get("log", "shortnet-sent.jsonl"))
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"key": str(message.key), "text": message.text}) + "\n")
        return Receipt(remote_id=f"short-{message.idempotency_key[:12]}")
