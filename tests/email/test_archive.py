"""The web archive: digests that went out, served by `briefbot serve` and exported as files.

Everything real: the CLI sends through aiosmtpd, `briefbot serve` runs as a child process on
a loopback port, the feed is read back by feedparser.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser

import feedparser
import requests

from bot.config import load_settings
from bot.ledger import Ledger
from bot.message import DeliveryKey
from tests.email.digest_setup import (
    NOW,
    PERIOD,
    TITLES,
    add_subscribers,
    ledger_rows,
    smtp_project,
    write_week_briefs,
)
from tests.servers.smtp_server import free_port, smtp_server

SECRET = {"BRIEFBOT_TOKEN_SECRET": "archive-test-secret-5e1d9c0b7a6f"}


@contextmanager
def serving(project, port: int) -> Iterator[str]:
    """`briefbot serve` on 127.0.0.1:`port` with the project's configuration."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(project.config), "serve",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=project.root, env={**project.env, **SECRET}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()
            try:
                requests.get(url + "/", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "briefbot serve did not listen in 30s"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=15)


class Links(HTMLParser):
    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href, self._text = dict(attrs).get("href") or "", []

    def handle_data(self, data):
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append((" ".join("".join(self._text).split()), self._href))
            self._href = None


def assert_nobodys(text: str, emails: list[str]) -> None:
    """No subscriber address, unsubscribe link or token placeholder anywhere in `text`."""
    lowered = text.lower()
    assert not [e for e in emails if e.lower() in lowered]
    assert "/unsubscribe/" not in text and "briefbot-unsubscribe-" not in text
    assert "mailto:" not in text and "unsubscribe+" not in text


def send_week(project, base_url: str, subscribers: int = 5):
    """The week's digest mailed for real to `subscribers` people; their addresses and mail."""
    write_week_briefs(project)
    with smtp_server() as server:
        smtp_project(project, server, base_url=base_url,
                     email='unsubscribe_mailto = "unsubscribe@example.org"')
        emails = add_subscribers(project, subscribers)
        test_copy = project.cli("digest", "send", "--period", PERIOD, "--now", NOW,
                                "--to", "editor@example.org", env=SECRET)
        assert test_copy.returncode == 0, test_copy.stderr
        assert not [r for r in ledger_rows(project) if r.key.channel == "*"]
        # The daemon had recorded this period as missed: a send by hand still publishes it.
        settings = load_settings(project.config)
        ledger = Ledger(settings.database_url)
        ledger.mark_skipped(DeliveryKey(f"digest:{PERIOD}", "*"), "missed")
        ledger.close()
        result = project.cli("digest", "send", "--period", PERIOD, "--now", NOW, env=SECRET)
        assert result.returncode == 0, result.stderr
        received = [m.parse() for m in server.mailbox.received()]
    marker = [r for r in ledger_rows(project) if r.key.channel == "*"]
    assert [(r.key.campaign, r.state) for r in marker] == [(f"digest:{PERIOD}", "sent")]
    return emails, received[1:]


def test_a_digest_sent_is_served_in_the_archive_and_the_feed_with_nobodys_details(project):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    emails, received = send_week(project, base)
    assert len(received) == 5
    page_url = f"{base}/archive/{PERIOD}/"
    for message in received:
        assert message["List-Archive"] == f"<{base}/archive/>"
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        assert ("View in your browser", page_url) in Links(html).links
        assert f"View in your browser: {page_url}" in text
    subject = received[0]["Subject"]

    with serving(project, port) as url:
        index = requests.get(f"{url}/archive/", timeout=10)
        assert index.status_code == 200 and index.headers["Content-Type"].startswith("text/html")
        assert (subject, f"{PERIOD}/") in Links(index.text).links
        assert requests.get(f"{url}/archive", timeout=10, allow_redirects=False
                            ).headers["Location"] == "/archive/"

        page = requests.get(page_url, timeout=10)
        assert page.status_code == 200
        assert all(title in page.text for title in TITLES)
        assert "Last week's news" not in page.text and "Not ready" not in page.text
        assert "View in your browser" not in page.text
        assert_nobodys(page.text, [*emails, "editor@example.org"])
        assert "no-store" not in page.headers["Cache-Control"]

        # The feed, read back by a real parser: well-formed Atom, one entry linking the page.
        raw = requests.get(f"{url}/archive/feed.atom", timeout=10)
        assert raw.headers["Content-Type"].startswith("application/atom+xml")
        feed = feedparser.parse(raw.content)
        assert not feed.bozo, feed.get("bozo_exception")
        assert feed.version == "atom10"
        assert feed.feed.title == "The weekly brief" and feed.feed.id == f"{base}/archive/"
        assert [(e.title, e.link, e.id) for e in feed.entries] == [(subject, page_url, page_url)]
        entry = feed.entries[0]
        assert entry.updated_parsed and all(title in entry.content[0].value for title in TITLES)
        assert_nobodys(raw.text, [*emails, "editor@example.org"])

        # Only what went out: last week (a brief, never mailed) and nonsense are plain 404s.
        assert requests.get(f"{url}/archive/2026-W47/", timeout=10).status_code == 404
        assert requests.get(f"{url}/archive/../config.toml", timeout=10).status_code == 404


def test_archive_export_writes_the_pages_serve_shows(project, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    emails, _ = send_week(project, base, subscribers=2)
    out = tmp_path / "site" / "archive"
    result = project.cli("archive", "export", str(out), env=SECRET)
    assert result.returncode == 0, result.stderr
    assert "1 digest" in result.stdout
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [f"{PERIOD}/index.html", "feed.atom", "index.html"]
    with serving(project, port) as url:
        for name, path in ((f"{PERIOD}/index.html", f"{PERIOD}/"), ("feed.atom", "feed.atom"),
                           ("index.html", "")):
            served = requests.get(f"{url}/archive/{path}", timeout=10).content
            assert (out / name).read_bytes() == served, name
    for path in out.rglob("*"):
        if path.is_file():
            assert_nobodys(path.read_text(encoding="utf-8"), emails)
    assert not feedparser.parse((out / "feed.atom").read_bytes()).bozo
    helped = project.cli("archive", "export", "--help")
    assert helped.returncode == 0 and "Example:" in helped.stdout
    assert "briefbot archive export" in helped.stdout


def test_nothing_is_archived_before_a_digest_goes_out(project, tmp_path):
    write_week_briefs(project)
    port = free_port()
    smtp_project(project, None, base_url=f"http://127.0.0.1:{port}")
    dry = project.cli("digest", "send", "--period", PERIOD, "--now", NOW, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    with serving(project, port) as url:
        index = requests.get(f"{url}/archive/", timeout=10)
        assert index.status_code == 200 and "No issue has gone out yet" in index.text
        feed = feedparser.parse(requests.get(f"{url}/archive/feed.atom", timeout=10).content)
        assert not feed.bozo and feed.entries == []
        assert requests.get(f"{url}/archive/{PERIOD}/", timeout=10).status_code == 404


def test_a_single_brief_email_links_its_own_web_version(project):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    write_week_briefs(project)
    with smtp_server() as server:
        smtp_project(project, server, base_url=base, email="single_brief_email = true")
        emails = add_subscribers(project, 2)
        result = project.cli("run", "--once", "--now", NOW, env=SECRET)
        assert result.returncode == 0, result.stdout + result.stderr
        received = [m.parse() for m in server.mailbox.received()]
    message = next(m for m in received if m["Subject"] == TITLES[0])
    assert message["List-Archive"] == f"<{base}/archive/>"
    html = message.get_body(("html",)).get_content()
    link = dict(Links(html).links)["View in your browser"]
    assert re.fullmatch(rf"{re.escape(base)}/archive/briefs/[\w.-]+/", link)
    with serving(project, port):
        page = requests.get(link, timeout=10)
        assert page.status_code == 200 and TITLES[0] in page.text
        assert_nobodys(page.text, emails)
        assert requests.get(f"{base}/archive/briefs/not-a-brief/", timeout=10).status_code == 404

