"""Contract harness for the Mastodon adapter, against the fake Mastodon server
(tests/fakes/mastodon_api.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.channels import Channel, load_channel_class
from tests.contract import BriefMaker, make_settings
from tests.fakes.mastodon_api import IDEMPOTENCY_TTL, FakeMastodon


class MastodonHarness:
    name = "mastodon"
    idempotent = True  # Idempotency-Key
    reconciles = True
    receipt_urls = True
    permanent_hint = "MASTODON_TOKEN"

    def __init__(self, root: Path, fake: FakeMastodon, token: str):
        self.fake = fake
        self.secrets = [token]
        self.settings = make_settings(root, {"masto": {
            "type": "mastodon", "instance": fake.url, "media_poll_interval": 0.01}})
        self.brief = BriefMaker(root / "briefs")

    def channel(self) -> Channel:
        return load_channel_class("mastodon")("masto", self.settings.config.channels["masto"],
                                              self.settings)

    def posts(self) -> list[dict[str, Any]]:
        return [{"id": s.id, "text": s.text} for s in self.fake.statuses]

    def fail_next(self, kind: str) -> float | None:
        if kind == "transient":
            self.fake.rate_limit_next(300)
            return 300.0
        self.fake.unauthorized_next()
        return None

    def lose_next_response(self) -> None:
        self.fake.lose_next("POST", "/api/v1/statuses")

    def pass_dedup_window(self) -> None:
        self.fake.clock.advance(IDEMPOTENCY_TTL + 1)


def open_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MastodonHarness]:
    token = secrets.token_urlsafe(32)
    request.getfixturevalue("monkeypatch").setenv("MASTODON_TOKEN", token)
    with FakeMastodon(token=token, media_polls=1) as fake:
        yield MastodonHarness(tmp_path, fake, token)
