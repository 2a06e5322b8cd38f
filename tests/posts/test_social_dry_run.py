"""The dry-run guard: `briefbot run --once --dry-run` with X, Mastodon and webhook channels
shows each network's final text and counted length, and writes nothing anywhere.

Dry runs may read a Mastodon instance's public limits (`GET /api/v2/instance`), because the
text must be fitted to them; they never log in and never POST. They need no credentials.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from zoneinfo import ZoneInfo

from PIL import Image
from twitter_text import parse_tweet

from bot.briefs import BriefReader
from tests.conftest import ROOT
from tests.contract.harness_x import credentials
from tests.fakes.mastodon_api import FakeMastodon
from tests.fakes.webhook_api import FakeWebhook
from tests.fakes.x_api import FakeX

NOW = "2026-11-28T12:00:00Z"


def seed_image_cache(project) -> None:
    """Hero images given as URLs are served from the image cache: the test stays on loopback."""
    cache = project.root / "state" / "images"
    cache.mkdir(parents=True)
    for brief in BriefReader(tz=ZoneInfo("UTC")).scan([project.briefs]).briefs:
        if brief.image and brief.image.startswith("http"):
            name = hashlib.sha256(brief.image.encode()).hexdigest()
            Image.new("RGB", (120, 80), (200, 60, 30)).save(cache / name, "PNG")


def test_dry_run_shows_final_texts_and_sends_nothing(project):
    shutil.rmtree(project.briefs)
    shutil.copytree(ROOT / "seeds", project.briefs)
    seed_image_cache(project)
    with (FakeX(**credentials()) as x, FakeMastodon(token="unused-token", max_characters=400)
          as masto, FakeWebhook() as hook):
        project.write_config(channels=(
            f'[channels.x]\ntype = "x"\napi_base = "{x.url}"\n'
            f'[channels.masto]\ntype = "mastodon"\ninstance = "{masto.url}"\n'
            f'[channels.hook]\ntype = "webhook"\nurl_env = "UNSET_HOOK_URL"\n'))
        # Any attempt to leave loopback would fail fast rather than reach the internet.
        env = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
               "NO_PROXY": "127.0.0.1"}
        report = json.loads(project.cli("run", "--once", "--dry-run", "--json", "--now", NOW,
                                        env=env, check=True).stdout)
        shown = project.cli("run", "--once", "--dry-run", "--now", NOW, env=env,
                            check=True).stdout

        assert x.requests == [] and hook.requests == []
        assert masto.writes() == []
        assert {r.path for r in masto.requests} == {"/api/v2/instance"}

    outcomes = report["outcomes"]
    assert {o["state"] for o in outcomes} == {"would-send"}
    by_channel: dict[str, list[dict]] = {}
    for outcome in outcomes:
        by_channel.setdefault(outcome["channel"], []).append(outcome)
    assert sorted(by_channel) == ["hook", "masto", "x"]
    assert len({len(items) for items in by_channel.values()}) == 1  # every brief, every channel
    limits = {"x": 280, "masto": 400, "hook": 500}
    for name, items in by_channel.items():
        for item in items:
            assert item["limit"] == limits[name]
            assert 0 < item["length"] <= item["limit"]
            assert f"── {item['brief']} → {name} ({item['length']}/{item['limit']})" in shown
            assert item["text"] in shown
            assert not any("could not be fetched" in note for note in item["notes"])
    for item in by_channel["x"]:
        assert parse_tweet(item["text"]).weightedLength == item["length"]
    for item in by_channel["masto"]:
        assert FakeMastodon(token="-").length(item["text"]) == item["length"]
