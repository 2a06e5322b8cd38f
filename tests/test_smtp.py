"""The SMTP channel against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.channels import load_channel_class
from bot.channels.smtp import (
    Deferred,
    Refused,
    ServerUnavailable,
    SetupRefused,
    SmtpChannel,
    UnknownOutcome,
)
from bot.config import ConfigError, Settings, parse_config
from tests.smtp_server import Mailbox, TestCertificates, free_port, smtp_server

SENDER = "digest@example.org"


def message(number: int, body: bytes = b"Hello.\r\n") -> bytes:
    return (f"From: {SENDER}\r\nTo: r{number}@example.net\r\nSubject: test {number}\r\n"
            f"Message-ID: <m{number}@example.org>\r\n\r\n").encode() + body


def channel(root: Path, email: dict | None = None, **options: object) -> SmtpChannel:
    data = {"channels": {"mail": {"type": "smtp", **options}}, "email": email or {}}
    settings = Settings(parse_config(data), root / "config.toml")
    return SmtpChannel("mail", settings.config.channels["mail"], settings)


@pytest.fixture
def server():
    with smtp_server() as running:
        yield running


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> TestCertificates:
    return TestCertificates.create(tmp_path_factory.mktemp("tls"))


def test_registered_through_the_entry_point():
    assert load_channel_class("smtp") is SmtpChannel


@pytest.mark.parametrize("pipelining", [False, True])
def test_messages_arrive_intact_over_one_persistent_connection(tmp_path, pipelining):
    with smtp_server(Mailbox(pipelining=pipelining)) as server:
        smtp = channel(tmp_path, host=server.host, port=server.port, security="none")
        dotted = b".Line one.\r\n.leading dot survives\r\n..two dots too\r\n.\r\nend\r\n"
        try:
            replies = [smtp.send_raw(SENDER, f"r{n}@example.net", message(n, dotted))
                       for n in range(40)]
        finally:
            smtp.close()
    received = server.mailbox.received()
    assert len(received) == 40
    assert [m.rcpt_tos for m in received] == [(f"r{n}@example.net",) for n in range(40)]
    assert all(m.mail_from == SENDER for m in received)
    assert received[7].data.replace(b"\r\n", b"\n") == message(7, dotted).replace(b"\r\n", b"\n")
    assert server.mailbox.connections == 1
    assert smtp.stats["connections"] == 1 and smtp.stats["messages"] == 40
    assert all(reply.startswith("2.0.0 Ok: queued as") for reply in replies)


def test_starttls_with_login_checks_the_certificate_against_the_test_ca(certificates, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("TEST_SMTP_USER", "digest")
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "correct horse battery")
    with smtp_server(tls=certificates, credentials=("digest", "correct horse battery")) as srv:
        smtp = channel(tmp_path, host=srv.host, port=srv.port, security="starttls",
                       username_env="TEST_SMTP_USER", password_env="TEST_SMTP_PASSWORD",
                       ca_file=str(certificates.ca_file))
        try:
            for n in range(120):
                smtp.send_raw(SENDER, f"r{n}@example.net", message(n))
        finally:
            smtp.close()
        assert srv.mailbox.count() == 120
        assert len(srv.mailbox.logins) == 1
    assert smtp.stats["tls_handshakes"] == 1  # at most one per 100 messages
    assert smtp.stats["logins"] == 1


def test_a_certificate_from_an_unknown_ca_is_refused(certificates, tmp_path):
    with smtp_server(tls=certificates) as srv:
        smtp = channel(tmp_path, host=srv.host, port=srv.port, security="starttls")
        with pytest.raises(SetupRefused, match="not trusted") as caught:
            smtp.send_raw(SENDER, "r@example.net", message(1))
        assert srv.mailbox.count() == 0
    assert caught.value.run_level
    assert "ca_file" in str(caught.value)


def test_turning_verification_off_is_explicit_and_logged(certificates, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="briefbot.smtp"):
        with smtp_server(tls=certificates) as srv:
            smtp = channel(tmp_path, host=srv.host, port=srv.port, security="starttls",
                           verify_certificates=False)
            smtp.send_raw(SENDER, "r@example.net", message(1))
            smtp.close()
            assert srv.mailbox.count() == 1
    assert "verify_certificates = false" in caplog.text


def test_a_wrong_password_names_the_variables_and_never_the_value(certificates, tmp_path,
                                                                  monkeypatch, caplog):
    monkeypatch.setenv("TEST_SMTP_USER", "digest")
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong-password-value")
    with smtp_server(tls=certificates, credentials=("digest", "the-right-one")) as srv:
        smtp = channel(tmp_path, host=srv.host, port=srv.port, security="starttls",
                       username_env="TEST_SMTP_USER", password_env="TEST_SMTP_PASSWORD",
                       ca_file=str(certificates.ca_file))
        with pytest.raises(SetupRefused) as caught:
            smtp.send_raw(SENDER, "r@example.net", message(1))
        assert srv.mailbox.count() == 0
    text = str(caught.value)
    assert "TEST_SMTP_USER" in text and "TEST_SMTP_PASSWORD" in text
    assert "wrong-password-value" not in text + repr(caught.value) + caplog.text
    assert caught.value.run_level


def test_a_missing_password_variable_is_named(server, tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_SMTP_PASSWORD_UNSET", raising=False)
    monkeypatch.setenv("TEST_SMTP_USER", "digest")
    smtp = channel(tmp_path, host=server.host, port=server.port, security="none",
                   username_env="TEST_SMTP_USER", password_env="TEST_SMTP_PASSWORD_UNSET")
    with pytest.raises(SetupRefused, match="TEST_SMTP_PASSWORD_UNSET is not set"):
        smtp.send_raw(SENDER, "r@example.net", message(1))


@pytest.mark.parametrize("pipelining", [False, True])
def test_refusals_map_to_hard_and_soft_bounces_and_the_connection_stays_usable(tmp_path,
                                                                              pipelining):
    mailbox = Mailbox(refuse={"gone@example.net": 550, "busy@example.net": 451},
                      pipelining=pipelining)
    with smtp_server(mailbox) as srv:
        smtp = channel(tmp_path, host=srv.host, port=srv.port, security="none")
        with pytest.raises(Refused) as hard:
            smtp.send_raw(SENDER, "gone@example.net", message(1))
        with pytest.raises(Deferred) as soft:
            smtp.send_raw(SENDER, "busy@example.net", message(2))
        smtp.send_raw(SENDER, "fine@example.net", message(3))
        smtp.close()
        assert [m.rcpt_tos for m in mailbox.received()] == [("fine@example.net",)]
        assert mailbox.connections == 1
    assert (hard.value.code, hard.value.phase, hard.value.bounce) == (550, "RCPT TO", "hard")
    assert (soft.value.code, soft.value.bounce) == (451, "soft")
    assert "gone@example.net" in str(hard.value)


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_connection_dropped_before_the_data_is_resent_once_on_a_new_one(tmp_path, pipelining):
    mailbox = Mailbox(drop_before_data={3}, pipelining=pipelining)
    with smtp_server(mailbox) as srv:
        smtp = channel(tmp_path, host=srv.host, port=srv.port, security="none")
        for n in range(1, 6):
            smtp.send_raw(SENDER, f"r{n}@example.net", message(n))
        smtp.close()
        assert mailbox.per_recipient() == {f"r{n}@example.net": 1 for n in range(1, 6)}
        assert mailbox.connections == 2
    assert smtp.stats["connections"] == 2


def test_a_connection_dropped_twice_stops_the_run_and_the_next_send_reconnects(tmp_path):
    mailbox = Mailbox(drop_before_data={2, 3})
    with smtp_server(mailbox) as srv:
        smtp = channel(tmp_path, host=srv.host, port=srv.port, security="none")
        smtp.send_raw(SENDER, "r1@example.net", message(1))
        with pytest.raises(ServerUnavailable, match="dropped the connection twice") as caught:
            smtp.send_raw(SENDER, "r2@example.net", message(2))
        smtp.send_raw(SENDER, "r3@example.net", message(3))
        smtp.close()
        assert mailbox.per_recipient() == {"r1@example.net": 1, "r3@example.net": 1}
    assert caught.value.run_level


def test_a_connection_lost_before_the_reply_is_an_unknown_outcome(tmp_path):
    mailbox = Mailbox(drop_before_reply={2})
    with smtp_server(mailbox) as srv:
        smtp = channel(tmp_path, host=srv.host, port=srv.port, security="none")
        smtp.send_raw(SENDER, "r1@example.net", message(1))
        with pytest.raises(UnknownOutcome, match="may or may not"):
            smtp.send_raw(SENDER, "r2@example.net", message(2))
        smtp.send_raw(SENDER, "r3@example.net", message(3))  # on a new connection
        smtp.close()
        assert mailbox.per_recipient() == {f"r{n}@example.net": 1 for n in (1, 2, 3)}
        assert mailbox.connections == 2


def test_an_unreachable_server_stops_the_run_rather_than_failing_a_recipient(tmp_path):
    smtp = channel(tmp_path, host="127.0.0.1", port=free_port(), security="none", timeout=5)
    with pytest.raises(ServerUnavailable, match="cannot connect") as caught:
        smtp.send_raw(SENDER, "r@example.net", message(1))
    assert caught.value.run_level


@pytest.mark.parametrize(("options", "expected"), [
    ({"security": "ssl"}, "`channels.mail.security`: Input should be 'starttls', 'tls' or "
     "'none'"),
    ({"hots": "mail.example.org"}, "(?s)unknown key `channels.mail.hots`.*smtp channels take: "
     "ca_file, connections"),
    ({"username_env": "SMTP_USER"}, "set both username_env and password_env"),
    ({"password_env": "hunter2 is my password"}, "names an environment variable"),
    ({"connections": 0}, "`channels.mail.connections`: Input should be greater than or "
     "equal to 1"),
    ({"ca_file": "missing-ca.pem"}, "ca_file"),
])
def test_bad_options_say_which_and_how_to_fix(tmp_path, options, expected):
    with pytest.raises(ConfigError, match=expected):
        channel(tmp_path, **options)


def test_posts_briefs_only_with_single_brief_email(tmp_path):
    data = {"email": {"single_brief_email": True},
            "channels": {"mail": {"type": "smtp", "host": "127.0.0.1"}}}
    settings = Settings(parse_config(data), tmp_path / "config.toml")
    assert SmtpChannel("mail", settings.config.channels["mail"], settings).posts_briefs
    assert not channel(tmp_path).posts_briefs
    assert SmtpChannel.sends_digest


def test_an_unknown_email_is_resent_by_default_and_that_can_be_changed(tmp_path):
    # SMTP cannot be asked whether it went out: resending (same Message-ID) loses nobody.
    assert channel(tmp_path).unknown_policy == "resend"
    assert channel(tmp_path, unknown_policy="skip").unknown_policy == "skip"


def test_a_return_path_gives_each_recipient_and_campaign_an_envelope_sender_of_its_own(
        tmp_path, monkeypatch):
    from bot.message import DeliveryKey
    from bot.tokens import BounceTokens, find_bounce_tokens

    monkeypatch.setenv("BRIEFBOT_TOKEN_SECRET", "s" * 40)
    with smtp_server() as srv:
        smtp = channel(tmp_path, email={"bounce_address": "Bounce@Example.ORG"},
                       host=srv.host, port=srv.port, security="none")
        keys = [DeliveryKey(campaign, "mail", rcpt)
                for campaign in ("digest:2026-W48", "brief:grid-storage-pilot")
                for rcpt in ("ann@example.net", "a.very.long.address.of.someone@example.net")]
        for n, key in enumerate(keys):
            smtp.send_email(key, message(n), f"<m{n}@example.org>")
        smtp.close()
        senders = [m.mail_from for m in srv.mailbox.received()]
    assert len(set(senders)) == 4
    locals_ = [s.partition("@")[0] for s in senders]
    assert all(s.endswith("@example.org") and local.startswith("Bounce+") and len(local) <= 64
               for s, local in zip(senders, locals_, strict=True))
    emails = ["ann@example.net", "a.very.long.address.of.someone@example.net", "bob@example.net"]
    tokens = BounceTokens(smtp.settings, emails, ["digest:2026-W48", "brief:grid-storage-pilot",
                                                  "digest:2026-W47"])
    for sender, key in zip(senders, keys, strict=True):
        # An MTA may change the case of the address: the token is read back all the same.
        [token] = find_bounce_tokens(sender.upper())
        assert tokens.resolve(token) == (key.recipient, key.campaign)
    token = find_bounce_tokens(senders[0])[0]
    forged = token[:-1] + ("a" if token[-1] != "a" else "b")
    assert tokens.resolve(forged) is None
    # Another secret reads none of them.
    monkeypatch.setenv("BRIEFBOT_TOKEN_SECRET", "t" * 40)
    assert BounceTokens(smtp.settings, emails, ["digest:2026-W48"]).resolve(token) is None


@pytest.mark.parametrize("value", ["bounce+x@example.org", "no-at-sign", "b@localhost",
                                   "a" * 31 + "@example.org"])
def test_a_return_path_that_cannot_take_a_token_is_refused(value):
    with pytest.raises(ConfigError, match=r"email.bounce_address`: expected a plain address"):
        parse_config({"email": {"bounce_address": value}})
