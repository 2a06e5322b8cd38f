"""Contract harness for the outbox channel: its far end is a folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.channels import Channel, load_channel_class
from tests.contract import BriefMaker, make_settings


class OutboxHarness:
    name = "outbox"
    secrets: list[str] = []
    idempotent = False  # every send writes a file; reconcile finds it by idempotency key
    reconciles = True
    receipt_urls = True
    permanent_hint = ""

    def __init__(self, root: Path):
        self.settings = make_settings(root, {"out": {"type": "outbox", "folder": "outbox"}})
        self.folder = root / "outbox" / "out"
        self.brief = BriefMaker(root / "briefs")

    def channel(self) -> Channel:
        config = self.settings.config.channels["out"]
        return load_channel_class("outbox")("out", config, self.settings)

    def posts(self) -> list[dict[str, Any]]:
        files = sorted(self.folder.glob("*.json"), key=lambda f: f.stat().st_mtime_ns)
        return [{"id": f.name, "text": json.loads(f.read_text())["text"]} for f in files]

    def fail_next(self, kind: str) -> float | None:
        pytest.skip("a local folder cannot be told to fail on demand")

    def lose_next_response(self) -> None:
        pytest.skip("writing a file has no answer to lose")


def open_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OutboxHarness]:
    yield OutboxHarness(tmp_path)
