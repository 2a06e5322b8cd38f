"""Provider webhooks on `briefbot serve` over real HTTP, with real signatures: Mailgun (HMAC of
timestamp and token with the signing key), Postmark (Basic credentials) and SendGrid (ECDSA,
with a throwaway key pair)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from tests.web.test_web import add, serve, subscriber_list  # noqa: F401 (serve is a fixture)

MAILGUN_KEY = "key-test-mailgun-signing-0123456789abcdef"
POSTMARK = ("postmark-hooks", "pm-basic-password-9f8e7d")
WEB = ('mailgun_signing_key_env = "TEST_MAILGUN_KEY"\n'
       'postmark_user_env = "TEST_PM_USER"\npostmark_password_env = "TEST_PM_PASSWORD"\n')


@pytest.fixture
def server(project, serve):  # noqa: F811
    project.env.update(TEST_MAILGUN_KEY=MAILGUN_KEY, TEST_PM_USER=POSTMARK[0],
                       TEST_PM_PASSWORD=POSTMARK[1])
    running = serve(web=WEB)
    add(project, "ann@example.net", "bob@example.net", "cat@example.net", "dan@example.net",
        "eve@example.net")
    return running


def people(project) -> dict[str, tuple]:
    with subscriber_list(project) as subscribers:
        return {s.email: (s.state, s.hard_bounces, s.soft_bounces, s.reason)
                for s in subscribers.iter_all()}


def mailgun_body(event: dict, *, key: str = MAILGUN_KEY, timestamp: int | None = None,
                 token: str = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0") -> bytes:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": stamp, "token": token,
                                     "signature": signature},
                       "event-data": event}).encode()


def failed(recipient: str, event_id: str, severity: str = "permanent") -> dict:
    return {"id": event_id, "event": "failed", "severity": severity, "reason": "bounce",
            "recipient": recipient, "timestamp": time.time(),
            "delivery-status": {"code": 550, "enhanced-code": "5.1.1",
                                "description": "The email account does not exist"},
            "message": {"headers": {"message-id": "20261130080102.1@example.org"}}}


def post(server, path: str, body: bytes, **headers: str):
    return server.request("POST", path, data=body,
                          headers={"Content-Type": "application/json", **headers})


def test_mailgun_events_apply_once_and_anything_unsigned_changes_nothing(project, server):
    hard = mailgun_body(failed("ann@example.net", "ev-1"))
    first = post(server, "/webhooks/mailgun", hard)
    assert first.status_code == 200 and "now bounced" in first.json()["outcome"]
    replay = post(server, "/webhooks/mailgun", hard)
    assert replay.status_code == 200 and "nothing changed" in replay.json()["outcome"]
    after = people(project)
    assert after["ann@example.net"][:2] == ("bounced", 1)
    assert "5.1.1" in after["ann@example.net"][3]

    forged = mailgun_body(failed("bob@example.net", "ev-2"), key="not-the-key")
    stale = mailgun_body(failed("bob@example.net", "ev-3"), timestamp=int(time.time()) - 3600)
    tampered = hard.replace(b"ann@example.net", b"bob@example.net")
    for body in (forged, stale, tampered):
        assert post(server, "/webhooks/mailgun", body).status_code == 403
    for body in (b"{not json", b"[]", json.dumps({"signature": "x"}).encode()):
        assert post(server, "/webhooks/mailgun", body).status_code == 400
    assert people(project) == after  # none of them changed anything

    complaint = mailgun_body({"id": "ev-4", "event": "complained",
                              "recipient": "bob@example.net"}, token="t" * 50)
    assert post(server, "/webhooks/mailgun", complaint).status_code == 200
    soft = mailgun_body(failed("cat@example.net", "ev-5", "temporary"), token="u" * 50)
    assert post(server, "/webhooks/mailgun", soft).status_code == 200
    opened = mailgun_body({"id": "ev-6", "event": "opened", "recipient": "dan@example.net"},
                          token="v" * 50)
    assert post(server, "/webhooks/mailgun", opened).status_code == 200
    now = people(project)
    assert now["bob@example.net"][0] == "unsubscribed" and "complaint" in now["bob@example.net"][3]
    assert now["cat@example.net"][:3] == ("active", 0, 1)
    assert now["dan@example.net"] == after["dan@example.net"]
    _, err = server.stop()
    assert "Traceback" not in err


def test_postmark_needs_its_credentials_and_a_replay_changes_nothing(project, server):
    good = "Basic " + base64.b64encode(":".join(POSTMARK).encode()).decode()
    wrong = "Basic " + base64.b64encode(b"postmark-hooks:guess").decode()
    bounce = json.dumps({"RecordType": "Bounce", "ID": 4323372036854775807,
                         "Type": "HardBounce", "TypeCode": 1, "Email": "cat@example.net",
                         "Description": "The server was unable to deliver your message",
                         "Details": "smtp;550 5.1.1 The email account does not exist",
                         "BouncedAt": "2026-11-30T08:01:02Z"}).encode()
    before = people(project)
    assert post(server, "/webhooks/postmark", bounce).status_code == 403
    assert post(server, "/webhooks/postmark", bounce, Authorization=wrong).status_code == 403
    assert post(server, "/webhooks/postmark", b"{", Authorization=good).status_code == 400
    assert people(project) == before
    for _ in range(2):
        assert post(server, "/webhooks/postmark", bounce, Authorization=good).status_code == 200
    complaint = json.dumps({"RecordType": "SpamComplaint", "ID": 42, "Type": "SpamComplaint",
                            "Email": "dan@example.net"}).encode()
    assert post(server, "/webhooks/postmark", complaint, Authorization=good).status_code == 200
    change = json.dumps({"RecordType": "SubscriptionChange", "Recipient": "eve@example.net",
                         "SuppressSending": True, "SuppressionReason": "ManualSuppression",
                         "ID": 7}).encode()
    assert post(server, "/webhooks/postmark", change, Authorization=good).status_code == 200
    after = people(project)
    assert after["cat@example.net"][:2] == ("bounced", 1)  # once, though posted twice
    assert after["dan@example.net"][0] == "unsubscribed"
    assert after["eve@example.net"][0] == "unsubscribed"
    assert after["ann@example.net"] == before["ann@example.net"]


def test_webhook_routes_exist_only_when_configured(project, serve):  # noqa: F811
    running = serve()
    assert post(running, "/webhooks/mailgun", b"{}").status_code == 404
    assert post(running, "/webhooks/postmark", b"{}").status_code == 404


def test_a_configured_webhook_whose_secret_is_unset_stops_serve_with_exit_2(project):
    project.write_config(extra=f"[web]\n{WEB}")
    result = project.cli("serve", "--port", "0", timeout=30)
    assert result.returncode == 2 and "TEST_MAILGUN_KEY is not set" in result.stderr


def test_sendgrid_signed_events_apply_once_and_a_forged_batch_changes_nothing(
        project, serve):  # noqa: F811
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    project.env["TEST_SENDGRID_KEY"] = public
    running = serve(web='sendgrid_public_key_env = "TEST_SENDGRID_KEY"\n')
    add(project, "ann@example.net", "bob@example.net", "cat@example.net", "dan@example.net")

    def signed(events: list, *, signer=key, stamp: int | None = None) -> tuple[bytes, dict]:
        body = json.dumps(events).encode()
        timestamp = str(int(time.time()) if stamp is None else stamp)
        signature = signer.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return body, {"X-Twilio-Email-Event-Webhook-Signature":
                      base64.b64encode(signature).decode(),
                      "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}

    batch = [
        {"email": "ann@example.net", "event": "bounce", "type": "bounce", "status": "5.1.1",
         "reason": "550 5.1.1 The email account does not exist", "sg_event_id": "sg-1",
         "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>"},
        {"email": "bob@example.net", "event": "spamreport", "sg_event_id": "sg-2"},
        {"email": "cat@example.net", "event": "bounce", "type": "blocked", "status": "5.7.1",
         "reason": "blocked", "sg_event_id": "sg-3"},
        {"email": "dan@example.net", "event": "delivered", "sg_event_id": "sg-4"},
    ]
    body, headers = signed(batch)
    before = people(project)
    other = ec.generate_private_key(ec.SECP256R1())
    forged = signed(batch, signer=other)
    stale = signed(batch, stamp=int(time.time()) - 3600)
    tampered = (body.replace(b"ann@", b"dan@"), headers)
    for data, extra in (forged, stale, tampered, (body, {})):
        assert post(running, "/webhooks/sendgrid", data, **extra).status_code == 403
    not_a_list, signed_headers = signed({"not": "a list"})
    assert post(running, "/webhooks/sendgrid", not_a_list, **signed_headers).status_code == 400
    assert people(project) == before
    for _ in range(2):  # SendGrid retries: the second delivery changes nothing
        assert post(running, "/webhooks/sendgrid", body, **headers).status_code == 200
    after = people(project)
    assert after["ann@example.net"][:2] == ("bounced", 1)
    assert after["bob@example.net"][0] == "unsubscribed"
    assert after["cat@example.net"][:3] == ("active", 0, 1)
    assert after["dan@example.net"] == before["dan@example.net"]


# -- Amazon SES through SNS ------------------------------------------------------------------

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-bounces"


class SnsSide:
    """What SNS runs: an HTTPS server (test CA) with the signing certificate and the
    subscription link, and the RSA key that signs messages."""

    def __init__(self, folder):
        import datetime as dt
        import http.server
        import threading

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        from tests.servers.smtp_server import TestCertificates

        self.tls = TestCertificates.create(folder)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = dt.datetime.now(dt.UTC)
        certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                       .public_key(self.key.public_key()).serial_number(1)
                       .not_valid_before(now - dt.timedelta(days=1))
                       .not_valid_after(now + dt.timedelta(days=1))
                       .sign(self.key, hashes.SHA256()))
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        self.confirmed: list[str] = []
        side = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.endswith(".pem"):
                    body = pem
                else:
                    side.confirmed.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = self.tls.server_context().wrap_socket(self.server.socket,
                                                                   server_side=True)
        self.base = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sign(self, message: dict, version: str = "1") -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        fields = (("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                   "Type") if message["Type"] == "SubscriptionConfirmation" else
                  ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"))
        message = {**message, "SignatureVersion": version,
                   "SigningCertURL": f"{self.base}/SimpleNotificationService-test.pem"}
        text = "".join(f"{k}\n{message[k]}\n" for k in fields if k in message)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        message["Signature"] = base64.b64encode(
            self.key.sign(text.encode(), padding.PKCS1v15(), digest)).decode()
        return json.dumps(message).encode()


def ses_notification(message_id: str, notification: dict) -> dict:
    return {"Type": "Notification", "MessageId": message_id, "TopicArn": TOPIC,
            "Message": json.dumps(notification), "Timestamp": "2026-11-30T08:01:02.123Z"}


def test_ses_notifications_through_sns_are_checked_against_the_signing_certificate(
        project, serve, tmp_path):  # noqa: F811
    import re

    sns = SnsSide(tmp_path / "sns")
    project.env["REQUESTS_CA_BUNDLE"] = str(sns.tls.ca_file)
    pattern = "^" + re.escape(sns.base + "/")
    running = serve(web=f"ses_topic_arns = [\"{TOPIC}\"]\nsns_url_pattern = '{pattern}'\n")
    add(project, "ann@example.net", "bob@example.net", "cat@example.net")
    try:
        confirm = sns.sign({"Type": "SubscriptionConfirmation", "MessageId": "c-1",
                            "Token": "tok", "TopicArn": TOPIC, "Message": "confirm it",
                            "SubscribeURL": f"{sns.base}/?Action=ConfirmSubscription&T=tok",
                            "Timestamp": "2026-11-30T08:00:00.000Z"})
        assert post(running, "/webhooks/ses", confirm).status_code == 200
        assert sns.confirmed == ["/?Action=ConfirmSubscription&T=tok"]

        bounce = sns.sign(ses_notification("m-1", {
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                       "bouncedRecipients": [{"emailAddress": "ann@example.net",
                                              "status": "5.1.1",
                                              "diagnosticCode": "smtp; 550 5.1.1 no such"}]},
            "mail": {"messageId": "0100-ses", "headers": [
                {"name": "Message-ID", "value": "<x@example.org>"}]}}))
        complaint = sns.sign(ses_notification("m-2", {
            "notificationType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": "bob@example.net"}],
                          "complaintFeedbackType": "abuse"}, "mail": {}}), version="2")
        before = people(project)
        forged = json.loads(bounce)
        forged["Message"] = forged["Message"].replace("ann@", "cat@")
        other_topic = json.loads(bounce)
        other_topic["TopicArn"] = "arn:aws:sns:us-east-1:999999999999:elsewhere"
        elsewhere = json.loads(bounce)
        elsewhere["SigningCertURL"] = "https://example.com/cert.pem"
        for data in (forged, other_topic, elsewhere):
            assert post(running, "/webhooks/ses", json.dumps(data).encode()).status_code == 403
        assert post(running, "/webhooks/ses", b"not json").status_code == 400
        assert people(project) == before
        for _ in range(2):  # SNS retries: applied once
            assert post(running, "/webhooks/ses", bounce).status_code == 200
        assert post(running, "/webhooks/ses", complaint).status_code == 200
        after = people(project)
        assert after["ann@example.net"][:2] == ("bounced", 1)
        assert after["bob@example.net"][0] == "unsubscribed"
        assert after["cat@example.net"] == before["cat@example.net"]
        _, err = running.stop()
        assert "Traceback" not in err
    finally:
        sns.server.shutdown()
