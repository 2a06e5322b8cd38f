"""Contract harness for the webhook adapter (generic shape, secret URL and signing secret),
against the fake receiver (tests/fakes/webhook_api.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.channels import Channel, load_channel_class
from tests.contract import BriefMaker, make_settings
from tests.fakes.webhook_api import FakeWebhook

URL_ENV = "BRIEFBOT_TEST_WEBHOOK_URL"
SECRET_ENV = "BRIEFBOT_TEST_WEBHOOK_SECRET"


class WebhookHarness:
    name = "webhook"
    idempotent = False  # the Idempotency-Key header is there for receivers that dedupe
    reconciles = False  # a webhook cannot be asked what it received
    receipt_urls = False
    permanent_hint = URL_ENV

    def __init__(self, root: Path, fake: FakeWebhook, secrets_: list[str]):
        self.fake = fake
        self.secrets = secrets_
        self.settings = make_settings(root, {"hook": {
            "type": "webhook", "url_env": URL_ENV, "secret_env": SECRET_ENV}})
        self.brief = BriefMaker(root / "briefs")

    def channel(self) -> Channel:
        return load_channel_class("webhook")("hook", self.settings.config.channels["hook"],
                                             self.settings)

    def posts(self) -> list[dict[str, Any]]:
        return [{"id": d.idempotency_key, "text": d.payload["text"],
                 "links": [d.payload["link"]]} for d in self.fake.deliveries]

    def fail_next(self, kind: str) -> float | None:
        if kind == "transient":
            self.fake.fail_next(429, headers={"Retry-After": "45"}, body={"error": "slow down"})
            return 45.0
        self.fake.fail_next(404, body="no_service")
        return None

    def lose_next_response(self) -> None:
        self.fake.lose_next("POST", "/hook/.+")


def open_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebhookHarness]:
    monkeypatch = request.getfixturevalue("monkeypatch")
    token, signing = secrets.token_urlsafe(24), secrets.token_hex(20)
    with FakeWebhook() as fake:
        monkeypatch.setenv(URL_ENV, f"{fake.url}/hook/{token}")
        monkeypatch.setenv(SECRET_ENV, signing)
        yield WebhookHarness(tmp_path, fake, [token, signing])
