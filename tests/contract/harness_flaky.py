"""Contract harness for the third-party test plugin `flaky` (tests/plugins/), loaded through its
entry point like any installed plugin. Its far end is a JSON-lines log file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.channels import Channel, load_channel_class
from bot.ledger import DeliveryKey
from tests.contract import BriefMaker, make_settings


class FlakyHarness:
    name = "flaky"
    secrets: list[str] = []
    idempotent = False
    reconciles = False  # the plugin keeps the base class's reconcile: CannotReconcile
    receipt_urls = True
    permanent_hint = "content not allowed"

    def __init__(self, root: Path):
        self.root = root
        self.options: dict[str, Any] = {"log": "sent.jsonl", "counter": "attempts.json"}
        self.settings = make_settings(root, {"flaky": {"type": "flaky", **self.options}})
        self.briefs: list[str] = []
        self._make_brief = BriefMaker(root / "briefs")

    def brief(self):
        brief = self._make_brief()
        self.briefs.append(brief.id)
        return brief

    def channel(self) -> Channel:
        channel = load_channel_class("flaky")("flaky", self.settings.config.channels["flaky"],
                                              self.settings)
        channel.options = self.options  # the plugin reads its options at send time
        return channel

    def posts(self) -> list[dict[str, Any]]:
        log = self.root / "sent.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        posts = []
        for line in lines:
            entry = json.loads(line)
            brief_id = DeliveryKey.parse(entry["key"]).campaign.removeprefix("brief:")
            posts.append({"id": f"flaky-{brief_id}", "text": entry["text"]})
        return posts

    def fail_next(self, kind: str) -> float | None:
        if kind == "permanent":
            self.options["permanent"] = list(self.briefs)
            return None
        (self.root / "attempts.json").unlink(missing_ok=True)  # the plugin counts per brief
        self.options.update(transient_failures=1, retry_after=90)
        return 90.0

    def lose_next_response(self) -> None:
        pytest.skip("the flaky plugin has no connection whose answer could be lost")


def open_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlakyHarness]:
    yield FlakyHarness(tmp_path)
