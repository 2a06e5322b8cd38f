"""The Amazon SES channel, driven by `briefbot digest send` against moto's SES server on
loopback (tests/servers/moto_ses.py): SendBulkEmail with one template and each recipient's link, or
each complete message through SendEmail; per-destination results, throttling, a late answer."""

from __future__ import annotations

import email
from collections import Counter
from datetime import datetime, timedelta

import pytest

from bot.channels import open_channels
from bot.config import load_settings
from tests.briefs_factory import write_brief
from tests.email.digest_setup import NOW, add_subscribers, address, ledger_rows, subscriber_list
from tests.email.provider_setup import provider_project, send
from tests.servers.moto_ses import MotoSes

ENV = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-4c1e"}
BULK = "/v2/email/outbound-bulk-emails"
RAW = "/v2/email/outbound-emails"


def channel(ses: MotoSes, extra: str = "", timeout: float = 10) -> str:
    return (f'[channels.ses]\ntype = "ses"\nregion = "{ses.region}"\n'
            f'endpoint_url = "{ses.url}"\ntimeout = {timeout}\n{extra}')


def raw_recipients(ses: MotoSes) -> Counter[str]:
    """Who got a raw message, read from the To header moto stored."""
    return Counter(email.utils.parseaddr(email.message_from_string(m["raw_data"])["To"])[1]
                   for m in ses.raw_messages())


def bulk_recipients(ses: MotoSes) -> Counter[str]:
    return Counter(email.utils.parseaddr(m["Destination"]["ToAddresses"][0])[1]
                   for m in ses.bridge.bulk_sent)


def test_bulk_sends_50_a_call_from_one_template_each_recipient_recorded_with_ses_id(
        project, moto_ses):
    provider_project(project, channel(moto_ses))
    emails = add_subscribers(project, 120)
    code, report = send(project, ENV)
    assert code == 0, report
    assert report["counts"] == {"sent": 120}
    assert sorted(len(c["BulkEmailEntries"]) for c in moto_ses.bridge.bulk_calls) == [
        20, 50, 50]
    assert moto_ses.calls("GET", "/v2/email/account") == 1  # the send rate, read once
    assert bulk_recipients(moto_ses) == {e: 1 for e in emails}
    stored = {m["id"] for m in moto_ses.messages()["Message"]}  # moto's own record
    assert len(stored) == 120

    call = moto_ses.bridge.bulk_calls[0]
    template = call["DefaultContent"]["Template"]
    assert "{{unsubscribe_url}}" in template["TemplateContent"]["Html"]
    assert call["FromEmailAddress"] == "Weekly <digest@example.org>"
    by_address = {email.utils.parseaddr(m["Destination"]["ToAddresses"][0])[1]: m
                  for m in moto_ses.bridge.bulk_sent}
    one = by_address[address(3)]
    headers = {h["Name"]: h["Value"] for h in one["Headers"]}
    link = headers["List-Unsubscribe"].strip("<>")
    assert link.startswith("http://127.0.0.1:8025/unsubscribe/")
    assert link in one["Text"] and link in one["Html"]
    assert link not in by_address[address(4)]["Html"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert one["Destination"]["ToAddresses"] == [f"Reader 3 <{address(3)}>"]

    rows = {r.key.recipient: r for r in ledger_rows(project)}
    assert {e: rows[e].remote_id for e in emails} == {
        e: by_address[e]["MessageId"] for e in emails}
    assert {rows[e].remote_id for e in emails} <= stored

    code, again = send(project, ENV)
    assert (code, again["counts"]) == (0, {"already": 120})
    assert len(moto_ses.bridge.bulk_calls) == 3


def test_raw_mode_sends_each_complete_message_with_its_message_id(project, moto_ses):
    provider_project(project, channel(moto_ses, 'mode = "raw"\nbatch_size = 4\n'))
    emails = add_subscribers(project, 10)
    code, report = send(project, ENV)
    assert code == 0, report
    assert report["counts"] == {"sent": 10}
    assert moto_ses.calls("POST", RAW) == 10 and moto_ses.calls("POST", BULK) == 0
    assert raw_recipients(moto_ses) == {e: 1 for e in emails}
    messages = {m["id"]: email.message_from_string(m["raw_data"])
                for m in moto_ses.raw_messages()}
    rows = {r.key.recipient: r for r in ledger_rows(project) if r.key.recipient}
    assert set(rows) == set(emails)
    for recipient, row in rows.items():
        message = messages[row.remote_id]  # the id SES answered is the one recorded
        assert email.utils.parseaddr(message["To"])[1] == recipient
        assert message["Message-ID"].endswith("@example.org>")
        assert message["List-Unsubscribe"].startswith("<http://127.0.0.1:8025/unsubscribe/")


def test_an_email_holding_template_braces_goes_out_raw(project, moto_ses):
    provider_project(project, channel(moto_ses))
    write_brief(project.briefs, "w48-braces.md", title="Why {{handlebars}} templates leak",
                published_at="2026-11-26T10:00:00Z")
    emails = add_subscribers(project, 3)
    code, report = send(project, ENV)
    assert (code, report["counts"]) == (0, {"sent": 3})
    assert moto_ses.calls("POST", BULK) == 0
    assert raw_recipients(moto_ses) == {e: 1 for e in emails}
    subjects = {email.message_from_string(m["raw_data"])["Subject"]
                for m in moto_ses.raw_messages()}
    assert len(subjects) == 1


@pytest.mark.parametrize("mode", ["bulk", "raw"])
def test_a_rejected_address_is_refused_alone_as_a_hard_bounce(project, moto_ses, mode):
    provider_project(project, channel(moto_ses, f'mode = "{mode}"\nbatch_size = 4\n'))
    emails = add_subscribers(project, 10)
    gone = address(5)
    moto_ses.refuse(gone)
    code, report = send(project, ENV)
    assert code == 1
    assert report["counts"] == {"sent": 9, "dead": 1}
    assert report["bounced"] == 1 and report["errors"][0]["recipient"] == gone
    received = bulk_recipients(moto_ses) if mode == "bulk" else raw_recipients(moto_ses)
    assert received == {e: 1 for e in emails if e != gone}
    with subscriber_list(project) as subscribers:
        assert subscribers.get(gone).state == "bounced"


@pytest.mark.parametrize("mode", ["bulk", "raw"])
def test_throttling_is_waited_out_and_nobody_gets_two_copies(project, moto_ses, mode):
    # max_rate set: GetAccount is not asked, so the throttled call is a send.
    provider_project(project, channel(moto_ses, f'mode = "{mode}"\nmax_rate = 100000\n'))
    emails = add_subscribers(project, 12)
    moto_ses.throttle_next(1)
    code, report = send(project, ENV)
    assert code == 0, report
    assert report["counts"] == {"sent": 12}
    path = BULK if mode == "bulk" else RAW
    assert moto_ses.calls("POST", path) == (2 if mode == "bulk" else 13)
    received = bulk_recipients(moto_ses) if mode == "bulk" else raw_recipients(moto_ses)
    assert received == {e: 1 for e in emails}


@pytest.mark.parametrize("policy", ["resend", "skip"])
def test_an_answer_later_than_the_timeout_leaves_the_batch_unknown_settled_by_policy(
        project, moto_ses, policy):
    provider_project(project, channel(moto_ses, f'unknown_policy = "{policy}"\n'
                                                "batch_size = 5\nconnections = 1\n",
                                      timeout=0.5))
    emails = add_subscribers(project, 10)
    moto_ses.slow_next(1.5)  # the first batch is sent; its answer comes too late
    code, report = send(project, ENV)
    assert code == 1
    assert report["counts"] == {"sent": 5, "unknown": 5}
    lost = {r.key.recipient for r in ledger_rows(project) if r.state == "unknown"}
    assert lost == set(emails[:5])
    assert bulk_recipients(moto_ses) == {e: 1 for e in emails}  # it had gone out

    later = (datetime.fromisoformat(NOW) + timedelta(hours=1)).isoformat()
    code, report = send(project, ENV, now=later)
    if policy == "resend":
        assert (code, report["counts"]) == (0, {"already": 5, "sent": 5})
        # Duplicates only within the batch that was in flight.
        assert bulk_recipients(moto_ses) == {e: 2 if e in lost else 1 for e in emails}
    else:
        assert (code, report["counts"]) == (1, {"already": 5, "unknown": 5})
        assert bulk_recipients(moto_ses) == {e: 1 for e in emails}


def test_the_pace_is_the_accounts_send_rate_from_get_account(project, moto_ses, monkeypatch):
    provider_project(project, channel(moto_ses))
    moto_ses.set_send_rate(7.5)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    channels = open_channels(load_settings(project.config))
    ses = channels["ses"]
    try:
        assert ses.max_rate is None
        ses.pace(1)
        assert ses.max_rate == 7.5
        ses.pace(1)
        assert moto_ses.calls("GET", "/v2/email/account") == 1
    finally:
        ses.close()


def test_missing_aws_credentials_stop_the_start_and_name_the_variables(project, moto_ses):
    provider_project(project, channel(moto_ses))
    add_subscribers(project, 2)
    result = project.cli("digest", "send", "--period", "2026-W48", "--now", NOW,
                         env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert result.returncode != 0
    assert "AWS_ACCESS_KEY_ID" in result.stderr + result.stdout
    assert moto_ses.calls("POST", BULK) == 0


def test_an_ses_bounce_notification_naming_ses_message_id_finds_the_campaign(
        project, moto_ses, tmp_path, monkeypatch):
    """A bulk send carries SES's own Message-ID, not ours: the notification's mail.messageId,
    recorded as the receipt's remote id, says which campaign bounced."""
    from sqlalchemy import select

    from bot import webhooks
    from bot.bounce_applying import mail_reports
    from bot.ledger import Ledger
    from bot.subscribers import Subscribers
    from tests.email.digest_setup import PERIOD
    from tests.email.test_provider_webhooks import TOPIC, SnsSide, ses_notification

    provider_project(project, channel(moto_ses))
    emails = add_subscribers(project, 4)
    assert send(project, ENV)[1]["counts"] == {"sent": 4}
    target = next(m for m in moto_ses.bridge.bulk_sent
                  if emails[1] in m["Destination"]["ToAddresses"][0])
    sns = SnsSide(tmp_path / "sns")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sns.tls.ca_file))
    try:
        bounce = sns.sign(ses_notification("n-1", {
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                       "bouncedRecipients": [{"emailAddress": emails[1], "status": "5.1.1",
                                              "diagnosticCode": "smtp; 550 5.1.1 no such"}]},
            "mail": {"messageId": target["MessageId"], "headers": [
                {"name": "Message-ID",
                 "value": f"<{target['MessageId']}@eu-west-1.amazonses.com>"}]}}))
        verifier = webhooks.SnsVerifier([TOPIC], "^" + sns.base.replace(".", r"\.") + "/")
        settings = load_settings(project.config)
        ledger = Ledger(settings.database_url)
        try:
            answer = webhooks.ses(settings, Subscribers(ledger), verifier, bounce)
            assert answer.status == 200, answer
            with ledger.engine.connect() as conn:
                rows = conn.execute(select(mail_reports.c.email, mail_reports.c.campaign)).all()
        finally:
            ledger.close()
    finally:
        sns.server.shutdown()
    assert [tuple(r) for r in rows] == [(emails[1], f"digest:{PERIOD}")]
