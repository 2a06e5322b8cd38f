"""Readers' details: dated subjects and headings, the configured language, the text part's
width, dark mode. Delivered digests go through aiosmtpd and the real CLI."""

from __future__ import annotations

import email.policy
import re
from datetime import UTC, datetime
from email.parser import BytesParser
from pathlib import Path

import pytest

from bot.briefs import BriefReader
from bot.config import ConfigError, Settings, parse_config
from bot.render.email import prepare_digest
from tests.briefs_factory import write_week
from tests.digest_setup import NOW, PERIOD, add_subscribers, smtp_project, write_week_briefs
from tests.smtp_server import smtp_server

THIN = " "  # CLDR writes thin spaces; briefbot plain ones
WHEN = datetime(2026, 11, 30, 8, tzinfo=UTC)


def settings_for(tmp_path: Path, **email) -> Settings:
    return Settings(parse_config({"templates": "my-templates", "email": email}),
                    tmp_path / "config.toml")


def briefs_in(tmp_path: Path, *bodies: tuple[str, str]) -> list:
    folder = tmp_path / "briefs"
    write_week(folder, len(bodies), name="b{n}.md", title=lambda n: bodies[n][0],
               published_at=lambda n: f"2026-11-2{4 + n}T09:00:00Z",
               url=lambda n: f"https://example.org/{n}",
               body=lambda n: f"## WHAT HAPPENED\n{bodies[n][1]}\n")
    return BriefReader().scan([folder]).briefs


def delivered(project, language: str):
    write_week_briefs(project)
    with smtp_server() as server:
        smtp_project(project, server, email=f'language = "{language}"')
        add_subscribers(project, 1)
        result = project.cli("digest", "send", "--period", PERIOD, "--now", NOW)
        assert result.returncode == 0, result.stderr
        (message,) = server.mailbox.received()
    return BytesParser(policy=email.policy.default).parsebytes(message.data)


@pytest.mark.parametrize(("language", "dates"), [
    ("en-GB", f"23{THIN}–{THIN}29 November 2026"),
    ("de", "23.–29. November 2026"),
    ("ja", "2026年11月23日～29日"),
])
def test_a_delivered_digest_names_its_dates_in_the_configured_language(project, language,
                                                                        dates):
    message = delivered(project, language)
    assert message["Subject"] == f"The weekly brief: {dates}"
    assert "W48" not in message["Subject"]
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert re.search(rf"<html lang=\"{language}\"", html)
    heading = re.search(r"<h1>(.*?)</h1>", html, re.S).group(1).strip()
    assert heading == f"The weekly brief: {dates}"
    assert f"The weekly brief: {dates}\n" in text


def test_english_by_default_and_ranges_across_months_and_years(tmp_path):
    briefs = briefs_in(tmp_path, ("One", "A thing happened."))
    settings = settings_for(tmp_path)
    prepared = prepare_digest(settings, briefs, period_label="2026-W48", now=WHEN)
    assert prepared.subject == f"The weekly brief: November 23{THIN}–{THIN}29, 2026"
    assert '<html lang="en"' in prepared.html
    across = prepare_digest(settings, briefs, period_label="2026-11-23+14d", now=WHEN)
    assert across.subject.endswith(f"November 23{THIN}–{THIN}December 6, 2026")
    new_year = prepare_digest(settings_for(tmp_path, language="en-GB"), briefs,
                              period_label="2026-W53", now=WHEN)
    assert new_year.subject.endswith(f"28 December 2026{THIN}–{THIN}3 January 2027")
    one_day = prepare_digest(settings, briefs, period_label="2026-11-24", now=WHEN)
    assert one_day.subject.endswith("November 24, 2026")


def test_the_subject_comes_from_a_template_the_user_can_change(tmp_path):
    (tmp_path / "my-templates" / "email").mkdir(parents=True)
    (tmp_path / "my-templates" / "email" / "digest_subject.txt.j2").write_text(
        "{{ count }} briefs, {{ period_dates }} ({{ period_label }})\n", encoding="utf-8")
    briefs = briefs_in(tmp_path, ("One", "A thing."), ("Two", "Another thing."))
    prepared = prepare_digest(settings_for(tmp_path, language="fr"), briefs,
                              period_label="2026-W48", now=WHEN)
    assert prepared.subject == "2 briefs, 23–29 novembre 2026 (2026-W48)"


@pytest.mark.parametrize("language", ["xx-nowhere", "english", "e"])
def test_a_language_without_date_formats_is_refused_naming_the_key(language):
    with pytest.raises(ConfigError, match=r"email\.language"):
        parse_config({"email": {"language": language}})


# -- the text part ---------------------------------------------------------------------------

JAPANESE = ("東京都は二十三日、蓄電池を使って電力需要のピークを抑え、家庭と企業の電気料金を下げる"
            "ための新しい送電網の実証実験を湾岸地区の変電所で始めると発表し、「再生可能エネル"
            "ギーの導入をさらに進めたい」と担当者は話した。")


def text_part(prepared) -> str:
    from bot.render.email import Recipient

    data = prepared.personalise(Recipient("reader@example.net"), message_id="<a@example.org>",
                                unsubscribe_url="https://example.org/u/x", date=WHEN,
                                unsubscribe_mailto=None)
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    return message.get_body(("plain",)).get_content().replace("\r\n", "\n")


def test_cjk_lines_in_the_text_part_are_wrapped_by_display_width(tmp_path):
    from wcwidth import wcswidth

    briefs = briefs_in(tmp_path, ("送電網の実証実験を始めると東京都が発表、蓄電池で需要のピークを"
                                  "抑えて料金を下げる狙い", JAPANESE),
                       ("A long English title that keeps going well past the width of one "
                        "line of text", "Short."))
    text = text_part(prepare_digest(settings_for(tmp_path, language="ja"), briefs,
                                    period_label="2026-W48", now=WHEN))
    lines = [line for line in text.splitlines() if "http" not in line]
    assert max(wcswidth(line) for line in lines) <= 72, max(lines, key=wcswidth)
    # Nothing lost or reordered: the wrapped summary reads back as the original.
    start = next(i for i, line in enumerate(lines) if line.startswith("  東京都"))
    joined = "".join(line.strip() for line in lines[start:start + 4])
    assert joined.startswith(JAPANESE)
    # Kinsoku: no line starts with closing punctuation.
    assert not [line for line in lines if line.strip()[:1] in set("、。」）")]
    # Wide lines are used, not wasted: a wrapped CJK line is nearly full.
    assert wcswidth(lines[start]) >= 68


# -- light and dark, in a real browser -------------------------------------------------------

CONTRAST = """(canvas => {
  const parse = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const channel = v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = c => 0.2126 * channel(c[0]) + 0.7152 * channel(c[1]) + 0.0722 * channel(c[2]);
  const background = el => { for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor); if (c && c[3] > 0) return c; }
    return canvas; };
  const seen = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, el = node.parentElement, style = getComputedStyle(el);
    if (!node.textContent.trim() || !el.getClientRects().length
        || style.visibility === 'hidden' || Number(style.opacity) === 0) continue;
    const fg = parse(style.color), bg = background(el);
    const a = lum(fg), b = lum(bg);
    seen.push([node.textContent.trim().slice(0, 40),
               (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05), style.color,
               'rgb(' + bg.slice(0, 3).join(',') + ')']);
  }
  return {texts: seen, body: lum(background(document.body))};
})(%s)"""


def test_the_delivered_digest_in_light_and_dark_at_phone_and_desktop_widths(project, tmp_path):
    """Chromium at 320, 375 and 600 px, light and dark: no horizontal scroll, every visible
    text at least 4.5:1 against what is behind it, and dark mode really dark."""
    from tests.chromium import chromium

    message = delivered(project, "en")
    html = message.get_body(("html",)).get_content()
    assert '<meta name="color-scheme" content="light dark"' in html
    assert "prefers-color-scheme: dark" in html
    path = tmp_path / "digest.html"
    path.write_text(html, encoding="utf-8")
    with chromium(tmp_path / "profile") as page:
        for scheme, canvas in (("light", "[255,255,255,1]"), ("dark", "[18,18,18,1]")):
            page.call("Emulation.setEmulatedMedia",
                      features=[{"name": "prefers-color-scheme", "value": scheme}])
            for width in (320, 375, 600):
                page.open(path.as_uri(), width=width)
                scroll, viewport = page.evaluate(
                    "[document.documentElement.scrollWidth, window.innerWidth]")
                assert scroll == viewport == width, (scheme, width, scroll)
                seen = page.evaluate(CONTRAST % canvas)
                texts = seen["texts"]
                assert any("Unsubscribe" in t[0] for t in texts)
                assert any("View in your browser" in t[0] for t in texts)
                low = [t for t in texts if t[1] < 4.5]
                assert not low, (scheme, width, low)
                if scheme == "dark":
                    assert seen["body"] < 0.05, seen["body"]  # a dark page, not the light one
                else:
                    assert seen["body"] > 0.8, seen["body"]
