"""The Postmark channel, driven by `briefbot digest send` against a fake of Postmark's batch API
built from its reference (tests/fakes/postmark_api.py, tests/data/postmark-api.md)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest

from tests.email.digest_setup import NOW, add_subscribers, address, ledger_rows, subscriber_list
from tests.email.provider_setup import provider_project, send
from tests.fakes.postmark_api import FakePostmark

TOKEN = "pm-server-token-3f9a1c"
ENV = {"POSTMARK_SERVER_TOKEN": TOKEN}


@pytest.fixture
def postmark():
    with FakePostmark(TOKEN) as fake:
        yield fake


def channel(fake: FakePostmark, extra: str = "") -> str:
    return (f'[channels.postmark]\ntype = "postmark"\napi_base = "{fake.url}"\n'
            f'timeout = 10\n{extra}')


def batches(fake: FakePostmark) -> list[int]:
    return [len(r.json()) for r in fake.seen("POST", "/email/batch")]


def test_a_digest_goes_in_batches_of_500_each_recipient_recorded_with_postmarks_id(
        project, postmark):
    provider_project(project, channel(postmark))
    emails = add_subscribers(project, 600)
    code, report = send(project, ENV)
    assert code == 0, report
    assert report["counts"] == {"sent": 600}
    assert sorted(batches(postmark)) == [100, 500]
    assert all(r.header("x-postmark-server-token") == TOKEN for r in postmark.seen())

    sent = {m["To"].rsplit("<", 1)[-1].strip(">"): m for m in postmark.sent}
    assert set(sent) == set(emails) and len(postmark.sent) == 600
    one = sent[address(3)]
    assert one["To"] == f"Reader 3 <{address(3)}>"
    assert one["From"] == "Weekly <digest@example.org>"
    assert one["MessageStream"] == "broadcast"
    headers = {h["Name"]: h["Value"] for h in one["Headers"]}
    unsubscribe = headers["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith("http://127.0.0.1:8025/unsubscribe/")
    assert unsubscribe in one["TextBody"] and unsubscribe in one["HtmlBody"]
    assert unsubscribe not in sent[address(4)]["HtmlBody"]  # each reader's own link
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert len({h["Value"] for m in postmark.sent for h in m["Headers"]
                if h["Name"] == "Message-ID"}) == 600

    rows = {r.key.recipient: r for r in ledger_rows(project)}
    assert {r.state for r in rows.values()} == {"sent"}
    assert {e: rows[e].remote_id for e in emails} == {e: sent[e]["MessageID"] for e in emails}

    again_code, again = send(project, ENV)
    assert (again_code, again["counts"]) == (0, {"already": 600})
    assert len(batches(postmark)) == 2  # nothing sent twice


def test_an_inactive_recipient_is_refused_alone_and_counts_as_a_hard_bounce(project, postmark):
    provider_project(project, channel(postmark, "batch_size = 4\n"))
    emails = add_subscribers(project, 10)
    gone = address(5)
    postmark.inactive.add(gone)
    code, report = send(project, ENV)
    assert code == 1
    assert report["counts"] == {"sent": 9, "dead": 1}
    assert report["bounced"] == 1
    assert "406" in report["errors"][0]["error"] and report["errors"][0]["recipient"] == gone
    assert sorted(batches(postmark)) == [2, 4, 4]
    assert sorted(m["To"].rsplit("<", 1)[-1].strip(">") for m in postmark.sent) == sorted(
        e for e in emails if e != gone)
    with subscriber_list(project) as subscribers:
        assert subscribers.get(gone).state == "bounced"
        assert subscribers.get(address(4)).state == "active"


def test_a_429_is_waited_out_and_the_same_batch_sent_once(project, postmark):
    provider_project(project, channel(postmark))
    add_subscribers(project, 30)
    postmark.fail_next(429, body={"ErrorCode": 429, "Message": "Rate limit exceeded"},
                       headers={"Retry-After": "1"}, path="/email/batch")
    code, report = send(project, ENV)
    assert code == 0, report
    assert report["counts"] == {"sent": 30}
    assert batches(postmark) == [30, 30]  # refused once, then taken
    assert Counter(m["To"] for m in postmark.sent).most_common(1)[0][1] == 1


@pytest.mark.parametrize("policy", ["resend", "skip"])
def test_an_answer_lost_after_the_batch_went_out_is_unknown_for_the_whole_batch(
        project, postmark, policy):
    provider_project(project, channel(postmark, f'unknown_policy = "{policy}"\n'
                                               "batch_size = 5\nconnections = 1\n"))
    emails = add_subscribers(project, 10)
    postmark.lose_next("POST", "/email/batch")  # the first batch is sent, its answer lost
    code, report = send(project, ENV)
    assert code == 1
    assert report["counts"] == {"sent": 5, "unknown": 5}
    lost = {r.key.recipient for r in ledger_rows(project) if r.state == "unknown"}
    assert lost == set(emails[:5])

    later = (datetime.fromisoformat(NOW) + timedelta(hours=1)).isoformat()
    code, report = send(project, ENV, now=later)
    copies = Counter(m["To"].rsplit("<", 1)[-1].strip(">") for m in postmark.sent)
    if policy == "resend":
        # Sent again, with the same Message-ID: duplicates only within the batch in flight.
        assert (code, report["counts"]) == (0, {"already": 5, "sent": 5})
        assert copies == {e: 2 if e in lost else 1 for e in emails}
        ids = {e: {h["Value"] for m in postmark.sent if e in m["To"] for h in m["Headers"]
                   if h["Name"] == "Message-ID"} for e in lost}
        assert all(len(v) == 1 for v in ids.values())
    else:
        assert (code, report["counts"]) == (1, {"already": 5, "unknown": 5})
        assert copies == {e: 1 for e in emails}


def test_a_wrong_token_stops_the_run_names_the_variable_and_never_shows_the_token(
        project, postmark):
    provider_project(project, channel(postmark, "batch_size = 5\n"))
    add_subscribers(project, 20)
    code, report = send(project, {"POSTMARK_SERVER_TOKEN": "wrong-token-777"})
    assert code == 1
    assert report["stopped"] and "POSTMARK_SERVER_TOKEN" in report["stopped"]
    assert "wrong-token-777" not in str(report)
    assert 1 <= len(postmark.seen()) <= 2 and postmark.sent == []  # a call per connection
    assert {r.state for r in ledger_rows(project)} <= {"failed"}  # due again, not dead
    code, report = send(project, ENV)
    assert (code, report["counts"].get("sent")) == (0, 20)


def test_an_unknown_message_stream_stops_the_run(project, postmark):
    provider_project(project, channel(postmark, 'message_stream = "newsletter"\n'))
    add_subscribers(project, 3)
    code, report = send(project, ENV)
    assert code == 1
    assert "message_stream" in report["stopped"]
    assert report["counts"] == {"failed": 3} and postmark.sent == []


def test_a_bounce_webhook_naming_postmarks_message_id_finds_the_campaign(project, postmark):
    """Postmark's bounce webhook names its own MessageID; the receipt recorded for that
    recipient says which campaign bounced."""
    import base64
    import json

    from sqlalchemy import select

    from bot import webhooks
    from bot.bounce_applying import mail_reports
    from bot.config import load_settings
    from bot.ledger import Ledger
    from bot.subscribers import Subscribers
    from tests.email.digest_setup import PERIOD

    provider_project(project, channel(postmark))
    emails = add_subscribers(project, 6)
    assert send(project, ENV)[1]["counts"] == {"sent": 6}
    target = next(m for m in postmark.sent if emails[2] in m["To"])
    # The fields of Postmark's bounce webhook example (tests/data/postmark-api.md).
    bounce = json.dumps({
        "RecordType": "Bounce", "MessageStream": "broadcast", "ID": 4323372036854775807,
        "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce",
        "MessageID": target["MessageID"], "Description": "The server was unable to deliver "
        "your message (ex: unknown user, mailbox not found).", "Details": "Test bounce details",
        "Email": emails[2], "From": "digest@example.org",
        "BouncedAt": "2026-11-30T08:05:00Z", "Inactive": True, "CanActivate": True,
        "Subject": target["Subject"]}).encode()
    credentials = ("hooks", "pm-hook-password")
    basic = "Basic " + base64.b64encode(b"hooks:pm-hook-password").decode()
    settings = load_settings(project.config)
    ledger = Ledger(settings.database_url)
    try:
        answer = webhooks.postmark(settings, Subscribers(ledger), credentials, basic, bounce)
        assert answer.status == 200, answer
        with ledger.engine.connect() as conn:
            rows = conn.execute(select(mail_reports.c.email, mail_reports.c.campaign)).all()
    finally:
        ledger.close()
    assert [tuple(r) for r in rows] == [(emails[2], f"digest:{PERIOD}")]


def test_a_batch_over_50_mb_goes_in_several_calls_and_a_failed_call_is_only_its_own(
        project, postmark, monkeypatch):
    """Postmark takes 50 MB a call: a larger batch is split. When a call's answer is lost,
    only its recipients are unknown; the calls after it are not made (their recipients are
    due again, not unknown)."""
    from bot import tokens
    from bot.channels import open_channels
    from bot.channels import postmark as adapter
    from bot.channels.batch import BatchItem
    from bot.config import load_settings
    from bot.digest import period_briefs
    from bot.message import DeliveryKey, Receipt, TransientError, UnknownOutcome
    from bot.render.email import prepare_digest
    from bot.timing import parse_period
    from tests.email.digest_setup import PERIOD

    provider_project(project, channel(postmark))
    monkeypatch.setenv("POSTMARK_SERVER_TOKEN", TOKEN)
    settings = load_settings(project.config)
    now = datetime.fromisoformat(NOW)
    prepared = prepare_digest(settings, period_briefs(settings, parse_period(PERIOD), now),
                              period_label=PERIOD, now=now)
    items = [BatchItem(key=DeliveryKey(f"digest:{PERIOD}", "postmark", address(n)),
                       address=address(n), name=None, message_id=f"<m{n}@example.org>",
                       unsubscribe_url=tokens.unsubscribe_url(settings, address(n)))
             for n in range(9)]
    sender = open_channels(settings)["postmark"]
    size = len(adapter._encode(sender._message(prepared, items[0])))
    monkeypatch.setattr(adapter, "MAX_BYTES", size * 3 + 10)  # three messages a call
    try:
        outcomes = sender.send_batch(prepared, items)
        assert batches(postmark) == [3, 3, 3]
        assert all(isinstance(o, Receipt) for o in outcomes)
        postmark.lose_next("POST", "/email/batch")  # this call goes out, its answer is lost
        outcomes = sender.send_batch(prepared, items)
    finally:
        sender.close()
    assert batches(postmark) == [3, 3, 3, 3]
    assert all(isinstance(o, UnknownOutcome) for o in outcomes[:3])
    assert all(type(o) is TransientError for o in outcomes[3:])  # never sent: due again
    assert len(postmark.sent) == 12
