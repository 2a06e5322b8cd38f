"""The Bluesky channel against a real PDS on loopback (tests/pds.py).

Records are read back with `com.atproto.repo.getRecord`/`listRecords`, so every assertion is
about what the server stored and validated, not about what the adapter meant to send. A
fault-injecting proxy in front of the PDS counts logins and refuses requests on demand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
import regex
import requests
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot.briefs import Brief
from bot.channels import PermanentError, TransientError, load_channel_class
from bot.channels.bluesky import BlueskyChannel, record_key
from bot.config import ConfigError, Settings, parse_config
from bot.ledger import DeliveryKey
from bot.publish import publish_due
from tests.briefs_factory import publishable, write_brief
from tests.contract import make_settings
from tests.fakes.fault_proxy import FaultProxy, fault_proxy
from tests.harness_bluesky import JWT_SECRET, list_posts, new_account, shared_pds
from tests.pds import PdsServer, XrpcError, xrpc

POST = "app.bsky.feed.post"
TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
ENV = "BRIEFBOT_TEST_BSKY_APP_PASSWORD"


@pytest.fixture(scope="module")
def pds(request: pytest.FixtureRequest) -> PdsServer:
    return shared_pds(request)


@pytest.fixture
def proxy(pds: PdsServer) -> Iterator[FaultProxy]:
    with fault_proxy(pds.url) as running:
        yield running


@dataclass
class Account:
    """A fresh Bluesky account, its password in $ENV, and a project folder for the channel."""

    pds: PdsServer
    proxy: FaultProxy
    handle: str
    password: str
    root: Path

    @property
    def folder(self) -> Path:
        return self.root / "briefs"

    def channel(self, *, images: dict[str, Any] | None = None,
                **options: Any) -> BlueskyChannel:
        table = {"type": "bluesky", "service": self.proxy.url, "handle": self.handle,
                 "password_env": ENV, **options}
        settings = make_settings(self.root, {"bsky": table}, images)
        return BlueskyChannel("bsky", settings.config.channels["bsky"], settings)

    def brief(self, name: str, *, title: str = "Solar cells pass a new efficiency record",
              url: str | None = None, image: str | None = None,
              alt: str = "A chart of cell efficiency by year", lang: str | None = None) -> Brief:
        path = write_brief(self.folder, f"{name}.md", title=title,
                           url=url or f"https://example.org/news/{name}", image=image,
                           image_alt=alt if image else None, lang=lang,
                           body="## WHAT HAPPENED\nA lab measured a record efficiency. "
                                "It beats the old mark by two points.\n")
        return publishable(path)

    def record(self, uri: str) -> dict[str, Any]:
        repo, collection, rkey = uri.removeprefix("at://").split("/")
        return xrpc(self.pds.url, "com.atproto.repo.getRecord",
                    params={"repo": repo, "collection": collection, "rkey": rkey})["value"]

    def blob(self, did: str, cid: str) -> bytes:
        resp = requests.get(f"{self.pds.url}/xrpc/com.atproto.sync.getBlob",
                            params={"did": did, "cid": cid}, timeout=10)
        resp.raise_for_status()
        return resp.content


@pytest.fixture
def account(pds: PdsServer, proxy: FaultProxy, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Account:
    handle, password = new_account(pds)
    monkeypatch.setenv(ENV, password)
    (tmp_path / "briefs").mkdir()
    return Account(pds, proxy, handle, password, tmp_path)


@pytest.fixture
def http_404() -> Iterator[str]:
    """A local web server that answers 404 to everything: a hero image URL gone stale."""

    class Gone(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404, "Not Found")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gone)
    Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def key(brief: Brief) -> DeliveryKey:
    return DeliveryKey(f"brief:{brief.id}", "bsky")


def noise_png(path: Path, size: tuple[int, int]) -> Path:
    """Random pixels: a PNG far over Bluesky's 1,000,000-byte blob limit, hard to compress."""
    import random

    pixels = random.Random(7).randbytes(3 * size[0] * size[1])
    Image.frombytes("RGB", size, pixels).save(path, "PNG")
    return path


def link_facets(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(the text the facet covers, its link) for every link facet, by UTF-8 byte offsets."""
    data = record["text"].encode("utf-8")
    found = []
    for facet in record.get("facets", []):
        for feature in facet["features"]:
            if feature["$type"] == "app.bsky.richtext.facet#link":
                span = data[facet["index"]["byteStart"]:facet["index"]["byteEnd"]]
                found.append((span.decode("utf-8"), feature["uri"]))
    return found


def assert_link_facet(record: dict[str, Any], link: str) -> None:
    """One facet covers the link as displayed (maybe shortened) and points to the full URL."""
    facets = link_facets(record)
    assert [uri for _, uri in facets] == [link]
    shown = facets[0][0]
    bare = link.split("://", 1)[1]
    assert shown in record["text"]
    assert shown == link or bare.startswith(shown.rstrip("…").rstrip(".").split("://")[-1])


def expired(token: str) -> str:
    """The same access token, expired an hour ago and signed again with the PDS's secret."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    _, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    now = int(time.time())
    claims.update(iat=now - 3 * 3600, exp=now - 3600)
    signing = f"{b64(json.dumps({'typ': 'at+jwt', 'alg': 'HS256'}).encode())}." \
              f"{b64(json.dumps(claims).encode())}"
    signature = hmac.new(JWT_SECRET.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(signature)}"


# -- posting --------------------------------------------------------------------------------


def test_post_has_text_link_facet_and_image_with_alt(account: Account) -> None:
    noise_png(account.folder / "hero.png", (900, 700))
    link = "https://example.org/research/2026/11/solar-cells-pass-a-new-efficiency-record-in-lab"
    brief = account.brief("solar", url=link, image="hero.png")
    assert (account.root / "briefs" / "hero.png").stat().st_size > 1_000_000
    channel = account.channel(langs=["en"])

    message = channel.render(brief, key(brief))
    receipt = channel.send(message)

    record = account.record(receipt.remote_id)
    assert record["text"] == message.text
    assert_link_facet(record, message.link)
    raw = record["text"].encode("utf-8")
    tags = [(raw[f["index"]["byteStart"]:f["index"]["byteEnd"]].decode(), f["features"][0])
            for f in record["facets"]
            if f["features"][0]["$type"] == "app.bsky.richtext.facet#tag"]
    assert tags == [("#Research", {"$type": "app.bsky.richtext.facet#tag", "tag": "Research"})]
    assert record["langs"] == ["en"]
    created = datetime.fromisoformat(record["createdAt"])
    other = channel.send(channel.render(account.brief("hindi", lang="hi"),
                                        key(account.brief("hindi", lang="hi"))))
    assert account.record(other.remote_id)["langs"] == ["hi"]
    assert created.utcoffset() is not None
    assert receipt.sent_at is not None and abs((created - receipt.sent_at).total_seconds()) < 0.01

    embed = record["embed"]
    assert embed["$type"] == "app.bsky.embed.images"
    [image] = embed["images"]
    assert image["alt"] == "A chart of cell efficiency by year"
    blob = image["image"]
    assert blob["mimeType"] == "image/jpeg" and blob["size"] <= 1_000_000
    did = receipt.remote_id.removeprefix("at://").split("/")[0]
    stored = Image.open(io.BytesIO(account.blob(did, blob["ref"]["$link"])))
    assert stored.format == "JPEG"
    assert (image["aspectRatio"]["width"], image["aspectRatio"]["height"]) == stored.size

    rkey = receipt.remote_id.rsplit("/", 1)[1]
    assert TID.match(rkey)
    assert receipt.url == f"https://bsky.app/profile/{account.handle}/post/{rkey}"


def test_same_delivery_sent_again_stays_one_post(account: Account) -> None:
    brief = account.brief("once")
    message = account.channel().render(brief, key(brief))

    first = account.channel().send(message)
    again = account.channel().send(message)
    rerendered = account.channel()  # a later run renders anew: another createdAt
    later = rerendered.send(rerendered.render(brief, key(brief)))
    found = account.channel().reconcile(message)

    assert again.remote_id == later.remote_id == first.remote_id
    assert later.note and "already posted" in later.note
    assert found is not None and found.remote_id == first.remote_id and found.url == first.url
    posts = list_posts(account.pds, account.handle)
    assert [p["uri"] for p in posts] == [first.remote_id]
    stored = datetime.fromisoformat(posts[0]["value"]["createdAt"])
    assert first.sent_at and abs((stored - first.sent_at).total_seconds()) < 0.01  # not rewritten

    other = account.brief("never-sent")
    assert account.channel().reconcile(account.channel().render(other, key(other))) is None


def test_brief_without_image_gets_a_link_card(account: Account) -> None:
    brief = account.brief("card")
    assert brief.image is None
    channel = account.channel()
    message = channel.render(brief, key(brief))

    record = account.record(channel.send(message).remote_id)

    external = record["embed"]["external"]
    assert record["embed"]["$type"] == "app.bsky.embed.external"
    assert external["uri"] == message.link
    assert external["title"] == "Solar cells pass a new efficiency record"
    assert external["description"] == brief.summary and "record efficiency" in brief.summary
    assert "thumb" not in external


def test_card_mode_puts_the_hero_image_in_the_thumbnail(account: Account) -> None:
    Image.new("RGB", (120, 63), (200, 40, 40)).save(account.folder / "red.png")
    brief = account.brief("thumb", image="red.png")
    channel = account.channel(embed="card")

    record = account.record(channel.send(channel.render(brief, key(brief))).remote_id)

    external = record["embed"]["external"]
    assert external["thumb"]["mimeType"] in ("image/png", "image/jpeg")
    assert external["thumb"]["size"] > 0
    assert "images" not in record["embed"]


def test_hero_image_that_404s_posts_the_card_without_thumbnail(account: Account,
                                                               http_404: str) -> None:
    brief = account.brief("gone", image=f"{http_404}/hero.jpg")
    # The stale image's server is on loopback, which only an explicit allow-list may reach.
    channel = account.channel(images={"allow_hosts": [http_404.removeprefix("http://")]})
    message = channel.render(brief, key(brief))
    assert any("404" in note.text for note in message.notes)  # a preview shows it before sending

    receipt = channel.send(message)

    record = account.record(receipt.remote_id)
    assert record["embed"]["$type"] == "app.bsky.embed.external"
    assert record["embed"]["external"]["uri"] == message.link
    assert "thumb" not in record["embed"]["external"]
    assert receipt.note and "404" in receipt.note


def test_image_the_pds_refuses_does_not_block_the_post(account: Account) -> None:
    Image.new("RGB", (80, 60), (10, 10, 200)).save(account.folder / "blue.png")
    brief = account.brief("refused", image="blue.png")
    account.proxy.answer_next(
        413, b'{"error":"PayloadTooLarge","message":"request entity too large"}',
        headers={"Content-Type": "application/json"}, match="uploadBlob",
    )
    channel = account.channel()

    receipt = channel.send(channel.render(brief, key(brief)))

    record = account.record(receipt.remote_id)
    assert record["embed"]["$type"] == "app.bsky.embed.external"
    assert "thumb" not in record["embed"]["external"]
    assert receipt.note and "PayloadTooLarge" in receipt.note


def test_long_emoji_and_cjk_title_fits_the_grapheme_limit(account: Account) -> None:
    title = "研究者が新記録 👩‍🔬🧪🇯🇵 " * 40
    link = "https://example.org/news/日本/long?ref=briefbot"
    brief = account.brief("unicode", title=title.strip(), url=link)
    channel = account.channel()
    message = channel.render(brief, key(brief))

    record = account.record(channel.send(message).remote_id)  # the PDS counts graphemes

    graphemes = len(regex.findall(r"\X", record["text"]))
    assert 250 < graphemes <= 300
    assert record["text"] == message.text and "👩‍🔬" in record["text"]
    assert_link_facet(record, message.link)


def test_publish_run_posts_each_brief_once(account: Account) -> None:
    config = parse_config({
        "briefs": {"folders": ["briefs"]}, "state": {"dir": "state"},
        "publish": {"backfill": "all"},
        "channels": {"bsky": {"type": "bluesky", "service": account.proxy.url,
                              "handle": account.handle, "password_env": ENV}},
    })
    settings = Settings(config, account.root / "config.toml")
    account.brief("run-a")
    account.brief("run-b", title="Wind farm output doubles in a year")
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)

    first = publish_due(settings, now)
    second = publish_due(settings, now)

    assert [o.state for o in first.outcomes] == ["sent", "sent"], first.outcomes
    assert [o for o in second.outcomes if o.state != "skipped"] == []
    posts = list_posts(account.pds, account.handle)
    assert len(posts) == 2
    rkeys = {p["uri"].rsplit("/", 1)[1] for p in posts}
    assert {o.url.rsplit("/", 1)[1] for o in first.outcomes if o.url} == rkeys
    assert account.proxy.count("createSession") == 1


# -- the session ----------------------------------------------------------------------------


def test_session_is_saved_reused_and_refreshed(account: Account,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    proxy = account.proxy
    for name in ("first", "second"):
        brief = account.brief(name)
        channel = account.channel()  # a new instance each time, as after a restart
        channel.send(channel.render(brief, key(brief)))
    assert proxy.count("createSession") == 1

    session_file = account.root / "state" / "bluesky" / "bsky.json"
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    saved = json.loads(session_file.read_text())
    stale = expired(saved["accessJwt"])
    with pytest.raises(XrpcError) as refused:  # the real PDS agrees the token has expired
        xrpc(account.pds.url, "com.atproto.server.getSession", token=stale)
    assert refused.value.error == "ExpiredToken"
    session_file.write_text(json.dumps({**saved, "accessJwt": stale}))

    brief = account.brief("third")
    channel = account.channel()
    receipt = channel.send(channel.render(brief, key(brief)))

    assert account.record(receipt.remote_id)["text"]
    assert proxy.count("refreshSession") == 1
    assert proxy.count("createSession") == 1
    fresh = json.loads(session_file.read_text())
    assert fresh["accessJwt"] != stale and fresh["refreshJwt"] != saved["refreshJwt"]
    assert xrpc(account.pds.url, "com.atproto.server.getSession",
                token=fresh["accessJwt"])["handle"] == account.handle
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    for secret in (account.password, *proxy.tokens):
        assert secret not in caplog.text


def test_refused_refresh_logs_in_again(account: Account) -> None:
    brief = account.brief("before")
    channel = account.channel()
    channel.send(channel.render(brief, key(brief)))
    session_file = account.root / "state" / "bluesky" / "bsky.json"
    saved = json.loads(session_file.read_text())
    session_file.write_text(json.dumps({**saved, "accessJwt": expired(saved["accessJwt"]),
                                        "refreshJwt": "not-a-token"}))

    brief = account.brief("after")
    channel = account.channel()
    channel.send(channel.render(brief, key(brief)))

    assert account.proxy.count("refreshSession") == 1
    assert account.proxy.count("createSession") == 2
    assert len(list_posts(account.pds, account.handle)) == 2


def test_wrong_password_is_permanent_and_names_the_variable(
        account: Account, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-password-4242"
    monkeypatch.setenv(ENV, wrong)
    brief = account.brief("locked")
    channel = account.channel()

    with pytest.raises(PermanentError) as caught:
        channel.send(channel.render(brief, key(brief)))

    assert ENV in str(caught.value) and account.handle in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in caplog.text
    assert not (account.root / "state" / "bluesky" / "bsky.json").exists()
    assert list_posts(account.pds, account.handle) == []


def test_missing_password_variable_is_permanent(account: Account,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    brief = account.brief("nopw")
    channel = account.channel()
    with pytest.raises(PermanentError, match=f"{ENV} is not set"):
        channel.send(channel.render(brief, key(brief)))
    assert account.proxy.count("createSession") == 0


# -- errors ---------------------------------------------------------------------------------


def test_rate_limit_is_transient_with_the_reset_time(account: Account) -> None:
    reset = int(time.time()) + 120
    account.proxy.answer_next(
        429, b'{"error":"RateLimitExceeded","message":"Rate Limit Exceeded"}',
        headers={"Content-Type": "application/json", "ratelimit-reset": str(reset),
                 "ratelimit-remaining": "0"},
        match="createSession",
    )
    brief = account.brief("limited")
    channel = account.channel()
    message = channel.render(brief, key(brief))

    with pytest.raises(TransientError) as caught:
        channel.send(message)

    assert caught.value.retry_after is not None and 60 < caught.value.retry_after <= 120
    assert list_posts(account.pds, account.handle) == []
    assert channel.send(message).remote_id  # the next attempt logs in and posts


def test_server_error_and_unreachable_service_are_transient(account: Account) -> None:
    account.proxy.answer_next(503, b"Service Unavailable", match="uploadBlob")
    Image.new("RGB", (40, 30), (0, 90, 0)).save(account.folder / "g.png")
    brief = account.brief("outage", image="g.png")
    channel = account.channel()
    with pytest.raises(TransientError, match="503"):
        channel.send(channel.render(brief, key(brief)))
    assert list_posts(account.pds, account.handle) == []

    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there any more
    offline = account.channel(service=f"http://127.0.0.1:{port}")
    with pytest.raises(TransientError, match="could not reach"):
        offline.send(offline.render(brief, key(brief)))


def test_revoked_session_is_permanent_and_forgotten(account: Account) -> None:
    brief = account.brief("revoked")
    channel = account.channel()
    message = channel.render(brief, key(brief))
    channel.reconcile(message)  # logs in and saves the session
    session_file = account.root / "state" / "bluesky" / "bsky.json"
    assert session_file.exists()
    account.proxy.answer_next(
        401, b'{"error":"AuthenticationRequired","message":"Token has been revoked"}',
        headers={"Content-Type": "application/json"}, match="putRecord",
    )

    with pytest.raises(PermanentError) as caught:
        channel.send(message)

    assert ENV in str(caught.value)
    assert not session_file.exists()  # the next run logs in afresh
    assert account.channel().send(message).remote_id
    assert account.proxy.count("createSession") == 2


def test_record_the_lexicon_refuses_is_permanent_with_the_server_message(
        account: Account) -> None:
    brief = account.brief("badlang")
    channel = account.channel(langs=["not a language!"])
    with pytest.raises(PermanentError, match=r"InvalidRequest.*Invalid language"):
        channel.send(channel.render(brief, key(brief)))
    assert list_posts(account.pds, account.handle) == []


# -- configuration and record keys ----------------------------------------------------------


def test_registered_under_its_type(tmp_path: Path) -> None:
    assert load_channel_class("bluesky") is BlueskyChannel


@pytest.mark.parametrize(("options", "field"), [
    ({}, "channels.bsky.handle"),
    ({"handle": "a.bsky.social", "embed": "video"}, "channels.bsky.embed"),
])
def test_configuration_errors_name_the_field(tmp_path: Path, options: dict[str, str],
                                             field: str) -> None:
    settings = make_settings(tmp_path, {"bsky": {"type": "bluesky", **options}})
    with pytest.raises(ConfigError, match=field):
        BlueskyChannel("bsky", settings.config.channels["bsky"], settings)


@given(st.text(min_size=1, max_size=200))
def test_record_key_is_a_valid_tid_derived_from_the_delivery_key(campaign: str) -> None:
    delivery = DeliveryKey(campaign, "bsky")
    assert TID.match(record_key(delivery))
    assert record_key(delivery) == record_key(DeliveryKey(campaign, "bsky"))
    assert record_key(delivery) != record_key(DeliveryKey(campaign, "bsky2"))
