"""Contract harness for the Bluesky channel: its far end is a real PDS (tests/servers/pds.py),
reached through a fault-injecting proxy (tests/fakes/fault_proxy.py) that can refuse the next post
or lose its answer. Also the PDS and account helpers `tests/posts/test_bluesky.py` uses.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from bot.channels import Channel, load_channel_class
from tests.contract import BriefMaker, make_settings
from tests.fakes.fault_proxy import FaultProxy, fault_proxy
from tests.servers.pds import (
    PDS_SKIP_REASON,
    PdsServer,
    create_account,
    pds_available,
    start_pds,
    xrpc,
)

POST = "app.bsky.feed.post"
PUT_RECORD = "com.atproto.repo.putRecord"
# Handed to the PDS at start, so a test can sign a really expired access token.
JWT_SECRET = secrets.token_hex(16)

_started: dict[str, PdsServer] = {}
_accounts = itertools.count(1)


def shared_pds(request: pytest.FixtureRequest) -> PdsServer:
    """One PDS for the whole test session, started on first use and stopped at its end.

    Skips when the PDS is not installed, but fails in CI (the `CI` variable is set), where a
    missing PDS means the Bluesky channel would go untested.
    """
    if not pds_available():
        if os.environ.get("CI"):
            pytest.fail(f"the Bluesky PDS is required in CI: {PDS_SKIP_REASON}")
        pytest.skip(PDS_SKIP_REASON)
    server = _started.get("pds")
    if server is None or server.process.poll() is not None:
        stack = ExitStack()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PDS_JWT_SECRET", JWT_SECRET)
            server = stack.enter_context(start_pds())
        _started["pds"] = server

        def stop() -> None:
            _started.pop("pds", None)
            stack.close()

        request.config.add_cleanup(stop)
    return server


def new_account(pds: PdsServer) -> tuple[str, str]:
    """A fresh account (handle, password): every test gets an empty repository."""
    handle = f"bb{next(_accounts)}x{secrets.token_hex(3)}.test"
    password = f"app-{secrets.token_urlsafe(12)}"
    create_account(pds.url, handle, password)
    return handle, password


def list_posts(pds: PdsServer, handle: str) -> list[dict[str, Any]]:
    """Every post record of `handle`, oldest first, read straight from the PDS."""
    records: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params = {"repo": handle, "collection": POST, "limit": "100"}
        if cursor:
            params["cursor"] = cursor
        page = xrpc(pds.url, "com.atproto.repo.listRecords", params=params)
        records += page["records"]
        cursor = page.get("cursor")
        if not cursor or not page["records"]:
            break
    return sorted(records, key=lambda r: (r["value"]["createdAt"], r["uri"]))


def links_of(record: dict[str, Any]) -> list[str]:
    """URLs a post carries outside its text: link facets and a link card."""
    value = record["value"]
    links = [feature["uri"] for facet in value.get("facets", [])
             for feature in facet["features"] if "uri" in feature]
    external = (value.get("embed") or {}).get("external")
    if external:
        links.append(external["uri"])
    return links


class BlueskyHarness:
    name = "bluesky"
    idempotent = True  # putRecord under a record key derived from the delivery key
    reconciles = True  # getRecord under that key
    receipt_urls = True

    def __init__(self, pds: PdsServer, proxy: FaultProxy, root: Path, password_env: str):
        self.pds = pds
        self.proxy = proxy
        self.handle, self.password = new_account(pds)
        self.permanent_hint = password_env
        self.settings = make_settings(root, {"bsky": {
            "type": "bluesky", "service": proxy.url, "handle": self.handle,
            "password_env": password_env,
        }})
        self.brief = BriefMaker(root / "briefs")

    @property
    def secrets(self) -> list[str]:
        """The app password, and every token that went over the wire."""
        return [self.password, *sorted(self.proxy.tokens)]

    def channel(self) -> Channel:
        config = self.settings.config.channels["bsky"]
        return load_channel_class("bluesky")("bsky", config, self.settings)

    def posts(self) -> list[dict[str, Any]]:
        return [{"id": r["uri"], "text": r["value"]["text"], "links": links_of(r)}
                for r in list_posts(self.pds, self.handle)]

    def fail_next(self, kind: str) -> float | None:
        if kind == "transient":
            reset = int(time.time()) + 60
            self.proxy.answer_next(
                429, json.dumps({"error": "RateLimitExceeded",
                                 "message": "Rate Limit Exceeded"}).encode(),
                headers={"Content-Type": "application/json", "ratelimit-limit": "5000",
                         "ratelimit-remaining": "0", "ratelimit-reset": str(reset),
                         "ratelimit-policy": "5000;w=3600"},
                match=PUT_RECORD,
            )
            return reset - time.time()
        if kind == "permanent":
            self.proxy.answer_next(
                401, json.dumps({"error": "AuthenticationRequired",
                                 "message": "Token has been revoked"}).encode(),
                headers={"Content-Type": "application/json"}, match=PUT_RECORD,
            )
            return None
        raise ValueError(f"unknown fault kind {kind!r}")

    def lose_next_response(self) -> None:
        self.proxy.lose_next(match=PUT_RECORD)


def open_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlueskyHarness]:
    pds = shared_pds(request)
    env = "BRIEFBOT_TEST_BLUESKY_PASSWORD"
    with fault_proxy(pds.url) as proxy, pytest.MonkeyPatch.context() as patch:
        harness = BlueskyHarness(pds, proxy, tmp_path, env)
        patch.setenv(env, harness.password)
        yield harness
