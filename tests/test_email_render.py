"""Email rendering: every check parses the personalised bytes the way a mail client would."""

from __future__ import annotations

import base64
import dataclasses
import email.policy
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bot.briefs import Brief, BriefReader
from bot.config import ConfigError, Settings, parse_config
from bot.ledger import DeliveryKey
from bot.render.email import (
    PreparedEmail,
    Recipient,
    message_id_for,
    prepare_brief_email,
    prepare_digest,
)
from tests.briefs_factory import write_week

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SENT = datetime(2026, 11, 30, 8, 0, 5, tzinfo=UTC)
POSTAL = "Weekly Brief Ltd, 12 Harbour Road, 4000 Portsmouth"
CATEGORIES = ("Research", "Energy", "Policy")
SENTENCE = ("Brief {n:03d} reports that the team behind the study measured effects across "
            "several regions and published the data, code and a detailed methods appendix.")
SECOND = ("Independent reviewers have already repeated the main analysis on new data and "
          "found the same pattern in every region they checked so far.")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = parse_config({
        "templates": "my-templates",
        "email": {
            "from_address": "The Weekly Brief <digest@brief.example.org>",
            "list_id": "The Weekly Brief <weekly.brief.example.org>",
            "list_name": "The Weekly Brief",
            "postal_address": POSTAL,
        },
    })
    return Settings(config, tmp_path / "config.toml")


def write_briefs(folder: Path, count: int, *, image: str | None = "https") -> list[Brief]:
    """`count` published briefs with long summaries and https hero images, read back."""

    def hero(n: int) -> str | None:
        return f"https://cdn.example.org/hero/{n}.jpg" if image == "https" else image

    write_week(folder, count, id=lambda n: f"brief-{n:03d}",
               title=lambda n: f"Finding number {n} changes how grids are planned",
               category=lambda n: CATEGORIES[n % len(CATEGORIES)],
               source=lambda n: f"Example Source {n}",
               url=lambda n: f"https://news.example.org/story/{n}?ref=digest&n={n}",
               published_at=lambda n: f"2026-11-{23 + n % 5:02d}T{n % 24:02d}:00:00Z",
               image=hero, image_alt=lambda n: f"Chart for finding {n}" if hero(n) else None,
               body=lambda n: f"## WHAT HAPPENED\n{SENTENCE.format(n=n)} {SECOND} Even more "
                              "detail follows here.\n")
    briefs = BriefReader().scan([folder]).briefs
    assert len(briefs) == count
    return briefs


def personalise(prepared: PreparedEmail, n: int = 1) -> tuple[bytes, str, str]:
    recipient = f"reader{n}@example.net"
    url = f"https://brief.example.org/unsubscribe?token=tok{n}-A_b%2F&list=weekly"
    key = DeliveryKey("digest:2026-W48", "email", recipient)
    data = prepared.personalise(
        Recipient(recipient, f"Reader Nümber {n}"),
        message_id=message_id_for(key, "brief.example.org"),
        unsubscribe_url=url,
        unsubscribe_mailto=f"unsubscribe+{n}@brief.example.org",
        date=SENT,
    )
    return data, recipient, url


def parse(data: bytes) -> EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(data)


def bodies(message: EmailMessage) -> tuple[str, str]:
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    return tuple(p.get_content().replace("\r\n", "\n") for p in parts)


class Page(HTMLParser):
    """The bits of an HTML body the assertions look at."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._h2: list[str] | None = None
        self.headings: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "h2":
            self._h2 = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._h2 is not None:
            self.headings.append("".join(self._h2).strip())
            self._h2 = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._h2 is not None:
            self._h2.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    def hrefs(self) -> list[str]:
        return [a.get("href") or "" for a in self.all("a")]


def test_every_personalised_digest_is_a_well_formed_message(settings, tmp_path):
    prepared = prepare_digest(settings, write_briefs(tmp_path / "briefs", 10),
                              period_label="2026-W48", now=NOW)
    seen_ids = set()
    for n in (1, 2):
        data, recipient, url = personalise(prepared, n)
        assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
        assert max(len(line) for line in data.split(b"\r\n")) <= 998
        message = parse(data)
        assert message.get_content_type() == "multipart/alternative"
        assert message["MIME-Version"] == "1.0"
        assert message["To"].addresses[0].addr_spec == recipient
        assert message["To"].addresses[0].display_name == f"Reader Nümber {n}"
        assert message["From"].addresses[0].addr_spec == "digest@brief.example.org"
        assert message["Subject"] == "The Weekly Brief: November 23 – 29, 2026"
        assert message["List-Id"] == "The Weekly Brief <weekly.brief.example.org>"
        assert message["Date"].datetime == SENT
        key = DeliveryKey("digest:2026-W48", "email", recipient)
        assert message["Message-ID"] == message_id_for(key, "brief.example.org")
        seen_ids.add(message["Message-ID"])
        assert message["List-Unsubscribe"] == (
            f"<{url}>, <mailto:unsubscribe+{n}@brief.example.org>")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text, html = bodies(message)
        for part in message.iter_parts():
            assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert f"Unsubscribe with one click: {url}\n" in text
        assert url in Page(html).hrefs()
        assert prepared.token not in text and prepared.token not in html
        assert "Finding number 9 changes how grids are planned" in text
        assert "Read more: https://news.example.org/story/9?ref=digest&n=9" in text
        assert "https://news.example.org/story/9?ref=digest&n=9" in Page(html).hrefs()
        assert POSTAL in text and POSTAL in "".join(Page(html).text)
        images = Page(html).all("img")
        assert len(images) == 10
        assert all(img["alt"] and img["src"].startswith("https://") for img in images)
        hidden = re.search(r'<div style="([^"]*)">([^<]*)</div>', html)
        assert hidden and hidden.group(2) == prepared.preheader
        assert "display:none" in hidden.group(1) and "color" not in hidden.group(1)
    assert len(seen_ids) == 2


def test_the_same_recipient_gets_byte_identical_messages(settings, tmp_path):
    briefs = write_briefs(tmp_path / "briefs", 3)
    first = personalise(prepare_digest(settings, briefs, period_label="W48", now=NOW))[0]
    again = personalise(prepare_digest(settings, briefs, period_label="W48", now=NOW))[0]
    assert first == again


def test_message_id_is_deterministic_per_delivery_key():
    key = DeliveryKey("digest:2026-W48", "email", "a@example.net")
    same = DeliveryKey("digest:2026-W48", "email", "a@example.net")
    other = DeliveryKey("digest:2026-W48", "email", "b@example.net")
    assert message_id_for(key, "example.org") == message_id_for(same, "example.org")
    assert message_id_for(key, "example.org") != message_id_for(other, "example.org")
    assert re.fullmatch(r"<[0-9a-f]{32}\.briefbot@example\.org>",
                        message_id_for(key, "example.org"))
    with pytest.raises(ValueError):
        message_id_for(key, "bad domain>")


def test_long_unsubscribe_url_survives_quoted_printable(settings, tmp_path):
    prepared = prepare_digest(settings, write_briefs(tmp_path / "briefs", 2),
                              period_label="W48", now=NOW)
    url = "https://brief.example.org/u?" + "&".join(f"k{i}=v{i}%3D=" for i in range(60))
    data = prepared.personalise(Recipient("r@example.net"), message_id="<a.b@example.org>",
                                unsubscribe_url=url, unsubscribe_mailto=None, date=SENT)
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    message = parse(data)
    text, html = bodies(message)
    assert url in text and url in Page(html).hrefs()
    assert message["List-Unsubscribe"] == f"<{url}>"
    assert message["To"] == "r@example.net"


def test_non_ascii_title_is_encoded_in_the_subject(settings, tmp_path):
    brief = write_briefs(tmp_path / "briefs", 1)[0]
    title = "Zoë's Überblick — 東京 grid report"
    prepared = prepare_brief_email(settings, dataclasses.replace(brief, title=title), now=NOW)
    data = personalise(prepared)[0]
    headers = data.split(b"\r\n\r\n", 1)[0]
    assert headers.isascii()
    assert b"=?utf-8?" in headers.split(b"Subject:", 1)[1].split(b"\r\n", 1)[0]
    message = parse(data)
    assert message["Subject"] == title
    assert message["To"].addresses[0].display_name == "Reader Nümber 1"


def test_header_values_never_carry_line_breaks(settings, tmp_path):
    brief = write_briefs(tmp_path / "briefs", 1)[0]
    sneaky = dataclasses.replace(brief, title="Hello\r\nBcc: victim@example.net\nX-Evil: 1")
    prepared = prepare_brief_email(settings, sneaky, now=NOW)
    data = prepared.personalise(
        Recipient("r@example.net", "Eve\r\nBcc: other@example.net"),
        message_id="<x.y@example.org>", unsubscribe_url="https://brief.example.org/u?t=1",
        unsubscribe_mailto=None, date=SENT)
    message = parse(data)
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert message["Subject"] == "Hello Bcc: victim@example.net X-Evil: 1"
    assert message["To"].addresses[0].addr_spec == "r@example.net"
    for bad in ("r@example.net\r\nBcc: x@example.net", "not-an-address", "a b@example.net"):
        with pytest.raises(ValueError, match="address"):
            prepared.personalise(Recipient(bad), message_id="<x.y@example.org>",
                                 unsubscribe_url="https://e.org/u", unsubscribe_mailto=None,
                                 date=SENT)
    with pytest.raises(ValueError, match="unsubscribe URL"):
        prepared.personalise(Recipient("r@example.net"), message_id="<x.y@example.org>",
                             unsubscribe_url="https://e.org/u\r\nBcc: x@example.net",
                             unsubscribe_mailto=None, date=SENT)


def test_markup_in_a_title_is_escaped_not_interpreted(settings, tmp_path):
    briefs = write_briefs(tmp_path / "briefs", 2)
    briefs[0] = dataclasses.replace(briefs[0], title='Cats <b>& "dogs"</b> agree')
    for prepared in (prepare_digest(settings, briefs, period_label="W48", now=NOW),
                     prepare_brief_email(settings, briefs[0], now=NOW)):
        text, html = bodies(parse(personalise(prepared)[0]))
        page = Page(html)
        assert 'Cats <b>& "dogs"</b> agree' in page.headings
        assert page.all("b") == []
        assert 'Cats <b>& "dogs"</b> agree' in text


def test_images_have_alt_text_size_and_https_sources_only(settings, tmp_path):
    briefs = write_briefs(tmp_path / "https", 3)
    local = write_briefs(tmp_path / "local", 1, image="images/local.png")[0]
    plain = write_briefs(tmp_path / "http", 1, image="http://cdn.example.org/x.jpg")[0]
    briefs += [dataclasses.replace(local, id="local"), dataclasses.replace(plain, id="plain")]
    prepared = prepare_digest(settings, briefs, period_label="W48", now=NOW)
    images = Page(bodies(parse(personalise(prepared)[0]))[1]).all("img")
    assert sorted(img["src"] for img in images) == [
        f"https://cdn.example.org/hero/{n}.jpg" for n in range(3)]
    for img in images:
        assert img["alt"] and img["alt"].startswith("Chart for finding")
        assert img["width"] and img["width"].isdigit()
        assert img["height"]


def test_hero_images_keep_their_shape_and_never_widen_the_page(settings, tmp_path):
    """Opened in Chromium at phone and desktop widths, images on and off: no horizontal scroll,
    and every image drawn at its file's aspect ratio (a fixed height squashed it on phones)."""
    from PIL import Image as PILImage

    from tests.chromium import chromium

    hero = tmp_path / "hero.jpg"
    PILImage.new("RGB", (1600, 900), (40, 90, 160)).save(hero)
    data_uri = "data:image/jpeg;base64," + base64.b64encode(hero.read_bytes()).decode()
    briefs = [dataclasses.replace(b, extra={"image_width": 1600, "image_height": 900})
              for b in write_briefs(tmp_path / "briefs", 3)]
    html = prepare_digest(settings, briefs, period_label="W48", now=NOW).html
    shown = re.sub(r'src="https://cdn\.example\.org/[^"]+"', f'src="{data_uri}"', html)
    blocked = re.sub(r'src="https://cdn\.example\.org/[^"]+"', "", html)
    pages = {"on": tmp_path / "on.html", "off": tmp_path / "off.html"}
    pages["on"].write_text(shown, encoding="utf-8")
    pages["off"].write_text(blocked, encoding="utf-8")
    with chromium(tmp_path / "profile") as page:
        for images, path in pages.items():
            for width in (320, 375, 600):
                page.open(path.as_uri(), width=width)
                scroll, viewport = page.evaluate(
                    "[document.documentElement.scrollWidth, window.innerWidth]")
                assert scroll == viewport == width, (images, width, scroll)
                if images == "off":
                    continue
                drawn = page.evaluate("[...document.images].map(i => [i.naturalWidth,"
                                      " i.naturalHeight, i.getBoundingClientRect().width,"
                                      " i.getBoundingClientRect().height])")
                assert len(drawn) == 3
                for natural_w, natural_h, w, h in drawn:
                    assert w <= width
                    assert abs((w / h) / (natural_w / natural_h) - 1) < 0.01, (width, w, h)


def test_twenty_five_briefs_fit_whole_under_gmail_clipping(settings, tmp_path):
    briefs = write_briefs(tmp_path / "briefs", 25)
    prepared = prepare_digest(settings, briefs, period_label="W48", now=NOW)
    assert prepared.html_bytes == len(prepared.html.encode()) < 102 * 1024
    text, html = bodies(parse(personalise(prepared)[0]))
    for brief in briefs:
        assert brief.summary[:60] in html
    assert len(Page(html).all("img")) == 25


def capped_digest(settings, folder, count):
    """`count` briefs' digest, delivered: under the size cap, footer and unsubscribe link kept
    in both parts."""
    briefs = write_briefs(folder, count)
    prepared = prepare_digest(settings, briefs, period_label="W48", now=NOW)
    assert prepared.html_bytes <= settings.config.email.max_html_bytes
    data, _, url = personalise(prepared)
    text, html = bodies(parse(data))
    page = Page(html)
    assert url in page.hrefs() and POSTAL in "".join(page.text)
    assert url in text and POSTAL in text
    return briefs, html, page


def test_sixty_briefs_keep_the_footer(settings, tmp_path):
    _, html, page = capped_digest(settings, tmp_path / "briefs", 60)
    assert len(page.headings) + omitted_count(html) == 60


def omitted_count(html: str) -> int:
    omitted = re.search(r"And (\d+) more briefs? this time", html)
    return int(omitted[1]) if omitted else 0


def test_whole_cards_go_to_the_newest_briefs_first(settings, tmp_path):
    """Past the size cap the newest briefs stay whole cards, shown first; older ones become
    title-and-link rows after them, and what does not fit is counted, never dropped silently."""
    briefs, html, page = capped_digest(settings, tmp_path / "briefs", 120)
    by_title = {b.title: b for b in briefs}
    listed = [t for t in page.headings if t in by_title]
    whole = [t for t in listed if by_title[t].summary[:60] in html]
    assert len(whole) >= 20
    assert whole == listed[: len(whole)]
    newest = sorted(briefs, key=lambda b: (b.published_at, b.id), reverse=True)
    assert {by_title[t].id for t in whole} == {b.id for b in newest[: len(whole)]}
    assert len(listed) + omitted_count(html) == 120


def test_later_items_shrink_to_title_and_link_past_the_size_cap(settings, tmp_path):
    briefs = write_briefs(tmp_path / "briefs", 70)
    prepared = prepare_digest(settings, briefs, period_label="W48", now=NOW)
    assert 0.8 * settings.config.email.max_html_bytes < prepared.html_bytes
    assert prepared.html_bytes <= settings.config.email.max_html_bytes
    data, _, url = personalise(prepared)
    text, html = bodies(parse(data))
    page = Page(html)
    assert url in page.hrefs() and POSTAL in "".join(page.text)
    assert url in text and POSTAL in text
    assert len(page.headings) + omitted_count(html) == 70
    by_title = {b.title: b for b in briefs}
    full = [title for title in page.headings if by_title[title].summary[:60] in html]
    assert 0 < len(full) < 70
    assert full == page.headings[: len(full)]  # the first ones in reading order stay whole
    assert len(page.all("img")) == len(full)
    # The text part mirrors the HTML: the same briefs keep their summaries there.
    assert {b.title for b in briefs if b.summary[:40] in text.replace("\n  ", " ")} == set(full)


def test_a_tight_cap_drops_items_but_never_the_footer(tmp_path):
    config = parse_config({"email": {"max_html_bytes": 12_000, "postal_address": POSTAL}})
    settings = Settings(config, tmp_path / "config.toml")
    prepared = prepare_digest(settings, write_briefs(tmp_path / "briefs", 60),
                              period_label="W48", now=NOW)
    assert prepared.html_bytes <= 12_000
    text, html = bodies(parse(personalise(prepared)[0]))
    assert re.search(r"And \d+ more briefs this time", html)
    assert POSTAL in html and POSTAL in text


def test_user_templates_override_the_built_in_ones(settings, tmp_path):
    folder = tmp_path / "my-templates" / "email"
    folder.mkdir(parents=True)
    (folder / "_footer.mjml.j2").write_text(
        '<mj-section><mj-column><mj-text><p>Custom footer for {{ list_name }}. '
        '<a href="{{ unsubscribe_url }}">Leave</a></p></mj-text></mj-column></mj-section>\n',
        encoding="utf-8")
    (folder / "_footer.txt.j2").write_text("Custom text footer. Leave: {{ unsubscribe_url }}\n",
                                           encoding="utf-8")
    prepared = prepare_digest(settings, write_briefs(tmp_path / "briefs", 2),
                              period_label="W48", now=NOW)
    data, _, url = personalise(prepared)
    text, html = bodies(parse(data))
    assert "Custom footer for The Weekly Brief." in "".join(Page(html).text)
    assert url in Page(html).hrefs()
    assert f"Custom text footer. Leave: {url}" in text
    assert POSTAL not in text



def test_a_template_without_the_unsubscribe_link_is_refused(tmp_path):
    folder = tmp_path / "templates" / "email"
    folder.mkdir(parents=True)
    (folder / "_footer.txt.j2").write_text("No way out.\n", encoding="utf-8")
    settings = Settings(parse_config({}), tmp_path / "config.toml")
    with pytest.raises(ConfigError, match=r"email/digest.txt.j2 .*unsubscribe_url"):
        prepare_digest(settings, write_briefs(tmp_path / "briefs", 1), period_label="W48",
                       now=NOW)


def test_configuration_errors_name_the_field(tmp_path):
    brief = write_briefs(tmp_path / "briefs", 1)[0]
    for key, value in (("from_address", "nobody"), ("reply_to", "not an address")):
        with pytest.raises(ConfigError, match=f"email.{key}"):  # as the file loads
            parse_config({"email": {key: value}})
    settings = Settings(parse_config({"email": {"list_id": "no list id here"}}),
                        tmp_path / "config.toml")
    with pytest.raises(ConfigError, match="email.list_id"):
        prepare_brief_email(settings, brief, now=NOW)


def test_a_nearly_empty_brief_still_renders(settings, tmp_path):
    path = tmp_path / "bare.md"
    path.write_text("---\ntitle: Just a title\n---\n", encoding="utf-8")
    brief, _ = BriefReader().read(path)
    assert brief and not brief.image and not brief.summary and not brief.source_url
    for prepared in (prepare_brief_email(settings, brief, now=NOW),
                     prepare_digest(settings, [brief], period_label="W48", now=NOW)):
        text, html = bodies(parse(personalise(prepared)[0]))
        assert "Just a title" in Page(html).headings
        assert "Just a title" in text and POSTAL in text
        assert Page(html).all("img") == []
    empty = prepare_digest(settings, [], period_label="W48", now=NOW)
    assert "No new briefs" in bodies(parse(personalise(empty)[0]))[0]


def test_brief_sections_are_rendered_and_sanitised(settings, tmp_path):
    path = tmp_path / "sections.md"
    path.write_text(
        "---\ntitle: Sections\nsource_url: https://news.example.org/s\nstatus: published\n"
        "published_at: 2026-11-28T09:00:00Z\n---\n\n## WHY IT MATTERS\n"
        "- **Bold** point with [a link](https://example.org/more)\n"
        "- [bad](javascript:alert(1)) and <script>alert(2)</script>\n\n"
        "<!-- HERO_IMAGE: nothing -->\n\n## SOURCE\nhttps://news.example.org/s\n",
        encoding="utf-8")
    brief, _ = BriefReader().read(path)
    text, html = bodies(parse(personalise(prepare_brief_email(settings, brief, now=NOW))[0]))
    page = Page(html)
    assert page.all("strong") and "https://example.org/more" in page.hrefs()
    assert page.all("script") == [] and not any("javascript" in h for h in page.hrefs())
    assert "Why it matters" in page.text
    assert "SOURCE" not in text and "HERO_IMAGE" not in text and "HERO_IMAGE" not in html
    assert "**Bold** point with [a link](https://example.org/more)" in text


def spamassassin_or_skip() -> str:
    found = shutil.which("spamassassin")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("spamassassin is required in CI; scripts/test.sh installs it "
                        "(apt-get install -y spamassassin)")
        pytest.skip("spamassassin not installed (apt-get install -y spamassassin)")
    return found


def spam_check(data: bytes, home: Path) -> tuple[float, set[str], str]:
    """SpamAssassin's local rules on one message: its score, the rules hit, the status line."""
    home.mkdir()
    result = subprocess.run([spamassassin_or_skip(), "-L", "-t"], input=data,
                            capture_output=True, timeout=120, env={**os.environ, "HOME": str(home)})
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    status = " ".join(str(parse(result.stdout)["X-Spam-Status"]).split())
    score = float(re.search(r"score=(-?[\d.]+)", status).group(1))
    listed = re.search(r"tests=(.*?)(?: autolearn=| version=|$)", status).group(1)
    return score, set(re.split(r"[,\s]+", listed.strip())), status


FLAGGED = {"MISSING_DATE", "MISSING_MID", "MIME_HTML_ONLY", "MIME_HTML_MOSTLY", "MPART_ALT_DIFF",
           "HTML_FONT_LOW_CONTRAST"}


def test_spamassassin_finds_nothing_wrong_with_a_digest(settings, tmp_path):
    prepared = prepare_digest(settings, write_briefs(tmp_path / "briefs", 10),
                              period_label="2026-W48", now=NOW)
    score, rules, status = spam_check(personalise(prepared)[0], tmp_path / "home")
    assert "HTML_MESSAGE" in rules, status  # the report was parsed
    assert score <= 0.5, status
    assert not rules & FLAGGED, status


def test_spamassassin_flags_the_usual_white_text_preheader(settings, tmp_path):
    """The check above can fail: MJML's stock <mj-preview> hides the preheader with white text."""
    spamassassin_or_skip()
    layout = (Path(__file__).resolve().parent.parent / "templates/email/_layout.mjml.j2")
    source = re.sub(r"<mj-raw>.*?</mj-raw>", "", layout.read_text(encoding="utf-8"), flags=re.S)
    source = source.replace("<mj-title>", "<mj-preview>{{ preheader }}</mj-preview><mj-title>")
    folder = tmp_path / "my-templates" / "email"
    folder.mkdir(parents=True)
    (folder / "_layout.mjml.j2").write_text(source, encoding="utf-8")
    prepared = prepare_digest(settings, write_briefs(tmp_path / "briefs", 10),
                              period_label="2026-W48", now=NOW)
    assert "color:#ffffff" in prepared.html
    score, rules, status = spam_check(personalise(prepared)[0], tmp_path / "home")
    assert "HTML_FONT_LOW_CONTRAST" in rules, status


def test_bidi_overrides_and_byte_order_marks_never_reach_a_subject(tmp_path):
    from bot.briefs import clean_text

    tricked = "\ufeffInvoice \u202egpj.exe\u202c due \u2066now\u2069"
    cleaned = clean_text(tricked)
    assert not any(ch in cleaned for ch in "\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2069")
    assert cleaned == "Invoice gpj.exe due now"
