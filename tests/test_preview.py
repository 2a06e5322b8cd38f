"""`briefbot preview` and `/preview/` on `briefbot serve`, looked at in headless Chromium.

The gallery is built by the real CLI in a temporary project and opened from disk (or from the
server) in Chromium, driven over the DevTools protocol (tests/chromium.py); the assertions read
the DOM. Hero-image fetches go through a proxy on 127.0.0.1 that records and refuses every
request, as a machine offline would fail them, so a test can prove what the preview asked of the
network: the hero images, once each, and nothing else.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import regex
import requests
from PIL import Image

from bot.briefs import BriefReader
from bot.cli import parse_now
from bot.config import load_settings
from bot.ledger import DeliveryKey, Ledger
from bot.preview import GMAIL_CLIP_BYTES, human_bytes
from tests.briefs_factory import write_brief
from tests.chromium import Page, chromium
from tests.conftest import ROOT, SAMPLE
from tests.fakes.mastodon_api import FakeMastodon

NOW = "2026-11-30T09:00:00Z"  # a Monday: the digest covers 2026-W48, the seeds' week
LIMITS = {"x": 280, "mastodon": 500, "bluesky": 300}
STAND_INS = """
[channels.x]
type = "outbox"
network = "x"
digest = false
[channels.masto]
type = "outbox"
network = "mastodon"
digest = false
[channels.bsky]
type = "outbox"
network = "bluesky"
digest = false
[channels.mail]
type = "outbox"
posts = false
"""
POSTING = {"x": "x", "masto": "mastodon", "bsky": "bluesky"}

# What the DOM says, as plain data.
BRIEFS_JS = """[...document.querySelectorAll('article.brief')].map(a => ({
  id: a.dataset.brief, state: a.dataset.state,
  title: a.querySelector('h2').textContent,
  problems: [...a.querySelectorAll(':scope > header .problem')].map(p => p.textContent),
  cards: [...a.querySelectorAll('.card')].map(c => ({
    channel: c.dataset.channel, kind: c.dataset.kind, network: c.dataset.network,
    state: c.dataset.state,
    text: c.querySelector('.post-text') ? c.querySelector('.post-text').innerText : null,
    length: c.querySelector('.count') ? Number(c.querySelector('.count').dataset.length) : null,
    limit: c.querySelector('.count') ? Number(c.querySelector('.count').dataset.limit) : null,
    shown: c.querySelector('.count') ? c.querySelector('.count').innerText : null,
    problems: [...c.querySelectorAll('.problem')].map(p => p.textContent),
    images: [...c.querySelectorAll('img')].map(i => ({src: i.getAttribute('src'), alt: i.alt,
      loaded: i.complete && i.naturalWidth > 0, width: i.naturalWidth})),
    caption: c.querySelector('.image-size') ? c.querySelector('.image-size').textContent : null,
    bytes: c.querySelector('.image-size') ? Number(c.querySelector('.image-size').dataset.bytes)
      : null,
    missing: c.querySelector('.image-missing') ? c.querySelector('.image-missing').textContent
      : null,
    links: [...c.querySelectorAll('.post-text a')].map(l => ({text: l.textContent,
      href: l.href})),
  })),
}))"""
EMAILS_JS = """[...document.querySelectorAll('.card[data-kind=email]')].map(c => ({
  channel: c.dataset.channel,
  headers: Object.fromEntries([...c.querySelectorAll('.headers dt')].map(dt =>
    [dt.textContent, dt.nextElementSibling.textContent])),
  htmlBytes: Number(c.querySelector('.size').dataset.htmlBytes),
  clipBytes: Number(c.querySelector('.size').dataset.clipBytes),
  problems: [...c.querySelectorAll('.problem')].map(p => p.textContent),
  plain: c.querySelector('.plain-text pre').textContent,
  frames: [...c.querySelectorAll('iframe')].map(f => ({width: f.getBoundingClientRect().width,
    text: f.contentDocument.body.innerText,
    images: [...f.contentDocument.images].map(i => ({src: i.getAttribute('src'),
      loaded: i.complete && i.naturalWidth > 0}))})),
}))"""
SOURCES_JS = """[...document.querySelectorAll('[src]')].map(e => e.getAttribute('src'))
  .concat([...document.querySelectorAll('link[href]')].map(e => e.getAttribute('href')))"""


# -- loopback servers ---------------------------------------------------------------------------


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def __enter__(self) -> _Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def record(self, method: str, target: str) -> None:
        with self.lock:
            self.calls.append((method, target))


class _Refuse(BaseHTTPRequestHandler):
    """A proxy that forwards nothing: every request is recorded, then refused."""

    def _refuse(self) -> None:
        self.server.record(self.command, self.path)
        self.send_response(403, "offline")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    do_CONNECT = do_GET = do_POST = do_PUT = do_HEAD = _refuse  # noqa: N815 - http.server names

    def log_message(self, *args: object) -> None:
        pass


class _Images(BaseHTTPRequestHandler):
    """Serves `server.files` by path; records every request."""

    def do_GET(self) -> None:  # noqa: N802
        self.server.record("GET", self.path)
        data = self.server.files.get(self.path)
        self.send_response(200 if data else 404)
        self.send_header("Content-Type", "image/png" if data else "text/plain")
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")

    def do_POST(self) -> None:  # noqa: N802
        self.server.record("POST", self.path)
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def proxy() -> Iterator[_Recorder]:
    with _Recorder(_Refuse) as server:
        yield server


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    # Its own refusing proxy: the browser's background chatter must not mix with the CLI's.
    with _Recorder(_Refuse) as own, chromium(tmp_path_factory.mktemp("chromium") / "profile",
                                            proxy=own.url) as page:
        yield page


def offline(proxy: _Recorder) -> dict[str, str]:
    """Environment for the CLI: every outside request goes to the refusing proxy."""
    return {"HTTPS_PROXY": proxy.url, "HTTP_PROXY": proxy.url, "https_proxy": proxy.url,
            "http_proxy": proxy.url, "NO_PROXY": "", "no_proxy": ""}


def preview(project, out: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = project.cli("preview", "--out", str(out), "--now", NOW, *args, env=env, check=True)
    assert str(out / "index.html") in result.stdout
    return result.stdout


def look(page: Page, url: str, shots: Path | None = None) -> dict:
    """Open `url` at 1280 and at 375 px: the DOM (read at 1280), widths, screenshots."""
    page.events.clear()
    page.open(url, width=1280)
    found = {"briefs": page.evaluate(BRIEFS_JS), "emails": page.evaluate(EMAILS_JS),
             "sources": page.evaluate(SOURCES_JS), "requests": page.requests(),
             "scripts": page.evaluate("document.scripts.length"),
             "wide": page.evaluate("document.documentElement.scrollWidth"),
             "index": page.evaluate("[...document.querySelectorAll('.index-item')]"
                                    ".map(li => [li.dataset.brief, li.dataset.state])")}
    if shots:
        page.screenshot(shots / "gallery-1280.png")
    page.resize(375)
    found["narrow"] = page.evaluate("document.documentElement.scrollWidth")
    found["narrow_overflowing"] = page.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right"
        " > 376 && !e.closest('.frame-wrap')).map(e => e.tagName + '.' + e.className)"
        ".slice(0, 5)")
    if shots:
        page.screenshot(shots / "gallery-375.png")
    return found


def seeds_project(project) -> None:
    shutil.rmtree(project.briefs)
    shutil.copytree(ROOT / "seeds", project.briefs)
    project.write_config(channels=STAND_INS)


def _resolved_here(host: str | None, port: int) -> frozenset[str]:
    """The `address:port` tunnel targets `host` may become (none when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return frozenset()
    return frozenset(f"{info[4][0]}:{port}" for info in infos)


def graphemes(text: str) -> int:
    return len(regex.findall(r"\X", text))


# -- the repository's seeds ---------------------------------------------------------------------


def test_seeds_gallery_shows_every_due_brief_on_every_channel_and_the_draft(
    project, proxy, browser, tmp_path
):
    from twitter_text import parse_tweet

    seeds_project(project)
    proxy.calls.clear()
    out = tmp_path / "gallery"
    summary = preview(project, out, "--include-drafts", env=offline(proxy))

    reader = BriefReader(tz=ZoneInfo("UTC"))
    briefs = reader.scan([project.briefs]).briefs
    now = parse_now(NOW)
    due = {b.id for b in briefs if b.is_publishable(["published"]) and b.published_at <= now}
    assert len(due) == 4 and f"{len(due)} due" in summary

    # The network saw the hero images, each at most once, and nothing else (no POST anywhere).
    # A hero image's host is resolved and checked here first, and the proxy is asked for that
    # address (never the name): offline, where the names do not resolve, it sees nothing.
    remote = [b.image for b in briefs if b.image and b.image.startswith("http")]
    expected = Counter(_resolved_here(urlsplit(url).hostname, 443) for url in remote)
    tunnels = [target for method, target in proxy.calls if method == "CONNECT"]
    assert all(method == "CONNECT" for method, _ in proxy.calls)
    assert len(tunnels) == sum(n for addresses, n in expected.items() if addresses)
    assert all(any(t in addresses for addresses in expected) for t in tunnels), tunnels
    # Nothing sent, nothing claimed: no sent-log, no outbox files.
    assert not (project.root / "state" / "ledger.sqlite3").exists()
    assert not (project.root / "outbox").exists()

    shots = tmp_path / "shots"
    shots.mkdir()
    dom = look(browser, (out / "index.html").as_uri(), shots)
    shown = {brief["id"]: brief for brief in dom["briefs"]}

    for brief_id in due:
        brief = shown[brief_id]
        assert brief["state"] == "due"
        posts = {card["channel"]: card for card in brief["cards"]}
        assert set(posts) == set(POSTING)
        for channel, network in POSTING.items():
            card = posts[channel]
            assert card["kind"] == "post" and card["network"] == network
            assert card["limit"] == LIMITS[network]
            assert 0 < card["length"] <= card["limit"]
            assert f"{card['length']} / {card['limit']}" in card["shown"]
            # The number shown is the count of the text shown, by the network's own rules.
            text = card["text"]
            counted = {"x": lambda t: parse_tweet(t).weightedLength, "bluesky": graphemes,
                       "mastodon": FakeMastodon(token="-").length}[network](text)
            assert counted == card["length"], (network, text)
        source = next(b.source_url for b in briefs if b.id == brief_id)
        assert posts["x"]["links"][0]["href"] == source
        # Bluesky shows the shortened link; its anchor carries the whole URL.
        assert "https://" not in posts["bsky"]["text"]
        assert posts["bsky"]["links"][0]["href"] == source

    # The draft is shown as a draft, with every placeholder flagged, and no broken image.
    sample = reader.read(SAMPLE)[0]
    draft = shown[sample.id]
    assert draft["state"] == "draft"
    assert any(p.startswith("Check: Draft") for p in draft["problems"])
    placeholders = [p for p in sample.problems if p.code == "placeholder"]
    assert len(placeholders) >= 2
    assert sum("placeholder '_Draft placeholder_'" in p for p in draft["problems"]) == len(
        placeholders)
    assert any("HERO_IMAGE" in p for p in draft["problems"])
    for card in draft["cards"]:
        assert card["state"] == "draft" and card["images"] == []
        assert "could not be loaded" in card["missing"]
        assert any("could not be fetched" in p for p in card["problems"])

    # A local hero image is shown as uploaded (fitted), with its alt text and size.
    eval_suite = next(b for b in briefs if b.image and not b.image.startswith("http"))
    for card in shown[eval_suite.id]["cards"]:
        assert [i["alt"] for i in card["images"]] == [eval_suite.image_alt]
        assert card["images"][0]["loaded"]
        assert human_bytes(card["bytes"]) in card["caption"]
        assert not card["missing"]

    # The digest: headers, size against Gmail's limit, desktop and mobile frames, text part.
    (digest,) = dom["emails"]
    assert digest["channel"] == "mail"
    assert digest["headers"]["Subject"].endswith("November 23 – 29, 2026")
    assert digest["headers"]["List-Unsubscribe"].startswith("<http")
    assert digest["headers"]["From"]
    assert 0 < digest["htmlBytes"] < digest["clipBytes"] == GMAIL_CLIP_BYTES
    assert sorted(frame["width"] for frame in digest["frames"]) == [375, 600]
    in_period = [b for b in briefs if b.id in due]
    for frame in digest["frames"]:
        for brief in in_period:
            assert brief.title in frame["text"]
        assert frame["images"] and all(image["loaded"] for image in frame["images"])
        assert not any(image["src"].startswith("http") for image in frame["images"])
    assert in_period[0].title in digest["plain"]
    assert any("cannot be loaded" in p for p in digest["problems"])  # the offline hero images

    # Self-contained: nothing but the file itself, its images and data: URIs was loaded.
    assert dom["scripts"] == 0
    assert not [s for s in dom["sources"] if urlsplit(s).scheme in ("http", "https")]
    loaded = {urlsplit(r["url"]).scheme for r in dom["requests"]}
    assert loaded <= {"file", "data"} and "file" in loaded
    # `<shared>` in a title is text, not markup.
    assert "Regulators & researchers agree on <shared> incident reporting" in {
        b["title"] for b in dom["briefs"]}

    assert dom["wide"] <= 1280
    assert dom["narrow"] <= 375, dom["narrow_overflowing"]
    assert Image.open(shots / "gallery-1280.png").width == 1280
    assert Image.open(shots / "gallery-375.png").width == 375


def test_drafts_appear_only_when_asked_for(project, proxy, browser, tmp_path):
    seeds_project(project)
    out = tmp_path / "gallery"
    preview(project, out, env=offline(proxy))
    dom = look(browser, (out / "index.html").as_uri())
    states = dict(dom["index"])
    assert "000_abc272253b24f11a" not in states
    assert "draft" not in states.values() and "draft" not in {b["state"] for b in dom["briefs"]}
    assert len(dom["briefs"]) == 4 and set(states.values()) == {"due"}


# -- problems, escaping, images -----------------------------------------------------------------


def test_problems_are_flagged_on_the_card_they_concern_and_text_is_escaped(
    project, browser, big_png, tmp_path
):
    shutil.copy(big_png, project.briefs / "big.png")
    long_url = "https://example.org/" + "a-very-long-path-segment/" * 12 + "?q=" + "z" * 80
    title = ("<script>window.owned = 1</script> " + "A remarkably long headline that keeps on "
             "going " * 12).strip()
    write_brief(project.briefs, "loud.md", title=title, url=long_url,
                extra="image: big.png\nimage_alt: Noise\ntags: [one, two, three, four]\n")
    write_brief(project.briefs, "missing.md", title="A brief whose image is gone",
                extra="image: nowhere.png\n")
    project.write_config(channels=STAND_INS)
    out = tmp_path / "gallery"
    preview(project, out)
    dom = look(browser, (out / "index.html").as_uri())
    shown = {brief["id"]: brief for brief in dom["briefs"]}

    loud = shown["loud"]
    assert loud["title"] == title  # the script is text
    assert dom["scripts"] == 0 and browser.evaluate("typeof window.owned") == "undefined"
    posts = {card["channel"]: card for card in loud["cards"]}
    for channel in POSTING:
        card = posts[channel]
        assert any("shortened title" in p for p in card["problems"]), card["problems"]
        # One banner says all that was cut, the dropped hashtags named together.
        cut = [p for p in card["problems"] if "cut to fit" in p]
        assert len(cut) == 1 and "dropped hashtags #" in cut[0], card["problems"]
        assert card["length"] <= card["limit"]
        assert card["images"] and card["images"][0]["loaded"]
    # 8 MB is over X's 5 MB and Bluesky's 1 MB: flagged, and shown as it will be uploaded.
    assert any("over X's 5.0 MB limit" in p for p in posts["x"]["problems"]), posts["x"]
    assert any("over Bluesky's" in p for p in posts["bsky"]["problems"])
    assert posts["bsky"]["bytes"] <= 1_000_000 < big_png.stat().st_size
    assert posts["x"]["links"][0]["href"] == long_url

    gone = shown["missing"]
    for card in gone["cards"]:
        assert card["images"] == [] and card["missing"]
        assert any("nowhere.png" in p for p in card["problems"])
    assert dom["narrow"] <= 375, dom["narrow_overflowing"]


def test_real_adapters_render_without_sending_and_fetch_each_image_once(
    project, browser, tmp_path
):
    picture = tmp_path / "hero.png"
    Image.new("RGB", (1600, 900), (30, 120, 200)).save(picture)
    with _Recorder(_Images) as images:
        images.files = {"/hero.png": picture.read_bytes()}
        write_brief(project.briefs, "remote.md", title="A brief with a remote hero image",
                    extra=f"image: {images.url}/hero.png\nimage_alt: A blue field\n")
        dead = "http://127.0.0.1:9"  # nothing listens: any call would fail, and show
        image_host = images.url.removeprefix("http://")  # loopback: allowed explicitly
        project.write_config(extra=f'[images]\nallow_hosts = ["{image_host}"]\n', channels=(
            f'[channels.x]\ntype = "x"\napi_base = "{dead}"\n'
            f'[channels.masto]\ntype = "mastodon"\ninstance = "{images.url}"\n'
            f'[channels.bsky]\ntype = "bluesky"\nhandle = "preview.example.org"\n'
            f'service = "{dead}"\n'))
        out = tmp_path / "gallery"
        preview(project, out, env={"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
        calls = list(images.calls)
    # One fetch of the image for three networks; Mastodon's public limits are the only other
    # call (a GET, as in a dry run); nothing was posted.
    assert sorted(calls) == [("GET", "/api/v2/instance"), ("GET", "/hero.png")]
    dom = look(browser, (out / "index.html").as_uri())
    (brief,) = dom["briefs"]
    posts = {card["network"]: card for card in brief["cards"]}
    assert set(posts) == {"x", "mastodon", "bluesky"}
    for card in posts.values():
        assert card["kind"] == "post"
        assert [i["alt"] for i in card["images"]] == ["A blue field"]
        assert card["images"][0]["loaded"] and card["images"][0]["width"] == 1600
        assert "as uploaded: 1600×900 JPEG" in card["caption"]
    assert any("could not read the limits" in p for p in posts["mastodon"]["problems"])
    assert posts["bluesky"]["bytes"] <= 1_000_000


def test_single_brief_emails_are_previewed_beside_the_digest(project, browser, tmp_path):
    write_brief(project.briefs, "mailed.md", title="Mailed on its own & as <part> of the digest",
                published_at="2026-11-24T09:00:00Z")
    project.write_config(
        extra='[email]\nsingle_brief_email = true\nunsubscribe_mailto = "leave@example.org"\n',
        channels='[channels.mail]\ntype = "smtp"\nhost = "127.0.0.1"\nport = 9\n'
                 'security = "none"\n')
    out = tmp_path / "gallery"
    preview(project, out)
    dom = look(browser, (out / "index.html").as_uri())
    (brief,) = dom["briefs"]
    (card,) = brief["cards"]
    assert card["kind"] == "email" and card["channel"] == "mail"
    digest, single = dom["emails"]  # the digest section comes first
    title = "Mailed on its own & as <part> of the digest"
    assert single["headers"]["Subject"] == title
    assert digest["headers"]["Subject"].endswith("November 23 – 29, 2026")
    for email in (single, digest):
        unsubscribe = email["headers"]["List-Unsubscribe"]
        assert "/unsubscribe/" in unsubscribe and "mailto:leave@example.org" in unsubscribe
        assert sorted(frame["width"] for frame in email["frames"]) == [375, 600]
        assert all(title in frame["text"] for frame in email["frames"])
        assert title in email["plain"]
    assert dom["narrow"] <= 375, dom["narrow_overflowing"]


# -- the sent-log, read only -----------------------------------------------------------------


def test_states_come_from_the_sent_log_which_is_never_written(project, browser, tmp_path):
    from datetime import timedelta

    for name in ("sent", "queued", "due"):
        write_brief(project.briefs, f"{name}.md", title=f"The {name} one")
    write_brief(project.briefs, "later.md", title="The later one",
                published_at="2026-12-24T09:00:00Z")
    project.write_config(channels='[channels.x]\ntype = "outbox"\nnetwork = "x"\n')
    settings = load_settings(project.config)
    now = parse_now(NOW)
    ledger = Ledger(settings.database_url)
    try:
        ledger.claim(DeliveryKey("brief:sent", "x"))
        ledger.record_sent(DeliveryKey("brief:sent", "x"), remote_url="https://x.com/i/1")
        ledger.claim(DeliveryKey("brief:queued", "x"))
        ledger.record_failure(DeliveryKey("brief:queued", "x"), "X answered 503",
                              retry_at=now + timedelta(hours=1))
        before = [row.as_dict() for row in ledger.deliveries()]
    finally:
        ledger.close()

    out = tmp_path / "gallery"
    preview(project, out)
    dom = look(browser, (out / "index.html").as_uri())
    states = {brief["id"]: (brief["state"], brief["cards"][0]) for brief in dom["briefs"]}
    assert {k: v[0] for k, v in states.items()} == {
        "sent": "sent", "queued": "queued", "due": "due", "later": "scheduled"}
    assert states["sent"][1]["kind"] == "receipt"
    assert states["queued"][1]["kind"] == "post" and states["later"][1]["kind"] == "post"

    ledger = Ledger(settings.database_url, readonly=True)
    try:
        assert [row.as_dict() for row in ledger.deliveries()] == before
    finally:
        ledger.close()


# -- `briefbot serve` ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_shows_the_live_gallery_and_rebuilds_when_a_brief_changes(project, proxy,
                                                                         browser):
    path = write_brief(project.briefs, "live.md", title="Before the edit",
                       extra="image: hero.png\nimage_alt: Red\n")
    Image.new("RGB", (300, 200), (200, 30, 30)).save(project.briefs / "hero.png")
    shutil.copy(SAMPLE, project.briefs / SAMPLE.name)
    project.write_config(extra="[web]\npreview = true\n", channels=STAND_INS)
    port = _free_port()
    token = "t0k3n-" + "x" * 20
    server = subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(project.config), "serve", "--host",
         "127.0.0.1", "--port", str(port)],
        cwd=project.root, env={**project.env, **offline(proxy), "BRIEFBOT_TOKEN_SECRET": "s" * 40,
                               "BRIEFBOT_PREVIEW_TOKEN": token},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    gallery = f"{base}/preview/{token}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        moved = requests.get(gallery.rstrip("/"), allow_redirects=False, timeout=30)
        assert moved.status_code == 301 and moved.headers["Location"] == f"/preview/{token}/"
        # Drafts and embargoed briefs: nothing at any other address, nothing cached.
        for guess in ("/preview/", "/preview/?drafts=1", f"/preview/{token[:-1]}/",
                      f"/preview/{token}x/?drafts=1"):
            refused = requests.get(f"{base}{guess}", timeout=30)
            assert refused.status_code == 404 and "live.md" not in refused.text
        assert requests.get(gallery, timeout=30).headers["Cache-Control"] == "no-store"
        # The other pages keep their strict policy; the gallery's own allows its images.
        assert "img-src" not in requests.get(f"{base}/", timeout=30).headers[
            "Content-Security-Policy"]

        dom = look(browser, gallery)
        (brief,) = dom["briefs"]
        assert brief["title"] == "Before the edit"
        assert {card["channel"] for card in brief["cards"]} == set(POSTING)
        for card in brief["cards"]:
            assert card["images"] and card["images"][0]["loaded"]
        assert dom["narrow"] <= 375

        with_drafts = look(browser, f"{gallery}?drafts=1")
        assert {b["id"]: b["state"] for b in with_drafts["briefs"]}[SAMPLE.stem] == "draft"

        path.write_text(path.read_text().replace("Before the edit", "After the edit"))
        again = look(browser, gallery)
        assert [b["title"] for b in again["briefs"]] == ["After the edit"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


def test_a_rewrite_removes_only_the_images_a_gallery_wrote(project, tmp_path):
    from bot.preview import build_gallery, write_gallery

    write_brief(project.briefs, "pictured.md", extra="image: hero.png\n")
    Image.new("RGB", (40, 30), (0, 90, 0)).save(project.briefs / "hero.png")
    out = tmp_path / "mine"
    (out / "images").mkdir(parents=True)
    (out / "images" / "holiday.png").write_bytes(b"the user's own file")
    stale = out / "images" / ("0" * 20 + ".png")
    stale.write_bytes(b"from an earlier preview")
    gallery = build_gallery(load_settings(project.config), now=parse_now(NOW))
    index = write_gallery(gallery, out)
    assert index == out / "index.html" and index.read_text().startswith("<!doctype html>")
    assert (out / "images" / "holiday.png").exists() and not stale.exists()
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        [*gallery.pictures, "holiday.png"])
    assert len(gallery.pictures) == 1
