"""The web archive: every digest that went out, as its web version, an index and an Atom feed.

A digest went out when its period's row `(digest:PERIOD, "*", "")` in the sent-log is `sent`:
the daemon finishes that row after mailing a period, and `briefbot digest send` marks it the
same way. A period with no briefs sent nothing and is not listed. A single-brief email
(`email.single_brief_email`) went out when its `(brief:ID, CHANNEL, "")` row on a channel that
mails is `sent`.

Pages are rendered from the briefs as they are now (an edited brief shows its edit) by the same
templates as the email, with `web_version` set: every item whole, no "view in your browser"
link, and no unsubscribe link or any other recipient's detail, so a page is the same for
everyone. `briefbot serve` answers under `/archive/`; `briefbot archive export DIR` writes the
same files for any static web host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from bot.briefs import Brief, BriefReader
from bot.config import ConfigError, Settings
from bot.ledger import Ledger
from bot.plan import digest_briefs
from bot.render.email import (
    archive_url,
    brief_archive_url,
    digest_headline,
    render_brief_email,
    render_digest,
)
from bot.timing import Period, parse_period

FEED_NAME = "feed.atom"


@dataclass(frozen=True)
class Issue:
    """One digest that went out."""

    period: Period
    sent_at: datetime
    briefs: list[Brief]
    subject: str
    preheader: str

    @property
    def label(self) -> str:
        return self.period.label


class Archive:
    """What the archive holds, read once from the sent-log and the briefs folders."""

    def __init__(self, settings: Settings, ledger: Ledger):
        self.settings = settings
        scan = BriefReader.from_settings(settings).scan(settings.brief_folders)
        self._briefs = {b.id: b for b in scan.briefs}
        statuses = settings.config.briefs.published_statuses
        issues: list[Issue] = []
        # Recipient-less rows only: a mailing's per-subscriber rows are never read here.
        for campaign, row in ledger.for_channel("*", "digest:").items():
            if row.state != "sent":
                continue
            try:
                period = parse_period(campaign.removeprefix("digest:"), settings.tz)
            except ValueError:
                continue
            sent_at = row.sent_at or row.updated_at
            briefs = digest_briefs(scan.briefs, period, max(sent_at, period.end), statuses)
            if not briefs:
                continue  # an empty period: nothing went out
            subject, preheader = digest_headline(settings, briefs, period_label=period.label)
            issues.append(Issue(period, sent_at, briefs, subject, preheader))
        mailed_briefs = {
            campaign.removeprefix("brief:")
            for channel in _mailing_channels(settings)
            for campaign, row in ledger.for_channel(channel, "brief:").items()
            if row.state == "sent"
        }
        self.issues = sorted(issues, key=lambda i: i.period.start, reverse=True)
        self._by_label = {issue.label: issue for issue in self.issues}
        self._mailed = {i for i in mailed_briefs if i in self._briefs
                        and self._briefs[i].is_publishable(statuses)
                        and brief_archive_url(settings, i)}

    # -- pages ------------------------------------------------------------------------------

    def digest_page(self, label: str) -> str | None:
        issue = self._by_label.get(label)
        if issue is None:
            return None
        return render_digest(self.settings, issue.briefs, period_label=issue.label,
                             now=issue.sent_at, web=True).html

    def brief_page(self, brief_id: str) -> str | None:
        if brief_id not in self._mailed:
            return None
        brief = self._briefs[brief_id]
        return render_brief_email(self.settings, brief, now=brief.published_at
                                  or datetime.now(UTC), web=True).html

    def index_page(self) -> str:
        """Past issues, newest first; links are relative, so the page works wherever it is."""
        settings = self.settings
        email = settings.config.email
        name = escape(email.list_name)
        language = escape(email.language)
        rows = "".join(
            f'<li><a href="{escape(issue.label)}/">{escape(issue.subject)}</a>'
            f"<br><span>{escape(issue.preheader)}</span></li>\n"
            for issue in self.issues
        ) or "<li>No issue has gone out yet.</li>\n"
        subscribe = (f'<p><a href="{escape(email.base_url.rstrip("/"))}/subscribe">Subscribe'
                     "</a> to get it by email.</p>" if settings.config.web.subscribe_form else "")
        feed = escape(archive_url(settings) + FEED_NAME)
        return (
            f'<!doctype html>\n<html lang="{language}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="color-scheme" content="light dark">'
            f"<title>{name}: past issues</title>"
            f'<link rel="alternate" type="application/atom+xml" title="{name}" href="{feed}">'
            "<style>body{font:1.1rem/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;"
            "padding:0 1rem;color:#1f2328;background:#fff}a{color:#0b5cad}"
            "li{margin:0 0 1rem}span{color:#57606a;font-size:.95rem}"
            "@media (prefers-color-scheme: dark){body{color:#e6edf3;background:#0d1117}"
            "a{color:#58a6ff}span{color:#9da7b3}}</style></head><body><main>"
            f"<h1>{name}: past issues</h1>\n<ul>\n{rows}</ul>\n{subscribe}"
            f'<p><a href="{feed}">Atom feed</a></p></main></body></html>\n'
        )

    def feed(self) -> bytes:
        """The Atom feed of issues, newest first (feedgen writes and escapes it)."""
        from feedgen.feed import FeedGenerator

        settings = self.settings
        email = settings.config.email
        index = archive_url(settings)
        generator = FeedGenerator()
        generator.id(index)
        generator.title(email.list_name)
        generator.author({"name": email.list_name})
        generator.link(href=index, rel="alternate", type="text/html")
        generator.link(href=index + FEED_NAME, rel="self", type="application/atom+xml")
        generator.language(email.language)
        generator.generator("briefbot")
        newest = self.issues[0].sent_at if self.issues else datetime(2000, 1, 1, tzinfo=UTC)
        generator.updated(newest)
        for issue in reversed(self.issues):  # feedgen puts the last added first
            url = archive_url(settings, issue.label)
            entry = generator.add_entry()
            entry.id(url)
            entry.title(issue.subject)
            entry.link(href=url, rel="alternate", type="text/html")
            entry.published(issue.sent_at)
            entry.updated(issue.sent_at)
            entry.summary(issue.preheader)
            entry.content(_entry_html(issue), type="html")
        return generator.atom_str(pretty=True)

    # -- export -----------------------------------------------------------------------------

    def export(self, folder: Path) -> list[Path]:
        """Write `index.html`, `feed.atom` and `PERIOD/index.html` (and `briefs/ID/index.html`)
        into `folder`, which then serves as `email.base_url/archive/` on any web host."""
        written = [_write(folder / "index.html", self.index_page().encode("utf-8")),
                   _write(folder / FEED_NAME, self.feed())]
        for issue in self.issues:
            page = self.digest_page(issue.label) or ""
            written.append(_write(folder / issue.label / "index.html", page.encode("utf-8")))
        for brief_id in sorted(self._mailed):
            page = self.brief_page(brief_id) or ""
            target = folder / "briefs" / brief_id / "index.html"
            written.append(_write(target, page.encode("utf-8")))
        return written



def _entry_html(issue: Issue) -> str:
    items = "".join(
        f'<li><a href="{escape(b.source_url or "")}">{escape(b.title or b.id)}</a>'
        + (f"<br>{escape(b.summary)}" if b.summary else "") + "</li>"
        for b in issue.briefs
    )
    return f"<p>{escape(issue.preheader)}</p><ul>{items}</ul>"


def _mailing_channels(settings: Settings) -> set[str]:
    """Channels that mail single briefs (`email.single_brief_email`): those that fan a brief
    out to the subscribers (SMTP, the batch providers)."""
    if not settings.config.email.single_brief_email:
        return set()
    return {name for name, channel in settings.config.channels.items()
            if _fans_out(channel.type)}


def _fans_out(type_name: str) -> bool:
    from bot.channels import load_channel_class

    try:
        return load_channel_class(type_name).fans_out
    except ConfigError:  # a plugin that is not installed mails nothing here
        return False


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return path
