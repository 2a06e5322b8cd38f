"""Provider webhooks on `briefbot serve`: bounces, complaints and unsubscribes that a sending
service (Amazon SES through SNS, Mailgun, Postmark, SendGrid) reports over HTTP instead of by
mail.

A request is believed only when it proves where it comes from: Mailgun signs each event
(HMAC-SHA256 of timestamp and token with the webhook signing key; the timestamp must be
recent, and as the body itself is not signed, a token is accepted for one event only);
Postmark sends the Basic credentials set in its webhook URL; SendGrid signs the timestamp and
the body with ECDSA; SNS signs each message with the key of a certificate it names, fetched
only from an allowed HTTPS address, for a listed topic. Anything else gets 403 and changes
nothing; a body that is not the provider's JSON gets 400. Each event is applied through
`bot.bounce_applying.Applier`, keyed by the Mailgun token, the Postmark record id, the SendGrid
event id or the SNS message id, so a replayed or retried event changes nothing the second time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from bot.bounce_applying import Applier
from bot.bounce_reading import Directory, Finding, Reading, hard_status
from bot.config import ConfigError, Settings
from bot.subscribers import Subscribers

MAX_AGE_SECONDS = 15 * 60  # a Mailgun signature older (or newer) than this is refused
MAX_BODY_BYTES = 262_144

POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
POSTMARK_SOFT = {"SoftBounce", "Transient", "DnsError", "Blocked"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


def secrets_for(settings: Settings) -> dict[str, Any]:
    """The configured providers' secrets, read once when `serve` starts (ConfigError if a
    configured variable is unset)."""
    web = settings.config.web
    found: dict[str, Any] = {}
    if web.mailgun_signing_key_env:
        found["mailgun"] = settings.secret(web.mailgun_signing_key_env,
                                           what="web.mailgun_signing_key_env").encode()
    if web.postmark_user_env or web.postmark_password_env:
        if not (web.postmark_user_env and web.postmark_password_env):
            raise ConfigError("web.postmark_user_env and web.postmark_password_env: set both "
                              "(the Basic credentials in Postmark's webhook URL), or neither")
        found["postmark"] = (
            settings.secret(web.postmark_user_env, what="web.postmark_user_env"),
            settings.secret(web.postmark_password_env, what="web.postmark_password_env"))
    if web.ses_topic_arns:
        found["ses"] = SnsVerifier(web.ses_topic_arns, web.sns_url_pattern)
    if web.sendgrid_public_key_env:
        found["sendgrid"] = _sendgrid_key(settings.secret(
            web.sendgrid_public_key_env, what="web.sendgrid_public_key_env"))
    return found


def _sendgrid_key(text: str) -> Any:
    """The verification key SendGrid shows (base64 of the DER public key, or PEM)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_der_public_key,
        load_pem_public_key,
    )

    try:
        text = text.strip()
        key = (load_pem_public_key(text.encode()) if text.startswith("-----")
               else load_der_public_key(base64.b64decode(text)))
    except ValueError:
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError("web.sendgrid_public_key_env: not an ECDSA public key; paste the "
                          "verification key SendGrid shows for the signed event webhook")
    return key


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _apply(settings: Settings, subscribers: Subscribers, fingerprint: str, kind: str,
           address: str, detail: str, message_id: str | None,
           provider_id: str | None = None) -> Answer:
    """`provider_id`: the provider's own id of the message (Postmark's MessageID, SES's
    messageId), which a batch channel recorded as the receipt's remote id."""
    known = subscribers.get(address)
    email = known.email if known else None
    campaign = None
    if email and message_id:
        directory = Directory.load_keys(settings, subscribers.ledger)
        # Our own Message-ID (SMTP, full-message providers), else a batch provider's id
        campaign = (directory.campaign_of(message_id, email)
                    or subscribers.ledger.campaign_of_receipt(message_id, email))
    if email and campaign is None and provider_id:
        campaign = subscribers.ledger.campaign_of_receipt(provider_id, email)
    finding = Finding(kind if email else "ignored", email, campaign,
                      detail if email else f"{detail} (not on the list)", address)
    applier = Applier(settings, subscribers.ledger, subscribers)
    before = applier.previous(fingerprint)
    if before is not None and before != (finding.kind, finding.email):
        # The same signed token on another event: a captured signature reused.
        return Answer(403, {"error": "this signature was already used for another event"})
    outcomes = applier.apply(fingerprint, message_id or "",
                             Reading([finding], what="webhook"))
    if outcomes is None:
        return Answer(200, {"ok": True, "outcome": "already applied; nothing changed"})
    return Answer(200, {"ok": True, "outcome": outcomes[0]})


def mailgun(settings: Settings, subscribers: Subscribers, key: bytes, body: bytes,
            now: float | None = None) -> Answer:
    """Mailgun's webhook (JSON: `signature` and `event-data`)."""
    data = _json(body)
    if data is None or not isinstance(data.get("signature"), dict) or not isinstance(
            data.get("event-data"), dict):
        return Answer(400, {"error": "expected Mailgun's JSON: signature and event-data"})
    signature = data["signature"]
    timestamp, token, given = (str(signature.get(k, "")) for k in
                               ("timestamp", "token", "signature"))
    expected = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not (timestamp and token and hmac.compare_digest(expected, given.lower())):
        return Answer(403, {"error": "the signature does not verify"})
    stale = _stale(timestamp, now)
    if stale is not None:
        return stale
    event = data["event-data"]
    name = str(event.get("event", "")).lower()
    address = str(event.get("recipient", "")).strip()
    status = event.get("delivery-status") if isinstance(event.get("delivery-status"),
                                                         dict) else {}
    if name == "failed":
        code = str(status.get("enhanced-code") or status.get("code") or "")
        permanent = str(event.get("severity", "")).lower() == "permanent"
        kind = "hard" if permanent and (not code.startswith("5.") or hard_status(code)) \
            else "soft"
        detail = " ".join(f"{code} {status.get('description') or status.get('message') or ''}"
                          .split()) or f"{event.get('severity', '')} failure"
    elif name == "complained":
        kind, detail = "complaint", "complaint (reported through Mailgun)"
    elif name == "unsubscribed":
        kind, detail = "unsubscribe", "unsubscribed through Mailgun"
    else:
        return Answer(200, {"ok": True, "outcome": f"{name or 'an'} event: nothing to do"})
    if not address:
        return Answer(400, {"error": "the event names no recipient"})
    headers = (event.get("message") or {}).get("headers") or {}
    message_id = str(headers.get("message-id") or "").strip() or None
    if message_id and not message_id.startswith("<"):
        message_id = f"<{message_id}>"
    # Mailgun signs the timestamp and token, not the body: a token is good for one event.
    fingerprint = "mailgun:" + hashlib.sha256(token.encode()).hexdigest()[:48]
    return _apply(settings, subscribers, fingerprint, kind, address,
                  f"{detail} (Mailgun)" if kind in ("hard", "soft") else detail, message_id)


def postmark(settings: Settings, subscribers: Subscribers, credentials: tuple[str, str],
             authorization: str, body: bytes) -> Answer:
    """Postmark's bounce, spam complaint and subscription change webhooks (Basic auth)."""
    expected = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    if not hmac.compare_digest(expected.encode(), authorization.strip().encode()):
        return Answer(403, {"error": "the credentials are wrong"})
    data = _json(body)
    if data is None or not data.get("RecordType"):
        return Answer(400, {"error": "expected Postmark's JSON with a RecordType"})
    record = str(data["RecordType"])
    address = str(data.get("Email") or data.get("Recipient") or "").strip()
    kind_name = str(data.get("Type") or "")
    if record == "Bounce":
        kind = ("hard" if kind_name in POSTMARK_HARD else "soft" if kind_name in POSTMARK_SOFT
                else None)
        if kind_name == "SpamComplaint":
            kind = "complaint"
        detail = " ".join(f"{kind_name}: {data.get('Description') or ''} "
                          f"{data.get('Details') or ''}".split())[:500]
    elif record == "SpamComplaint":
        kind, detail = "complaint", "complaint (reported through Postmark)"
    elif record == "SubscriptionChange" and data.get("SuppressSending") is True:
        kind = "unsubscribe"
        detail = f"unsubscribed through Postmark ({data.get('SuppressionReason') or 'manual'})"
    else:
        return Answer(200, {"ok": True, "outcome": f"{record} {kind_name}: nothing to do"})
    if kind is None:
        return Answer(200, {"ok": True, "outcome": f"{kind_name}: nothing to do"})
    if not address:
        return Answer(400, {"error": "the record names no Email"})
    record_id = str(data.get("ID") or hashlib.sha256(body).hexdigest())
    message_id = None
    content = data.get("Content")
    if isinstance(content, str):
        import email

        message_id = email.message_from_string(content).get("Message-ID")
    fingerprint = f"postmark:{record}:{record_id}"[:64]
    return _apply(settings, subscribers, fingerprint, kind, address, detail, message_id,
                  str(data.get("MessageID") or "") or None)


SENDGRID_BOUNCES = {"bounce": "hard", "blocked": "soft"}


def sendgrid(settings: Settings, subscribers: Subscribers, key: Any, signature: str,
             timestamp: str, body: bytes, now: float | None = None) -> Answer:
    """SendGrid's signed event webhook: ECDSA (P-256, SHA-256) over the timestamp and the body,
    which is a JSON list of events; each is applied once, by its `sg_event_id`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + body,
                   ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return Answer(403, {"error": "the signature does not verify"})
    stale = _stale(timestamp, now)
    if stale is not None:
        return stale
    try:
        events = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        events = None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return Answer(400, {"error": "expected SendGrid's JSON list of events"})
    outcomes = []
    for event in events:
        name = str(event.get("event", ""))
        address = str(event.get("email") or "").strip()
        status = str(event.get("status") or "")
        if name == "bounce":
            kind = "soft" if str(event.get("type")) == "blocked" or (
                status.startswith("5.") and not hard_status(status)) or status.startswith(
                "4.") else "hard"
            detail = " ".join(f"{status} {event.get('reason') or ''}".split()) + " (SendGrid)"
        elif name == "dropped" and "bounce" in str(event.get("reason", "")).lower():
            kind, detail = "hard", f"dropped by SendGrid: {event.get('reason')}"
        elif name == "spamreport":
            kind, detail = "complaint", "complaint (reported through SendGrid)"
        elif name in ("unsubscribe", "group_unsubscribe"):
            kind, detail = "unsubscribe", "unsubscribed through SendGrid"
        else:
            outcomes.append(f"{name or 'an'} event: nothing to do")
            continue
        if not address or not event.get("sg_event_id"):
            outcomes.append("an event with no email or sg_event_id: skipped")
            continue
        message_id = str(event.get("smtp-id") or "").strip() or None
        fingerprint = "sendgrid:" + hashlib.sha256(
            str(event["sg_event_id"]).encode()).hexdigest()[:48]
        result = _apply(settings, subscribers, fingerprint, kind, address, detail, message_id)
        outcomes.append(result.body.get("outcome") or result.body.get("error", ""))
    return Answer(200, {"ok": True, "outcomes": outcomes})


# -- Amazon SES through SNS --------------------------------------------------------------------

_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                 "TopicArn", "Type"),
}


class SnsVerifier:
    """Checks an SNS message against the signing certificate it names, fetched over HTTPS from
    a host `web.sns_url_pattern` allows (cached), for a topic in `web.ses_topic_arns`."""

    def __init__(self, topics: list[str], url_pattern: str):
        import re
        import threading

        self.topics = set(topics)
        self.allowed = re.compile(url_pattern)
        self.certificates: dict[str, Any] = {}
        self.lock = threading.Lock()

    def _certificate(self, url: str) -> Any:
        import requests
        from cryptography import x509

        with self.lock:
            if url in self.certificates:
                return self.certificates[url]
        response = requests.get(url, timeout=10, allow_redirects=False)
        response.raise_for_status()
        certificate = x509.load_pem_x509_certificate(response.content)
        with self.lock:
            self.certificates[url] = certificate
        return certificate

    def check(self, message: dict[str, Any]) -> str | None:
        """None when the message is genuine, else why not."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        kind = message.get("Type")
        if kind not in _SNS_FIELDS:
            return f"not an SNS message type briefbot takes ({kind!r})"
        if message.get("TopicArn") not in self.topics:
            return "not a topic in web.ses_topic_arns"
        url = str(message.get("SigningCertURL", ""))
        if not self.allowed.match(url) or not url.endswith(".pem"):
            return "the signing certificate's address is not one web.sns_url_pattern allows"
        text = "".join(f"{name}\n{message[name]}\n" for name in _SNS_FIELDS[kind]
                       if name in message)
        digest = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(
            str(message.get("SignatureVersion")))
        if digest is None:
            return "an unknown SignatureVersion"
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
            certificate = self._certificate(url)
            certificate.public_key().verify(signature, text.encode(), padding.PKCS1v15(),
                                            digest)
        except (InvalidSignature, ValueError, TypeError, AttributeError):
            return "the signature does not verify"
        except OSError as error:  # requests' errors are OSErrors
            return f"the signing certificate could not be fetched ({type(error).__name__})"
        return None


def ses(settings: Settings, subscribers: Subscribers, verifier: SnsVerifier,
        body: bytes) -> Answer:
    """SES bounce and complaint notifications through an SNS topic (and its subscription
    confirmation). Applied once per notification and recipient, by the SNS MessageId."""
    message = _json(body)
    if message is None or not message.get("Type"):
        return Answer(400, {"error": "expected an SNS message (JSON with a Type)"})
    why = verifier.check(message)
    if why is not None:
        return Answer(403, {"error": why})
    if message["Type"] == "SubscriptionConfirmation":
        import requests

        url = str(message.get("SubscribeURL", ""))
        if not verifier.allowed.match(url):
            return Answer(403, {"error": "the SubscribeURL is not one web.sns_url_pattern "
                                         "allows"})
        try:
            requests.get(url, timeout=10, allow_redirects=False).raise_for_status()
        except OSError as error:
            return Answer(502, {"error": f"confirming failed ({type(error).__name__})"})
        return Answer(200, {"ok": True, "outcome": "subscription confirmed"})
    try:
        notification = json.loads(str(message.get("Message", "")))
    except ValueError:
        notification = None
    if not isinstance(notification, dict):
        return Answer(400, {"error": "the SNS Message is not an SES notification"})
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail") if isinstance(notification.get("mail"), dict) else {}
    message_id = next((str(h.get("value")) for h in mail.get("headers") or []
                       if isinstance(h, dict) and str(h.get("name", "")).lower()
                       == "message-id"), None)
    targets: list[tuple[str, str, str]] = []  # (kind, address, detail)
    if kind == "Bounce":
        bounce = notification.get("bounce") or {}
        permanent = bounce.get("bounceType") == "Permanent"
        for recipient in bounce.get("bouncedRecipients") or []:
            status = str(recipient.get("status") or "")
            hard = permanent and (not status.startswith("5.") or hard_status(status))
            detail = " ".join(f"{status} {recipient.get('diagnosticCode') or ''}".split())
            targets.append(("hard" if hard else "soft", str(recipient.get("emailAddress", "")),
                            f"{detail or bounce.get('bounceSubType', '')} (Amazon SES)"))
    elif kind == "Complaint":
        complaint = notification.get("complaint") or {}
        feedback = complaint.get("complaintFeedbackType") or "abuse"
        for recipient in complaint.get("complainedRecipients") or []:
            targets.append(("complaint", str(recipient.get("emailAddress", "")),
                            f"complaint ({feedback} report through Amazon SES)"))
    else:
        return Answer(200, {"ok": True, "outcome": f"{kind or 'a'} notification: nothing to do"})
    base = hashlib.sha256(str(message.get("MessageId")).encode()).hexdigest()[:40]
    outcomes = []
    for n, (verdict, address, detail) in enumerate(targets):
        if not address:
            continue
        result = _apply(settings, subscribers, f"ses:{base}:{n}", verdict, address, detail,
                        message_id, str(mail.get("messageId") or "") or None)
        outcomes.append(result.body.get("outcome") or result.body.get("error", ""))
    return Answer(200, {"ok": True, "outcomes": outcomes})


def _stale(timestamp: str, now: float | None) -> Answer | None:
    """A 403 for a signed timestamp that is not a number or too old (a replay), else None."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return Answer(403, {"error": "the signature's timestamp is not a number"})
    if age > MAX_AGE_SECONDS:
        return Answer(403, {"error": "the signature is too old (a replay?)"})
    return None
