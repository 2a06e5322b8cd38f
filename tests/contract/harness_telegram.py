"""Contract harness for the Telegram adapter, against the fake Bot API
(tests/fakes/telegram_api.py, built from tests/data/telegram-bot-api.md)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.channels import Channel, load_channel_class
from tests.contract import BriefMaker, make_settings
from tests.fakes.telegram_api import FakeTelegram

TOKEN_ENV = "BRIEFBOT_TEST_TELEGRAM_TOKEN"


class TelegramHarness:
    name = "telegram"
    idempotent = False  # the Bot API has no idempotency key: a second call is a second post
    reconciles = False  # nor can a bot list what it posted
    receipt_urls = True  # a public channel's post has a t.me link
    permanent_hint = TOKEN_ENV

    def __init__(self, root: Path, fake: FakeTelegram, token: str):
        self.fake = fake
        self.secrets = [token]
        self.settings = make_settings(root, {"tg": {
            "type": "telegram", "chat_id": f"@{fake.username}", "token_env": TOKEN_ENV,
            "api_base": fake.url}})
        self.brief = BriefMaker(root / "briefs")

    def channel(self) -> Channel:
        return load_channel_class("telegram")("tg", self.settings.config.channels["tg"],
                                              self.settings)

    def posts(self) -> list[dict[str, Any]]:
        return [{"id": f"-1001234567890:{p.message_id}", "text": p.text} for p in self.fake.posts]

    def fail_next(self, kind: str) -> float | None:
        if kind == "transient":
            self.fake.fail_next(429, body={
                "ok": False, "error_code": 429, "description": "Too Many Requests: retry after 37",
                "parameters": {"retry_after": 37}})
            return 37.0
        self.fake.fail_next(401, body={"ok": False, "error_code": 401,
                                       "description": "Unauthorized"})
        return None

    def lose_next_response(self) -> None:
        self.fake.lose_next("POST", r"/bot[^/]+/send(Photo|Message)")


def open_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TelegramHarness]:
    monkeypatch = request.getfixturevalue("monkeypatch")
    token = f"{secrets.randbelow(10**9)}:{secrets.token_urlsafe(26)}"
    monkeypatch.setenv(TOKEN_ENV, token)
    with FakeTelegram(token) as fake:
        yield TelegramHarness(tmp_path, fake, token)
