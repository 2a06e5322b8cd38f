"""A project set up for digest tests: briefs in week 2026-W48, subscribers, an SMTP channel."""

from __future__ import annotations

import csv
from pathlib import Path

from bot.config import load_settings
from bot.ledger import Ledger
from bot.subscriber_csv import import_csv
from bot.subscribers import Subscribers
from tests.briefs_factory import write_brief, write_week
from tests.conftest import Project
from tests.smtp_server import SmtpServer

PERIOD = "2026-W48"  # Mon 23 Nov – Sun 29 Nov 2026
NOW = "2026-11-30T08:00:00Z"
TITLES = ("Grid storage pilot switched on", "Rail freight doubles", "New seed bank opens")
DAYS = (23, 25, 29)  # Monday, Wednesday and Sunday of PERIOD


def write_week_briefs(project: Project) -> None:
    """Three publishable briefs in the week, one the week before, one draft in the week."""
    write_week(project.briefs, len(DAYS), name=lambda n: f"w48-{DAYS[n]}.md",
               title=lambda n: TITLES[n], published_at=lambda n: f"2026-11-{DAYS[n]}T10:00:00Z")
    write_brief(project.briefs, "w47.md", title="Last week's news",
                published_at="2026-11-20T10:00:00Z")
    write_brief(project.briefs, "w48-draft.md", title="Not ready", status="draft",
                published_at="2026-11-24T10:00:00Z")


def smtp_project(project: Project, server: SmtpServer | None, *, extra_channel: str = "",
                 base_url: str = "http://127.0.0.1:8025", publish: str = "",
                 email: str = "", unknown_policy: str = "skip",
                 connections: int = 1) -> None:
    host, port = (server.host, server.port) if server else ("127.0.0.1", 1)
    project.write_config(
        extra=(f'[email]\nfrom_address = "Weekly <digest@example.org>"\n'
               f'base_url = "{base_url}"\n{email}\n'),
        publish=f'backfill = "all"\n{publish}',
        channels=(f'[channels.email]\ntype = "smtp"\nhost = "{host}"\nport = {port}\n'
                  f'security = "none"\nunknown_policy = "{unknown_policy}"\n'
                  f"connections = {connections}\ntimeout = 10\n{extra_channel}"),
    )


def address(number: int) -> str:
    return f"reader{number:05d}@example.net"


def add_subscribers(project: Project, count: int, *, start: int = 0) -> list[str]:
    """Import `count` active subscribers (every third has a name); returns their addresses."""
    path = project.root / f"subscribers-{start}.csv"
    emails = [address(n) for n in range(start, start + count)]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name"])
        for n, email in enumerate(emails, start):
            writer.writerow([email, f"Reader {n}" if n % 3 == 0 else ""])
    with subscriber_list(project) as subscribers:
        report = import_csv(subscribers, path)
    assert report.ok and report.added == count, report.summary()
    return emails


class subscriber_list:  # noqa: N801 - used as a context manager, like open()
    """The project's subscriber list, in this process."""

    def __init__(self, project: Project):
        self.settings = load_settings(project.config)
        self.ledger = Ledger(self.settings.database_url)

    def __enter__(self) -> Subscribers:
        return Subscribers(self.ledger)

    def __exit__(self, *exc: object) -> None:
        self.ledger.close()


def ledger_rows(project: Project, campaign_prefix: str = "digest:") -> list:
    settings = load_settings(project.config)
    ledger = Ledger(settings.database_url, readonly=True)
    try:
        return list(ledger.deliveries(campaign_prefix=campaign_prefix))
    finally:
        ledger.close()


def database_file(project: Project) -> Path:
    return project.root / "state" / "ledger.sqlite3"
