"""Each network is declared as data by its channel class (`bot.network`), and rendering, image
fitting and the preview read that declaration: a new network is one file and one entry point.
The proof is a network briefbot does not know, `shortnet`, in the test plugin
(tests/plugins/briefbot_testplugin/shortnet.py)."""

from __future__ import annotations

import io
import subprocess
import sys

from PIL import Image

from bot.channels import declared_network, load_channel_class, network_of
from bot.config import load_settings
from bot.preview import build_gallery
from bot.terminal import parse_now
from tests.briefs_factory import write_brief
from tests.conftest import ROOT
from tests.contract import key_for, make_brief, make_settings

NOW = "2026-11-28T12:00:00Z"


def test_a_network_briefbot_does_not_know_renders_by_its_own_declaration(tmp_path):
    from briefbot_testplugin.shortnet import NETWORK, short_length

    folder = tmp_path / "briefs"
    folder.mkdir()
    Image.new("RGBA", (1200, 900), (200, 40, 40, 128)).save(folder / "hero.png")
    brief = make_brief(folder, 1, image="hero.png")
    settings = make_settings(tmp_path, {"short": {"type": "shortnet"}})
    channel = load_channel_class("shortnet")("short", settings.config.channels["short"], settings)
    assert network_of(channel) is NETWORK is declared_network("shortnet")

    message = channel.render(brief, key_for(brief, channel))
    assert message.limit == 60 and message.length == short_length(message.text) <= 60
    assert brief.source_url and brief.source_url in message.text.split()
    image = message.fitted_image
    # Its image limits: 400 px a side, and JPEG only, so the transparent PNG is flattened.
    assert max(image.width, image.height) <= 400 and image.mime == "image/jpeg"
    assert len(image.data) <= 200_000
    with Image.open(io.BytesIO(image.data)) as im:
        assert im.format == "JPEG"


def test_the_preview_shows_a_new_network_by_its_declaration(project):
    write_brief(project.briefs, "one.md", title="A brief for a network nobody configured before")
    project.write_config(channels='[channels.short]\ntype = "shortnet"\n')
    gallery = build_gallery(load_settings(project.config), now=parse_now(NOW))
    card, = [c for entry in gallery.entries for c in entry.cards]
    assert (card.kind, card.network, card.network_name) == ("post", "shortnet", "Shortnet")
    assert card.unit == "letters" and card.limit == 60 and card.length <= 60
    assert "Shortnet" in gallery.html() and "letters" in gallery.html()


def test_built_in_social_channels_declare_their_networks():
    for name, title, unit in [("x", "X", "weighted characters"),
                              ("mastodon", "Mastodon", "characters"),
                              ("bluesky", "Bluesky", "graphemes"),
                              ("telegram", "Telegram", "characters (UTF-16)")]:
        network = load_channel_class(name).network
        assert network is not None and (network.name, network.title, network.unit) == (
            name, title, unit)
        assert network.images is not None and network.images.max_bytes > 0
        assert declared_network(name) is network
    assert declared_network("generic").images is None
    assert load_channel_class("smtp").network is None  # email posts to no network


def test_reading_a_declaration_loads_no_network_sdk():
    code = ("import sys\nfrom bot.channels import declared_network\n"
            "for name in ('x', 'mastodon', 'bluesky', 'telegram'):\n"
            "    declared_network(name)\n"
            "print(sorted(m for m in ('tweepy', 'atproto', 'requests_oauthlib') "
            "if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
