"""The Mailgun adapter end to end: `digest send` through the real adapter, the real mailing and
sent-log, against the fake messages API (tests/fakes/mailgun_api.py, built from Mailgun's
published reference) over loopback."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

import pytest

from bot.config import load_settings
from bot.digest import send_digest
from tests.email.digest_setup import NOW, PERIOD, add_subscribers, ledger_rows, write_week_briefs
from tests.fakes.mailgun_api import FakeMailgun

KEY = "key-test-0123456789abcdef0123456789"
DOMAIN = "mg.example.org"
WHEN = datetime.fromisoformat(NOW.replace("Z", "+00:00"))


@pytest.fixture
def mailgun(monkeypatch):
    monkeypatch.setenv("MAILGUN_TEST_KEY", KEY)
    with FakeMailgun(KEY, DOMAIN) as fake:
        yield fake


def mailgun_project(project, fake, *, batch_size: int = 100, extra: str = "",
                    publish: str = "") -> None:
    project.write_config(
        extra=('[email]\nfrom_address = "Weekly <digest@example.org>"\n'
               'base_url = "https://news.example.org"\n'),
        publish=f'backfill = "all"\n{publish}',
        channels=(f'[channels.mg]\ntype = "mailgun"\ndomain = "{DOMAIN}"\n'
                  f'api_base = "{fake.url}"\napi_key_env = "MAILGUN_TEST_KEY"\n'
                  f'batch_size = {batch_size}\nconnections = 2\ntimeout = 5\n'
                  f'tags = ["digest"]\n{extra}'))


def send(project):
    return send_digest(load_settings(project.config), PERIOD, now=WHEN, progress=False)


def test_a_digest_goes_out_in_batches_with_each_recipients_own_links(project, mailgun):
    write_week_briefs(project)
    mailgun_project(project, mailgun, batch_size=100)
    emails = add_subscribers(project, 250)

    report = send(project)

    assert report.counts["sent"] == 250 and not report.failed, report.summary()
    calls = mailgun.seen("POST", rf"/v3/{DOMAIN}/messages")
    assert len(calls) == 3  # 100 + 100 + 50
    got = {d.to: d for d in mailgun.delivered}
    assert sorted(got) == sorted(emails)
    one = got[emails[3]]
    assert one.display == f"Reader 3 <{emails[3]}>"
    assert "%recipient" not in one.html + one.text + "".join(one.headers.values())
    # each copy carries its own unsubscribe link, in both bodies and the header
    link = one.headers["List-Unsubscribe"].strip("<>")
    assert link.startswith("https://news.example.org/unsubscribe/")
    assert link in one.text and link in one.html
    assert link not in got[emails[4]].text
    assert one.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert one.tags == ["digest"]
    # every recipient's receipt keeps the id of the call that carried it
    rows = {r.key.recipient: r for r in ledger_rows(project)}
    assert {rows[e].state for e in emails} == {"sent"}
    assert {rows[e].remote_id for e in emails} == {d.id for d in mailgun.delivered}
    assert all(rows[e].remote_id == got[e].id for e in emails)
    # a second run sends nothing again
    again = send(project)
    assert again.counts["already"] == 250 and not again.counts["sent"]
    assert len(mailgun.delivered) == 250


def test_a_refused_address_does_not_fail_the_batch(project, mailgun):
    write_week_briefs(project)
    mailgun_project(project, mailgun, batch_size=50)
    emails = add_subscribers(project, 50)
    mailgun.invalid.add(emails[17])

    report = send(project)

    assert report.counts["sent"] == 49 and report.counts["dead"] == 1, report.summary()
    assert sorted(d.to for d in mailgun.delivered) == sorted(set(emails) - {emails[17]})
    rows = {r.key.recipient: r for r in ledger_rows(project)}
    assert rows[emails[17]].state == "dead"
    assert "not a valid address" in rows[emails[17]].last_error
    assert report.bounced == 1  # a refused address is a hard bounce (email.hard_bounces = 1)


def test_429_with_retry_after_is_waited_out_and_the_batch_sent_once(project, mailgun):
    write_week_briefs(project)
    mailgun_project(project, mailgun, batch_size=40)
    emails = add_subscribers(project, 40)
    mailgun.fail_next(429, body={"message": "Too many requests"}, headers={"Retry-After": "1"})

    report = send(project)

    assert report.counts["sent"] == 40 and not report.failed, report.summary()
    assert len(mailgun.seen("POST")) == 2  # refused once, then accepted
    assert Counter(d.to for d in mailgun.delivered) == Counter(emails)


def test_a_timeout_after_the_body_went_out_is_unknown_then_resent_by_the_policy(
        project, mailgun):
    write_week_briefs(project)
    mailgun_project(project, mailgun, batch_size=30)
    emails = add_subscribers(project, 30)
    mailgun.stall_next(6)  # longer than the adapter's 5 s timeout: the work is done, no answer

    first = send(project)

    assert first.counts["unknown"] == 30 and first.failed, first.summary()
    rows = {r.key.recipient: r for r in ledger_rows(project)}
    assert {rows[e].state for e in emails} == {"unknown"}
    # the default policy for email is resend: a later run sends the batch again
    due = max(r.next_attempt_at for r in rows.values())
    later = send_digest(load_settings(project.config), PERIOD, now=due, progress=False)
    assert later.counts["sent"] == 30, later.summary()
    assert Counter(d.to for d in mailgun.delivered) == Counter({e: 2 for e in emails})
    rows = {r.key.recipient: r for r in ledger_rows(project)}
    assert {rows[e].state for e in emails} == {"sent"}


def test_a_wrong_key_stops_the_run_and_names_the_variable(project, mailgun, monkeypatch):
    write_week_briefs(project)
    mailgun_project(project, mailgun, batch_size=10)
    add_subscribers(project, 30)
    monkeypatch.setenv("MAILGUN_TEST_KEY", "key-wrong-wrong-wrong-wrong")

    report = send(project)

    assert report.stopped and "MAILGUN_TEST_KEY" in report.stopped
    assert "key-wrong" not in json.dumps(report.as_dict())
    assert not mailgun.delivered
    assert report.counts["sent"] == 0 and report.pending == 30, report.summary()


def test_the_options_are_checked(project, mailgun):
    mailgun_project(project, mailgun, extra='region = "mars"\n')
    out = project.cli("check")
    assert out.returncode == 2
    assert "channels.mg.region" in out.stderr + out.stdout
    write_week_briefs(project)
    mailgun_project(project, mailgun)
    add_subscribers(project, 3)
    env = {k: v for k, v in project.env.items() if k != "MAILGUN_TEST_KEY"}
    project.env = env
    out = project.cli("digest", "send", "--period", PERIOD, "--now", NOW)
    assert out.returncode == 2 and "MAILGUN_TEST_KEY" in out.stderr



def test_a_bounce_webhook_naming_mailguns_id_finds_the_campaign(project, mailgun, monkeypatch):
    """Mailgun names its own id (one per call) in events; with the recipient, the sent-log's
    receipts say which campaign bounced."""
    import hashlib
    import hmac
    import time

    from sqlalchemy import select

    from bot import webhooks
    from bot.bounce_applying import mail_reports
    from bot.ledger import Ledger
    from bot.subscribers import Subscribers

    write_week_briefs(project)
    mailgun_project(project, mailgun, batch_size=10)
    emails = add_subscribers(project, 10)
    assert send(project).counts["sent"] == 10
    target = next(d for d in mailgun.delivered if d.to == emails[4])
    stamp, token = str(int(time.time())), "b" * 50
    signing = b"key-signing-0123456789"
    event = {"id": "ev-9", "event": "failed", "severity": "temporary", "reason": "generic",
             "recipient": target.to,
             "delivery-status": {"code": 452, "description": "mailbox full"},
             "message": {"headers": {"message-id": target.id.strip("<>")}}}
    body = json.dumps({"signature": {"timestamp": stamp, "token": token, "signature": hmac.new(
        signing, (stamp + token).encode(), hashlib.sha256).hexdigest()},
        "event-data": event}).encode()
    settings = load_settings(project.config)
    ledger = Ledger(settings.database_url)
    try:
        answer = webhooks.mailgun(settings, Subscribers(ledger), signing, body)
        assert answer.status == 200, answer
        with ledger.engine.connect() as conn:
            rows = conn.execute(select(mail_reports.c.email, mail_reports.c.campaign)).all()
    finally:
        ledger.close()
    assert [tuple(r) for r in rows] == [(emails[4], f"digest:{PERIOD}")]
