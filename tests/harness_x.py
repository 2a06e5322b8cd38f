"""Contract harness for the X adapter, against the fake X API (tests/fakes/x_api.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.channels import Channel, load_channel_class
from tests.contract import BriefMaker, make_settings
from tests.fakes.x_api import FakeX

ENV = {"X_API_KEY": "consumer_key", "X_API_SECRET": "consumer_secret",
       "X_ACCESS_TOKEN": "access_token", "X_ACCESS_TOKEN_SECRET": "access_secret"}


def credentials() -> dict[str, str]:
    """Fresh random credentials, keyed as FakeX's arguments."""
    return {name: secrets.token_hex(16) for name in ENV.values()}


class XHarness:
    name = "x"
    idempotent = True  # X refuses the same text again; the adapter then finds the first post
    reconciles = True
    receipt_urls = True
    permanent_hint = "X_API_KEY"

    def __init__(self, root: Path, fake: FakeX, creds: dict[str, str]):
        self.fake = fake
        self.secrets = list(creds.values())
        self.settings = make_settings(root, {"x": {"type": "x", "api_base": fake.url}})
        self.brief = BriefMaker(root / "briefs")

    def channel(self) -> Channel:
        return load_channel_class("x")("x", self.settings.config.channels["x"], self.settings)

    def posts(self) -> list[dict[str, Any]]:
        return [{"id": t.id, "text": t.text} for t in self.fake.tweets]

    def fail_next(self, kind: str) -> float | None:
        if kind == "transient":
            self.fake.rate_limit_next(120)
            return 120.0
        self.fake.unauthorized_next()
        return None

    def lose_next_response(self) -> None:
        self.fake.lose_next("POST", "/2/tweets")

    def pass_dedup_window(self) -> None:
        self.fake.clock.advance(self.fake.duplicate_window + 1)


def open_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[XHarness]:
    monkeypatch = request.getfixturevalue("monkeypatch")
    creds = credentials()
    for env, arg in ENV.items():
        monkeypatch.setenv(env, creds[arg])
    with FakeX(**creds) as fake:
        yield XHarness(tmp_path, fake, creds)
