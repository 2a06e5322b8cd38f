"""Sending the digest: real SMTP server (aiosmtpd) on loopback, the real CLI, the real ledger."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

import pytest

from bot.config import load_settings
from bot.ledger import DeliveryKey
from bot.mailing import DigestReport
from bot.render.email import message_id_for
from bot.timing import parse_period, period_containing, period_for
from bot.tokens import read_token
from tests.digest_setup import (
    NOW,
    PERIOD,
    TITLES,
    add_subscribers,
    address,
    ledger_rows,
    smtp_project,
    subscriber_list,
    write_week_briefs,
)
from tests.smtp_server import Mailbox, free_port, smtp_server

# The subject names the week's days as written in `email.language` (en), by CLDR's pattern.
SUBJECT = "The weekly brief: November 23 – 29, 2026"

# -- periods --------------------------------------------------------------------------------


def test_the_period_is_the_iso_week_in_the_configured_zone():
    tz = ZoneInfo("Pacific/Auckland")
    period = parse_period("2026-W48", tz)
    assert period.start == datetime(2026, 11, 23, tzinfo=tz)
    assert period.end == datetime(2026, 11, 30, tzinfo=tz)
    # Sunday 20:00 UTC is already Monday morning in Auckland: the next week there.
    sunday_evening = datetime(2026, 11, 29, 20, 0, tzinfo=UTC)
    assert period_containing(sunday_evening, tz).label == "2026-W49"
    assert period_containing(sunday_evening, ZoneInfo("UTC")).label == "2026-W48"


def test_period_for_is_the_period_that_just_closed():
    monday = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert period_for(monday, ZoneInfo("UTC")).label == "2026-W48"
    assert period_for(datetime(2027, 1, 4, 8, 0, tzinfo=UTC), ZoneInfo("UTC")).label == "2026-W53"
    daily = period_for(monday, ZoneInfo("UTC"), days=1)
    assert daily.label == "2026-11-29" and parse_period(daily.label) == daily
    fortnight = period_for(monday, ZoneInfo("UTC"), days=14)
    assert parse_period(fortnight.label) == fortnight
    assert fortnight.end - fortnight.start == parse_period("2026-11-02+14d").end - \
        parse_period("2026-11-02+14d").start


def test_recipients_another_process_claimed_keep_the_period_open():
    """A claim taken by another instance during this run may die with that instance: only a
    run that finds every recipient settled may mark the period done (the daemon then stops
    sending it)."""
    report = DigestReport(period=parse_period("2026-W48"), now=datetime.now(UTC))
    report.add(Counter(sent=5, already=3), [], 0)
    assert report.pending == 0
    report.add(Counter(elsewhere=1), [], 0)
    assert report.pending == 1


def test_a_week_across_a_dst_change_is_seven_calendar_days():
    tz = ZoneInfo("Europe/Berlin")
    week = parse_period("2026-W43", tz)  # clocks go back on Sunday 25 October
    assert (week.start.hour, week.end.hour) == (0, 0)
    assert (week.end.astimezone(UTC) - week.start.astimezone(UTC)).total_seconds() == (
        7 * 86400 + 3600)
    assert period_containing(datetime(2026, 10, 25, 22, 59, tzinfo=UTC), tz).label == "2026-W43"
    assert period_containing(datetime(2026, 10, 25, 23, 0, tzinfo=UTC), tz).label == "2026-W44"


@pytest.mark.parametrize("text", ["2026-48", "2026-W54", "last week", "2026-02-30"])
def test_a_bad_period_says_how_to_write_one(text):
    with pytest.raises(ValueError, match="period"):
        parse_period(text)


# -- the digest through SMTP ---------------------------------------------------------------


def _unsubscribe_link(message) -> str:
    header = str(message["List-Unsubscribe"])
    found = re.search(r"<(http[^>]+)>", header)
    assert found, header
    return found.group(1)


def test_five_hundred_subscribers_each_get_their_own_digest_then_one_click_unsubscribes(
        project, tmp_path):
    web_port = free_port()
    base_url = f"http://127.0.0.1:{web_port}"
    write_week_briefs(project)
    with smtp_server() as server:
        smtp_project(project, server, base_url=base_url)
        emails = add_subscribers(project, 500)
        result = project.cli("digest", "send", "--period", PERIOD, "--now", NOW)
        assert result.returncode == 0, result.stderr
        assert "500 sent" in result.stdout
        received = server.mailbox.received()

    settings = load_settings(project.config)
    assert sorted(r for m in received for r in m.rcpt_tos) == emails
    message_ids = set()
    links = {}
    for item in received:
        message = item.parse()
        recipient = item.rcpt_tos[0]
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        assert message["To"].addresses[0].addr_spec == recipient
        assert message["Subject"] == SUBJECT
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = _unsubscribe_link(message)
        assert link.startswith(f"{base_url}/unsubscribe/")
        assert read_token(settings, "unsubscribe", link.rsplit("/", 1)[1]) == recipient
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert link in text and link.replace("&", "&amp;") in html
        assert all(title in html and title in text for title in TITLES)
        assert "Last week's news" not in html and "Not ready" not in html
        expected_id = message_id_for(DeliveryKey(f"digest:{PERIOD}", "email", recipient),
                                     "example.org")
        assert message["Message-ID"] == expected_id
        message_ids.add(message["Message-ID"])
        assert parsedate_to_datetime(message["Date"]) == datetime(2026, 11, 30, 8, tzinfo=UTC)
        links[recipient] = link
    assert len(message_ids) == 500

    leaving = address(7)
    serve = subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(project.config), "serve",
         "--port", str(web_port)],
        cwd=project.root, env=project.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner = serve.stderr.readline()  # bounded: the child exits (EOF) if it cannot start
        assert "serving on" in banner, banner
        request = urllib.request.Request(
            links[leaving], data=b"List-Unsubscribe=One-Click", method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    finally:
        serve.terminate()
        serve.wait(timeout=10)
    with subscriber_list(project) as subscribers:
        assert subscribers.get(leaving).state == "unsubscribed"
        assert subscribers.is_active(address(8))

    # The next week's digest leaves them out.
    from tests.briefs_factory import write_brief

    write_brief(project.briefs, "w49.md", title="Next week", published_at="2026-12-01T10:00:00Z")
    with smtp_server() as server:
        smtp_project(project, server, base_url=base_url)
        result = project.cli("digest", "send", "--period", "2026-W49",
                             "--now", "2026-12-07T08:00:00Z")
        assert result.returncode == 0, result.stderr
        later = server.mailbox.per_recipient()
    assert leaving not in later
    assert len(later) == 499 and set(later.values()) == {1}


def test_starttls_and_login_and_a_wrong_password_named_never_shown(project, tmp_path):
    from tests.smtp_server import TestCertificates

    certificates = TestCertificates.create(tmp_path / "tls")
    write_week_briefs(project)
    secret = "s3cret-smtp-password"
    with smtp_server(tls=certificates, credentials=("digest", secret)) as server:
        smtp_project(project, server, extra_channel=(
            'username_env = "DIGEST_SMTP_USER"\npassword_env = "DIGEST_SMTP_PASSWORD"\n'
            f'ca_file = "{certificates.ca_file}"\n'
        ))
        text = project.config.read_text().replace('security = "none"', 'security = "starttls"')
        project.config.write_text(text)
        add_subscribers(project, 30)

        wrong = project.cli("digest", "send", "--period", PERIOD, "--now", NOW,
                            env={"DIGEST_SMTP_USER": "digest",
                                 "DIGEST_SMTP_PASSWORD": "not-the-" + secret})
        assert wrong.returncode == 1
        output = wrong.stdout + wrong.stderr
        assert "DIGEST_SMTP_PASSWORD" in output and "DIGEST_SMTP_USER" in output
        assert "not-the-" + secret not in output
        assert server.mailbox.count() == 0
        assert not [r for r in ledger_rows(project) if r.state == "dead"]

        right = project.cli("digest", "send", "--period", PERIOD, "--now", NOW, "--json",
                            env={"DIGEST_SMTP_USER": "digest", "DIGEST_SMTP_PASSWORD": secret})
        assert right.returncode == 0, right.stdout + right.stderr
        report = json.loads(right.stdout)
        assert report["counts"]["sent"] == 30
        assert report["stats"]["tls_handshakes"] == 1
        assert server.mailbox.per_recipient() == {address(n): 1 for n in range(30)}
        assert secret not in right.stdout + right.stderr


def test_refused_deferred_and_dropped_recipients(project):
    write_week_briefs(project)
    gone, busy = address(3), address(5)
    mailbox = Mailbox(refuse={gone: 550, busy: 451}, drop_before_data={9})
    with smtp_server(mailbox) as server:
        smtp_project(project, server, publish='retry_base = "0s"')
        emails = add_subscribers(project, 20)
        first = project.cli("digest", "send", "--period", PERIOD, "--now", NOW, "--json")
        assert first.returncode == 1
        report = json.loads(first.stdout)
        assert report["counts"] == {"sent": 18, "dead": 1, "failed": 1}
        assert report["bounced"] == 1
        assert mailbox.per_recipient() == {e: 1 for e in emails if e not in (gone, busy)}
        assert mailbox.connections == 2  # the dropped connection was replaced
        states = {r.key.recipient: r.state for r in ledger_rows(project)}
        assert (states[gone], states[busy]) == ("dead", "failed")
        with subscriber_list(project) as subscribers:
            assert subscribers.get(gone).state == "bounced"
            assert subscribers.get(busy).state == "active"

        # A 451 is retried on the next run; still deferred twice more, it counts as bounced.
        for run in (2, 3):
            again = json.loads(project.cli("digest", "send", "--period", PERIOD, "--now", NOW,
                                           "--json").stdout)
            assert again["counts"] == {"already": 18, "failed": 1}, run
        with subscriber_list(project) as subscribers:
            assert subscribers.get(busy).state == "bounced"
            subscribers.add(busy, force=True)  # the operator puts them back
        del mailbox.refuse[busy]
        last = project.cli("digest", "send", "--period", PERIOD, "--now", NOW, "--json")
        assert last.returncode == 0, last.stdout
        assert json.loads(last.stdout)["counts"] == {"sent": 1, "already": 18}  # gone: bounced
        assert mailbox.per_recipient()[busy] == 1
        assert gone not in mailbox.per_recipient()


@pytest.mark.parametrize("policy", ["skip", "resend"])
def test_a_reply_lost_after_the_data_follows_the_unknown_policy(project, policy):
    write_week_briefs(project)
    mailbox = Mailbox(drop_before_reply={4})
    with smtp_server(mailbox) as server:
        smtp_project(project, server, unknown_policy=policy)
        add_subscribers(project, 10)
        result = project.cli("digest", "send", "--period", PERIOD, "--now", NOW, "--json")
        counts = mailbox.per_recipient()
        lost = address(3)  # the fourth message
        again = project.cli("digest", "send", "--period", PERIOD, "--now", NOW, "--json")
        later = (datetime.fromisoformat(NOW) + timedelta(hours=1)).isoformat()
        after_backoff = project.cli("digest", "send", "--period", PERIOD, "--now", later,
                                    "--json")
        copies = [m for m in mailbox.received() if m.rcpt_tos == (lost,)]
    report = json.loads(result.stdout)
    if policy == "skip":
        assert result.returncode == 1
        assert report["counts"] == {"sent": 9, "unknown": 1}
        assert counts[lost] == 1 and len(copies) == 1  # never resent
        assert json.loads(again.stdout)["counts"] == {"already": 9, "unknown": 1}
        status = json.loads(project.cli("status", "--json").stdout)
        assert status["attention"][0]["state"] == "unknown"
        assert status["attention"][0]["recipient"] == lost
        assert status["mailings"][0]["unknown"] == 1
    else:
        # Resent, but like a retry: never in the same run, after the backoff, bounded.
        assert result.returncode == 1, result.stdout
        assert report["counts"] == {"sent": 9, "unknown": 1}
        assert json.loads(again.stdout)["counts"] == {"already": 9, "queued": 1}
        assert json.loads(after_backoff.stdout)["counts"] == {"already": 9, "sent": 1}
        assert after_backoff.returncode == 0
        assert len(copies) == 2  # the resend; recognisable as the same message
        assert len({c.parse()["Message-ID"] for c in copies}) == 1
    assert set(counts) == {address(n) for n in range(10)}


def test_an_empty_period_sends_nothing_and_says_so(project):
    write_week_briefs(project)
    with smtp_server() as server:
        smtp_project(project, server)
        add_subscribers(project, 5)
        result = project.cli("digest", "send", "--period", "2026-W40", "--now", NOW)
        assert result.returncode == 0
        assert "no publishable briefs in 2026-W40" in result.stdout
        assert "nothing to send" in result.stdout
        assert server.mailbox.count() == 0
    assert ledger_rows(project) == []


def test_dry_run_renders_and_counts_but_sends_and_writes_nothing(project):
    write_week_briefs(project)
    with smtp_server() as server:
        smtp_project(project, server)
        add_subscribers(project, 12)
        result = project.cli("digest", "send", "--period", PERIOD, "--now", NOW, "--dry-run")
        assert result.returncode == 0, result.stderr
        assert f"subject: {SUBJECT}" in result.stdout
        assert "12 would-send" in result.stdout
        assert re.search(r"size:\s+[\d,]+ bytes per message", result.stdout)
        assert server.mailbox.count() == 0
        data = json.loads(project.cli("digest", "send", "--period", PERIOD, "--now", NOW,
                                      "--dry-run", "--json").stdout)
        assert data["counts"] == {"would-send": 12} and data["size"] > 5000
        assert len(data["briefs"]) == 3
    assert ledger_rows(project) == []


def test_to_sends_one_test_copy_and_leaves_the_ledger_alone(project):
    write_week_briefs(project)
    with smtp_server() as server:
        smtp_project(project, server)
        add_subscribers(project, 5)
        result = project.cli("digest", "send", "--period", PERIOD, "--now", NOW,
                             "--to", "editor@example.com")
        assert result.returncode == 0, result.stderr
        assert "test copy" in result.stdout
        received = server.mailbox.received()
    assert [m.rcpt_tos for m in received] == [("editor@example.com",)]
    assert received[0].parse()["Subject"] == SUBJECT
    assert ledger_rows(project) == []


def test_the_default_outbox_channel_writes_one_eml_per_subscriber_once(project):
    write_week_briefs(project)
    emails = add_subscribers(project, 6)
    first = project.cli("digest", "send", "--period", PERIOD, "--now", NOW)
    assert first.returncode == 0, first.stderr
    second = project.cli("digest", "send", "--period", PERIOD, "--now", NOW)
    assert "6 already" in second.stdout
    files = sorted((project.root / "outbox" / "outbox").glob("*.eml"))
    assert len(files) == 6
    from email.parser import BytesParser
    from email.policy import default

    recipients = sorted(BytesParser(policy=default).parsebytes(f.read_bytes())["To"]
                        .addresses[0].addr_spec for f in files)
    assert recipients == emails
    status = json.loads(project.cli("status", "--json").stdout)
    assert status["mailings"] == [{
        "campaign": f"digest:{PERIOD}", "channel": "outbox", "recipients": 6, "unknown": 0,
        "dead": 0, "claimed": 0, "failed": 0, "sent": 6, "skipped": 0, "bounces": 0,
        "complaints": 0, "bounce_rate": 0.0, "complaint_rate": 0.0, "warnings": []}]


def test_an_address_unsubscribed_during_a_send_is_not_mailed(project):
    """Checked again right before each claim, not only when the list was read."""
    from bot.digest import send_digest

    write_week_briefs(project)
    late = address(150)
    with smtp_server() as server:
        smtp_project(project, server)
        add_subscribers(project, 200)
        settings = load_settings(project.config)

        def stop_after_unsubscribing() -> bool:
            if server.mailbox.count() == 20:
                with subscriber_list(project) as subscribers:
                    subscribers.unsubscribe(late)
            return False

        report = send_digest(settings, PERIOD, now=datetime(2026, 11, 30, 8, tzinfo=UTC),
                             progress=False, should_stop=stop_after_unsubscribing)
        received = server.mailbox.per_recipient()
    assert report.counts["sent"] == 199 and report.counts["unsubscribed"] == 1
    assert late not in received and len(received) == 199


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_parallel_connections_and_two_processes_share_the_work(project, database, request,
                                                               monkeypatch):
    env = dict(project.env)
    if database == "postgresql":  # as two machines would, on one shared ledger
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("BRIEFBOT_DATABASE_URL", url)
        env["BRIEFBOT_DATABASE_URL"] = url
    write_week_briefs(project)
    with smtp_server() as server:
        smtp_project(project, server, connections=3)
        emails = add_subscribers(project, 600)
        command = [sys.executable, "-m", "bot", "--config", str(project.config), "digest",
                   "send", "--period", PERIOD, "--now", NOW, "--json"]
        runs = [subprocess.Popen(command, cwd=project.root, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
        outputs = [run.communicate(timeout=120) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        received = server.mailbox.per_recipient()
        connections = server.mailbox.connections
    reports = [json.loads(out) for out, _ in outputs]
    assert received == {e: 1 for e in emails}
    assert sum(r["counts"].get("sent", 0) for r in reports) == 600
    assert 3 <= connections <= 6  # three per process, opened by the threads that sent
    assert {r.state for r in ledger_rows(project)} == {"sent"}


def test_each_brief_mailed_to_subscribers_when_single_brief_email_is_on(project):
    write_week_briefs(project)
    with smtp_server() as server:
        smtp_project(project, server, email="single_brief_email = true")
        emails = add_subscribers(project, 8)
        first = project.cli("run", "--once", "--now", NOW)
        assert first.returncode == 0, first.stdout + first.stderr
        again = project.cli("run", "--once", "--now", NOW)
        assert again.returncode == 0
        received = server.mailbox.received()
    subjects = {}
    for item in received:
        subjects.setdefault(item.parse()["Subject"], []).append(item.rcpt_tos[0])
    # Every publishable brief (the week before's too), each to every subscriber, once.
    assert sorted(subjects) == sorted([*TITLES, "Last week's news"])
    assert all(sorted(to) == emails for to in subjects.values())
    rows = ledger_rows(project, "brief:")
    assert {r.state for r in rows} == {"sent"}
    assert len([r for r in rows if not r.key.recipient]) == 4  # the publisher's, per brief
