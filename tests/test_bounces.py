"""`briefbot bounces fetch` against a real Dovecot IMAP server, on reports made from a real sent
digest (its envelope senders, Message-IDs and List-Unsubscribe headers as aiosmtpd received
them), plus flufl.bounce's corpus of bounce messages in many real formats."""

from __future__ import annotations

import email
import json
import os
import ssl
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import unquote

import pytest

from bot.config import Settings, parse_config
from tests import dovecot
from tests.conftest import Project
from tests.digest_setup import (
    NOW,
    PERIOD,
    add_subscribers,
    smtp_project,
    subscriber_list,
    write_week_briefs,
)
from tests.smtp_server import smtp_server

SECRET = "bounce-test-secret-" + "x" * 30
CORPUS = Path(__file__).parent / "data" / "bounces" / "flufl"
CAMPAIGN = f"digest:{PERIOD}"


@pytest.fixture
def mailbox():
    if not dovecot.available():
        if os.environ.get("CI"):
            pytest.fail("Dovecot is required in CI: install dovecot-imapd (scripts/test.sh does)")
        pytest.skip("Dovecot not found: install Debian's dovecot-imapd (scripts/test.sh does)")
    with dovecot.server() as running:
        yield running


def imap(server: dovecot.Dovecot):
    from imapclient import IMAPClient

    client = IMAPClient(server.host, port=server.imaps_port, ssl=True, timeout=10,
                        ssl_context=ssl.create_default_context(cafile=str(server.ca_file)))
    client.login(server.user, server.password)
    return client


def folder(server: dovecot.Dovecot, name: str) -> list[bytes]:
    client = imap(server)
    try:
        if not client.folder_exists(name):
            return []
        client.select_folder(name, readonly=True)
        uids = client.search(["ALL"])
        return [d[b"BODY[]"] for d in client.fetch(uids, ["BODY.PEEK[]"]).values()]
    finally:
        client.logout()


def append(server: dovecot.Dovecot, *messages: bytes, to: str = "INBOX") -> None:
    client = imap(server)
    try:
        for message in messages:
            client.append(to, message)
    finally:
        client.logout()


def subjects(messages: list[bytes]) -> list[str]:
    return sorted(str(email.message_from_bytes(m)["Subject"]) for m in messages)


# -- reports in the formats MTAs and providers really send ---------------------------------


def headers_of(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode("utf-8") + "\r\n"


def postfix_dsn(to: str, recipient: str, status: str, returned: bytes, *,
                action: str = "failed", queue_id: str = "4F1A2B3C4D") -> bytes:
    """A bounce as Postfix writes it (bounce(8)): notification, delivery-status, headers."""
    code = "550" if status.startswith("5") else "452"
    diagnostic = f"smtp; {code} {status} <{recipient}>: Recipient address rejected"
    subject = ("Delayed Mail (still being retried)" if action == "delayed"
               else "Undelivered Mail Returned to Sender")
    return (
        f"Return-Path: <>\r\nDelivered-To: {to}\r\nX-Original-To: {to}\r\n"
        f"Received: by mx.example.org (Postfix) id {queue_id}; Mon, 30 Nov 2026 08:01:02 +0000\r\n"
        f"Date: Mon, 30 Nov 2026 08:01:02 +0000 (UTC)\r\n"
        f"From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        f"Subject: {subject}\r\nTo: {to}\r\nAuto-Submitted: auto-replied\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n"
        f"\tboundary=\"{queue_id}.1764489662/mx.example.org\"\r\n"
        f"Content-Transfer-Encoding: 7bit\r\nMessage-Id: <20261130080102.{queue_id}@mx.example.org>"
        f"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n"
        f"--{queue_id}.1764489662/mx.example.org\r\nContent-Description: Notification\r\n"
        f"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"This is the mail system at host mx.example.org.\r\n\r\n"
        f"I'm sorry to have to inform you that your message could not\r\nbe delivered to one or "
        f"more recipients. It's attached below.\r\n\r\n<{recipient}>: host mx.example.net"
        f"[192.0.2.7] said: {code} {status}\r\n    <{recipient}>: Recipient address rejected "
        f"(in reply to RCPT TO command)\r\n\r\n"
        f"--{queue_id}.1764489662/mx.example.org\r\nContent-Description: Delivery report\r\n"
        f"Content-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.org\r\nX-Postfix-Queue-ID: {queue_id}\r\n"
        f"X-Postfix-Sender: rfc822; {to}\r\n"
        f"Arrival-Date: Mon, 30 Nov 2026 08:00:01 +0000 (UTC)\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\nRemote-MTA: dns; mx.example.net\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n\r\n"
        f"--{queue_id}.1764489662/mx.example.org\r\n"
        f"Content-Description: Undelivered Message Headers\r\n"
        f"Content-Type: text/rfc822-headers\r\n\r\n{headers_of(returned)}\r\n"
        f"--{queue_id}.1764489662/mx.example.org--\r\n"
    ).encode()


def arf_complaint(returned: bytes) -> bytes:
    """A feedback report (RFC 5965) as a provider sends it: the recipient redacted."""
    original = headers_of(returned)
    original = "\r\n".join(
        "To: redacted@mail.example.net" if line.startswith("To:") else line
        for line in original.split("\r\n"))
    return (
        "From: <staff@mail.example.net>\r\nDate: Mon, 30 Nov 2026 09:30:00 +0000\r\n"
        "Subject: FW: complaint about message\r\nTo: <bounce@example.org>\r\n"
        "Message-ID: <arf-1@mail.example.net>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=feedback-report;\r\n"
        "\tboundary=\"part1_13d.2e68ed54_boundary\"\r\n\r\n"
        "--part1_13d.2e68ed54_boundary\r\nContent-Type: text/plain; charset=\"US-ASCII\"\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\nThis is an email abuse report for an email "
        "message received from IP\r\n192.0.2.1 on Mon, 30 Nov 2026 08:00:01 +0000.\r\n\r\n"
        "--part1_13d.2e68ed54_boundary\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
        "Original-Rcpt-To: <redacted@mail.example.net>\r\n"
        "Arrival-Date: Mon, 30 Nov 2026 08:00:01 +0000\r\nSource-IP: 192.0.2.1\r\n"
        "Reported-Domain: example.org\r\n\r\n"
        "--part1_13d.2e68ed54_boundary\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"{original}\r\n--part1_13d.2e68ed54_boundary--\r\n"
    ).encode()


def unsubscribe_mail(returned: bytes, sender: str) -> bytes:
    """What a mail client sends for the `mailto:` of `List-Unsubscribe`."""
    header = email.message_from_bytes(returned)["List-Unsubscribe"]
    mailto = next(p.strip(" <>") for p in str(header).replace("\r\n", "").split(",")
                  if "mailto:" in p)
    address, _, query = mailto.removeprefix("mailto:").partition("?")
    subject = unquote(query.removeprefix("subject="))
    return (f"From: Reader <{sender}>\r\nTo: {address}\r\nSubject: {subject}\r\n"
            f"Date: {format_datetime(datetime.now(UTC))}\r\n"
            "Message-ID: <unsub-1@mail.example.net>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nThis message was automatically "
            "generated by Mail.\r\n").encode()


HUMAN = (b"From: Someone <someone@example.com>\r\nTo: bounce@example.org\r\n"
         b"Subject: Lunch on Friday?\r\nMessage-ID: <lunch@example.com>\r\n\r\nAre you free?\r\n")


# -- the setup: a digest really sent, with a return path ---------------------------------------


def sent_digest(project: Project) -> dict[str, tuple[str, bytes]]:
    """Send the W48 digest to 8 subscribers; {address: (envelope sender, message bytes)}."""
    with smtp_server() as server:
        smtp_project(project, server, email=(
            'bounce_address = "bounce@example.org"\n'
            'unsubscribe_mailto = "unsubscribe@example.org"\n'))
        write_week_briefs(project)
        add_subscribers(project, 8)
        project.cli("digest", "send", "--period", PERIOD, "--now", NOW, check=True,
                    env={"BRIEFBOT_TOKEN_SECRET": SECRET})
        received = server.mailbox.received()
    return {m.rcpt_tos[0]: (m.mail_from, m.data) for m in received}


def use_mailbox(project: Project, server: dovecot.Dovecot, security: str = "tls") -> None:
    port = server.imaps_port if security == "tls" else server.imap_port
    text = project.config.read_text()
    project.config.write_text(text.replace("[channels.email]", (
        f'[bounces]\nhost = "{server.host}"\nport = {port}\nsecurity = "{security}"\n'
        f'user = "{server.user}"\npassword_env = "TEST_BOUNCES_PASSWORD"\n'
        f'ca_file = "{server.ca_file}"\n\n[channels.email]'), 1))


def fetch(project: Project, server: dovecot.Dovecot, *args: str):
    return project.cli("bounces", "fetch", *args, env={
        "BRIEFBOT_TOKEN_SECRET": SECRET, "TEST_BOUNCES_PASSWORD": server.password})


def states(project: Project) -> dict[str, tuple]:
    with subscriber_list(project) as subscribers:
        return {s.email: (s.state, s.hard_bounces, s.soft_bounces, s.reason)
                for s in subscribers.iter_all()}


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_fetch_applies_each_report_once_and_leaves_what_it_cannot_read(project, mailbox,
                                                                       security):
    sent = sent_digest(project)
    use_mailbox(project, mailbox, security)
    r = [f"reader{n:05d}@example.net" for n in range(8)]
    verp = {address: sender for address, (sender, _) in sent.items()}
    assert len(set(verp.values())) == 8 and all(v.startswith("bounce+") for v in verp.values())
    with subscriber_list(project) as subscribers:
        subscribers.add("userx@example.de")  # the address in flufl.bounce's qmail sample
    qmail = (CORPUS / "qmail_01.txt").read_bytes()
    append(mailbox,
           postfix_dsn(verp[r[0]], r[0], "5.1.1", sent[r[0]][1]),  # hard, by its return path
           # No return path (a relay that rewrote it): the report's recipient and Message-ID.
           postfix_dsn("bounce@example.org", r[1], "5.1.1", sent[r[1]][1], queue_id="77AA"),
           postfix_dsn(verp[r[2]], r[2], "5.2.2", sent[r[2]][1], queue_id="88BB"),  # full: soft
           postfix_dsn(verp[r[3]], r[3], "4.4.1", sent[r[3]][1], action="delayed",
                       queue_id="99CC"),
           arf_complaint(sent[r[4]][1]),
           unsubscribe_mail(sent[r[5]][1], r[5]),
           qmail, HUMAN, b"\x00\xff not a message at all \xfe")
    before = states(project)

    first = fetch(project, mailbox)
    assert first.returncode == 1, first.stderr  # two messages were not understood
    after = states(project)
    changed = {a for a in after if after[a] != before[a]}
    assert changed == {r[0], r[1], r[2], r[4], r[5], "userx@example.de"}
    assert after[r[0]][:2] == ("bounced", 1) and "5.1.1" in after[r[0]][3]
    assert after[r[1]][0] == "bounced"
    assert after[r[2]][:3] == ("active", 0, 1)  # a full mailbox is counted, not final
    assert after[r[4]][0] == "unsubscribed" and "complaint (abuse report" in after[r[4]][3]
    assert after[r[5]][0] == "unsubscribed" and "unsubscribe request" in after[r[5]][3]
    assert after["userx@example.de"][0] == "bounced"
    listed = project.cli("subscribers", "list", "--state", "bounced")
    assert all(a in listed.stdout for a in (r[0], r[1])) and "5.1.1" in listed.stdout
    exported = project.cli("subscribers", "export").stdout
    assert "complaint (abuse report by SomeGenerator/1.0)" in exported
    assert {after[a][0] for a in (r[3], r[6], r[7])} == {"active"}
    # Understood messages moved, never deleted; the rest left where they were, and listed.
    assert len(folder(mailbox, "Processed")) == 7
    assert subjects(folder(mailbox, "INBOX")) == ["Lunch on Friday?", "None"]
    assert "Lunch on Friday?" in first.stdout and first.stdout.count("left: UID") == 2
    assert "2 not understood" in first.stderr
    # The reports name their campaign, by the return path or by the Message-ID.
    report = json.loads(fetch(project, mailbox, "--json").stdout)
    assert report["handled"] == [] and len(report["left"]) == 2
    from bot.bounce_applying import mail_reports
    from bot.ledger import Ledger

    with subscriber_list(project) as subscribers:
        ledger: Ledger = subscribers.ledger
        with ledger.engine.connect() as conn:
            rows = conn.execute(mail_reports.select()).all()
    by_email = {row.email: row for row in rows if row.email}
    assert {by_email[a].campaign for a in (r[0], r[1], r[2], r[3])} == {CAMPAIGN}

    second = fetch(project, mailbox)
    assert second.returncode == 1
    assert states(project) == after  # nothing changes the second time
    assert len(folder(mailbox, "Processed")) == 7

    # `status` counts them per campaign, as rates of what was sent, and warns.
    status = project.cli("status", "--json", "--now", NOW, env={"BRIEFBOT_TOKEN_SECRET": SECRET})
    [mailing] = json.loads(status.stdout)["mailings"]
    assert (mailing["campaign"], mailing["sent"]) == (CAMPAIGN, 8)
    assert (mailing["bounces"], mailing["complaints"]) == (3, 1)  # r0, r1, r2; r4
    assert mailing["bounce_rate"] == 0.375 and mailing["complaint_rate"] == 0.125
    assert [w.split(" is above")[0] for w in mailing["warnings"]] == [
        "bounce rate 37.5%", "complaint rate 12.50%"]
    table = project.cli("status", "--now", NOW, env={"BRIEFBOT_TOKEN_SECRET": SECRET})
    assert "bounce rate 37.5% is above 2%" in table.stdout


def test_a_message_moved_back_after_a_crash_is_not_applied_twice(project, mailbox):
    """The database commit comes before the move: a run that died in between leaves the
    message in the folder, and the next run only moves it."""
    sent = sent_digest(project)
    use_mailbox(project, mailbox)
    r2 = "reader00002@example.net"
    soft = postfix_dsn(sent[r2][0], r2, "4.2.2", sent[r2][1])
    append(mailbox, soft)
    assert fetch(project, mailbox).returncode == 0
    assert states(project)[r2][:3] == ("active", 0, 1)
    append(mailbox, soft)  # as if the move never happened
    again = fetch(project, mailbox)
    assert again.returncode == 0 and "already processed" in again.stdout
    assert states(project)[r2][:3] == ("active", 0, 1)
    assert folder(mailbox, "INBOX") == [] and len(folder(mailbox, "Processed")) == 2
    # Another report about the same campaign's message is not a second soft bounce either.
    append(mailbox, postfix_dsn(sent[r2][0], r2, "4.2.2", sent[r2][1], queue_id="5E5E"))
    assert fetch(project, mailbox).returncode == 0
    assert states(project)[r2][:3] == ("active", 0, 1)


def test_a_forged_return_path_token_names_nobody(project, mailbox):
    sent = sent_digest(project)
    use_mailbox(project, mailbox)
    r0 = "reader00000@example.net"
    sender = sent[r0][0]
    local, _, host = sender.partition("@")
    forged = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + host
    # Nothing else in it names a subscriber: the recipient is not on the list.
    append(mailbox, postfix_dsn(forged, "someone@example.com", "5.1.1", HUMAN))
    result = fetch(project, mailbox)
    assert result.returncode == 0 and "not on the list" in result.stdout
    assert states(project)[r0][0] == "active"


def test_configuration_problems_exit_2(project, mailbox):
    sent_digest(project)
    no_mailbox = project.cli("bounces", "fetch")
    assert no_mailbox.returncode == 2 and "bounces.host" in no_mailbox.stderr
    use_mailbox(project, mailbox)
    unset = project.cli("bounces", "fetch")
    assert unset.returncode == 2 and "TEST_BOUNCES_PASSWORD is not set" in unset.stderr
    wrong = project.cli("bounces", "fetch", env={"TEST_BOUNCES_PASSWORD": "wrong password"})
    assert wrong.returncode == 2 and "refused the login" in wrong.stderr
    assert "wrong password" not in wrong.stderr + wrong.stdout
    project.config.write_text(project.config.read_text().replace(
        f'ca_file = "{mailbox.ca_file}"\n', ""))
    untrusted = fetch(project, mailbox)
    assert untrusted.returncode == 2 and "is not trusted" in untrusted.stderr
    assert "bounces.ca_file" in untrusted.stderr


# -- the corpus ----------------------------------------------------------------------------


def test_every_sample_of_the_corpus_names_its_recipients_or_is_listed(tmp_path, monkeypatch):
    """flufl.bounce's samples (tests/data/bounces/flufl, Apache 2.0): for each, every address
    a detector finds is a subscriber in this test; briefbot must name each of them, or say the
    message is not understood, and never crash."""
    from flufl.bounce import all_failures

    from bot.bounce_reading import Directory, read_message

    monkeypatch.setenv("BRIEFBOT_TOKEN_SECRET", SECRET)
    settings = Settings(parse_config({}), tmp_path / "config.toml")
    samples = sorted(CORPUS.glob("*.txt"))
    assert len(samples) > 100
    named = listed = 0
    for sample in samples:
        raw = sample.read_bytes()
        temporary, permanent = all_failures(email.message_from_bytes(raw))
        expected = {a.decode() for a in temporary | permanent}
        reading = read_message(raw, Directory(settings, expected, []))
        if reading.problem:
            listed += 1
            assert not expected, f"{sample.name}: {reading.problem}"
            continue
        found = {f.email for f in reading.findings}
        assert expected <= found, sample.name
        named += 1
        for finding in reading.findings:
            if finding.email in permanent and finding.kind not in ("hard", "soft", "ignored"):
                raise AssertionError(f"{sample.name}: {finding}")
    assert named > 100 and listed < 10
    # Specific ones: a DSN's permanent failure is hard, a delay changes nothing.
    dsn = read_message((CORPUS / "dsn_01.txt").read_bytes(),
                       Directory(settings, ["userx@example.com"], []))
    assert [f.kind for f in dsn.findings] == ["hard"]
    delayed = read_message((CORPUS / "dsn_05.txt").read_bytes(),
                           Directory(settings, ["userx@example.cz"], []))
    assert [f.kind for f in delayed.findings] == ["ignored"]


# -- end to end: Postfix bounces for real -----------------------------------------------------


def test_postfix_bounces_arrive_in_the_mailbox_and_mark_exactly_those_subscribers(project,
                                                                                    mailbox):
    """A digest through Postfix, which accepts every address and then bounces those at
    bounce.example.net; its own reports, to each recipient's return path, are delivered into
    the Dovecot mailbox. An ARF complaint and an unsubscribe mail about two of the delivered
    copies are placed beside them."""
    import pwd

    from tests import postfix

    why = postfix.available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"Postfix is required in CI: {why}")
        pytest.skip(why)
    nobody = pwd.getpwnam(pwd.getpwuid(os.stat(mailbox.root / "mail").st_uid).pw_name)
    with postfix.server(mailbox.root / "mail", mailbox.user,
                        owner=(nobody.pw_uid, nobody.pw_gid)) as relay:
        class Relay:
            host, port = relay.host, relay.port

        smtp_project(project, Relay, email=('bounce_address = "bounce@example.org"\n'
                                            'unsubscribe_mailto = "unsubscribe@example.org"\n'))
        use_mailbox(project, mailbox)
        write_week_briefs(project)
        gone = ["gone.one@bounce.example.net", "gone.two@bounce.example.net"]
        kept = [f"{name}@ok.example.com" for name in ("ann", "bob", "cat", "dan")]
        with subscriber_list(project) as subscribers:
            for address in gone + kept:
                subscribers.add(address)
        sent = project.cli("digest", "send", "--period", PERIOD, "--now", NOW,
                           env={"BRIEFBOT_TOKEN_SECRET": SECRET})
        assert sent.returncode == 0 and "6 sent" in sent.stdout, sent.stdout + sent.stderr
        copies = {str(email.message_from_bytes(p.read_bytes())["To"]).strip("<>"): p.read_bytes()
                  for p in postfix.wait_for_files(relay.copies, 6)}
        reports = postfix.wait_for_files(mailbox.root / "mail" / mailbox.user / "Maildir" /
                                         "new", 2)
        log = relay.log()
    assert log.count("status=bounced") == 2 and log.count("status=sent (ok.example.com)") == 4
    assert all(b"Undelivered Mail Returned to Sender" in p.read_bytes() for p in reports)
    assert sorted(copies) == sorted(gone + kept)
    append(mailbox, arf_complaint(copies["ann@ok.example.com"]),
           unsubscribe_mail(copies["bob@ok.example.com"], "bob@ok.example.com"))
    before = states(project)

    first = fetch(project, mailbox)
    assert first.returncode == 0, first.stdout + first.stderr
    after = states(project)
    assert {a for a in after if after[a] != before[a]} == set(gone) | {
        "ann@ok.example.com", "bob@ok.example.com"}
    assert {after[a][0] for a in gone} == {"bounced"}
    assert all("5.1.1" in after[a][3] for a in gone)
    assert after["ann@ok.example.com"][0] == after["bob@ok.example.com"][0] == "unsubscribed"
    assert {after[a][0] for a in kept[2:]} == {"active"}
    assert folder(mailbox, "INBOX") == [] and len(folder(mailbox, "Processed")) == 4

    second = fetch(project, mailbox)
    assert second.returncode == 0 and states(project) == after
    assert "0 messages" in second.stdout


def test_the_daemon_reads_the_mailbox_on_schedule_bounces(project, mailbox):
    from tests.test_daemon import start_daemon, stop, wait_until

    sent = sent_digest(project)
    use_mailbox(project, mailbox)
    with open(project.config, "a", encoding="utf-8") as config:
        config.write('\n[schedule]\nbounces = "1s"\n')
    r0 = "reader00000@example.net"
    append(mailbox, postfix_dsn(sent[r0][0], r0, "5.1.1", sent[r0][1]))
    child = start_daemon(project, env={"BRIEFBOT_TOKEN_SECRET": SECRET,
                                       "TEST_BOUNCES_PASSWORD": mailbox.password})
    try:
        assert wait_until(lambda: states(project)[r0][0] == "bounced", timeout=60)
    finally:
        code, out = stop(child)
    assert code == 0, out
    assert folder(mailbox, "INBOX") == []
    status = json.loads(project.cli("status", "--json", "--now", NOW).stdout)
    assert "1 bounced" in status["daemon"]["jobs"]["bounces"]["last_outcome"]


def test_schedule_bounces_without_a_mailbox_is_a_configuration_error(project):
    project.write_config(extra='[schedule]\nbounces = "5m"\n')
    result = project.cli("check")
    assert result.returncode == 2 and "schedule.bounces is set, but bounces.host" in (
        result.stderr)


def test_with_a_return_path_soft_bounces_add_up_across_campaigns(project, mailbox):
    """Through a relay every message is accepted; that acceptance says nothing of the mailbox,
    so it no longer wipes the soft bounces that reports brought in. Three campaigns that
    soft-bounced mark the address bounced (email.soft_bounces = 3)."""
    from tests.briefs_factory import write_brief

    sent = {PERIOD: sent_digest(project)}
    r2 = "reader00002@example.net"
    for week, day in (("2026-W49", "2026-12-01"), ("2026-W50", "2026-12-08")):
        write_brief(project.briefs, f"{week}.md", title=f"News of {week}",
                    published_at=f"{day}T10:00:00Z")
    soft = []
    for n, (period, now) in enumerate(((PERIOD, None), ("2026-W49", "2026-12-07T08:00:00Z"),
                                       ("2026-W50", "2026-12-14T08:00:00Z"))):
        if now is not None:
            with smtp_server() as server:
                smtp_project(project, server, email=(
                    'bounce_address = "bounce@example.org"\n'
                    'unsubscribe_mailto = "unsubscribe@example.org"\n'))
                project.cli("digest", "send", "--period", period, "--now", now, check=True,
                            env={"BRIEFBOT_TOKEN_SECRET": SECRET})
                sent[period] = {m.rcpt_tos[0]: (m.mail_from, m.data)
                                for m in server.mailbox.received()}
            # Accepted again, yet the count from the report before stands.
            assert states(project)[r2][2] == n
        use_mailbox(project, mailbox)
        sender, data = sent[period][r2]
        append(mailbox, postfix_dsn(sender, r2, "4.2.2", data, queue_id=f"ABC{n}"))
        assert fetch(project, mailbox).returncode == 0
        soft.append(states(project)[r2][:3])
    assert soft == [("active", 0, 1), ("active", 0, 2), ("bounced", 0, 3)]
