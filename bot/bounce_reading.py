"""What a returned message says, and about whom: bounces, complaints, unsubscribe mail.

Through a relay, a bounce is a delivery status notification mailed later to the envelope
sender (RFC 3464), a complaint is a feedback report from the recipient's provider (RFC 5965
ARF), and an unsubscribe request is a plain email to the `mailto:` of `List-Unsubscribe`.
`read_message` turns one such message into `Finding`s; it never changes anything
(`bot.bounce_applying` does, `bot.bounces` fetches the messages).

Whom a message is about, most trusted first: the return-path token (`email.bounce_address`,
VERP: the report was mailed to `bounce+TOKEN@...`, which names one subscriber and campaign);
an unsubscribe token (in the mailto subject, or in the returned message's `List-Unsubscribe`);
the addresses the report itself names (DSN `Original-Recipient`/`Final-Recipient`, ARF
`Original-Rcpt-To`, flufl.bounce's detectors for reports in no standard format).
"""

from __future__ import annotations

import email
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any
from urllib.parse import unquote

from sqlalchemy import select

from bot import tokens
from bot.addresses import normalise_email
from bot.config import Settings
from bot.ledger import Ledger, deliveries
from bot.mailing import domain
from bot.message import DeliveryKey
from bot.render.email import message_id_for
from bot.subscribers import Subscribers

log = logging.getLogger("briefbot.bounces")

KINDS = ("hard", "soft", "complaint", "unsubscribe", "ignored")

# Permanent (5.x.x) statuses that say nothing against the address itself: mailbox full,
# message too big, and policy or spam refusals (they are about the sender, and pass).
_SOFT_PERMANENT = ("5.2.2", "5.3.4", "5.7.")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([245])\d\d\b")
_AUTO_SUBJECT = re.compile(r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|auto:|out of (the )?"
                           r"office|abwesenheit|vacation|away from)", re.IGNORECASE)
_COMPLAINTS = ("abuse", "fraud", "virus", "other")
_DELIVERY_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To",
                     "Original-Recipient", "To", "Cc")


@dataclass(frozen=True)
class Finding:
    """One thing a message says about one address."""

    kind: str  # one of KINDS
    email: str | None  # as the list holds it, when it is on the list
    campaign: str | None
    detail: str
    named: str | None = None  # the address as the report gives it


@dataclass
class Reading:
    """What one message says; `problem` set when it cannot be understood."""

    findings: list[Finding] = field(default_factory=list)
    problem: str | None = None
    what: str = ""  # "delivery status notification", "feedback report", ...


class Directory:
    """What a report is matched against: the subscriber list and the campaigns sent."""

    def __init__(self, settings: Settings, emails: Iterable[str],
                 keys: Iterable[tuple[str, str]]):
        self.settings = settings
        self.emails = {e.lower(): e for e in emails}
        self.keys = sorted(set(keys))  # (campaign, channel) pairs with per-recipient mail
        self.campaigns = sorted({campaign for campaign, _ in self.keys})
        self._tokens: tokens.BounceTokens | None = None

    @classmethod
    def load(cls, settings: Settings, ledger: Ledger, subscribers: Subscribers) -> Directory:
        with ledger.engine.connect() as conn:
            keys = conn.execute(
                select(deliveries.c.campaign, deliveries.c.channel)
                .where(deliveries.c.recipient != "").distinct()
            ).all()
        return cls(settings, (s.email for s in subscribers.iter_all()),
                   [(k.campaign, k.channel) for k in keys])

    @classmethod
    def load_keys(cls, settings: Settings, ledger: Ledger) -> Directory:
        """Only the campaigns (to name a webhook event's campaign by its Message-ID)."""
        with ledger.engine.connect() as conn:
            keys = conn.execute(
                select(deliveries.c.campaign, deliveries.c.channel)
                .where(deliveries.c.recipient != "").distinct()
            ).all()
        return cls(settings, (), [(k.campaign, k.channel) for k in keys])

    def known(self, address: str | None) -> str | None:
        """The address as the list holds it, or None."""
        if not address:
            return None
        found = self.emails.get(address.strip().strip("<>").lower())
        if found is None:
            try:
                found = self.emails.get(normalise_email(address.strip().strip("<>")).lower())
            except ValueError:
                return None
        return found

    def return_path(self, text: str) -> tuple[str, str] | None:
        """The one (email, campaign) a return-path token in `text` names, if any."""
        if self._tokens is None:
            self._tokens = tokens.BounceTokens(self.settings, self.emails.values(),
                                               self.campaigns)
        found = {hit for t in tokens.find_bounce_tokens(text)
                 if (hit := self._tokens.resolve(t)) is not None}
        return found.pop() if len(found) == 1 else None

    def unsubscribe_token(self, text: str) -> str | None:
        """The address a genuine unsubscribe token in `text` names (one address only)."""
        found = {email for t in tokens.find_tokens(unquote(text))
                 if (email := tokens.read_token(self.settings, "unsubscribe", t))}
        return self.known(found.pop()) if len(found) == 1 else None

    def campaign_of(self, message_id: str | None, email: str) -> str | None:
        """The campaign whose Message-ID for `email` this is (they are derived from the key)."""
        if not message_id:
            return None
        wanted = message_id.strip()
        sender_domain = domain(self.settings)
        for campaign, channel in self.keys:
            try:
                if message_id_for(DeliveryKey(campaign, channel, email), sender_domain) == wanted:
                    return campaign
            except ValueError:
                return None
        return None


# -- reading one message ----------------------------------------------------------------------


def header_text(value: Any) -> str:
    """A header's value decoded (RFC 2047), as readable text whatever its encoding."""
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (ValueError, LookupError, UnicodeError):
        return str(value)


def _address(field_value: str | None) -> str | None:
    """`rfc822; someone@example.net` (a DSN or ARF address field) -> the address."""
    if not field_value:
        return None
    value = str(field_value).split(";", 1)[-1].strip().strip("<>").strip()
    return value if "@" in value else None


def _parts(msg: Message, *types: str) -> Iterator[Message]:
    for part in msg.walk():
        if part.get_content_type() in types:
            yield part


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status (or feedback-report) part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload.decode("latin-1") if isinstance(payload, bytes) else str(payload or "")
    return [email.message_from_string(chunk.strip() + "\n")
            for chunk in re.split(r"\r?\n[ \t]*\r?\n", text.strip()) if chunk.strip()]


def _returned(msg: Message) -> Message | None:
    """The returned (or reported) message, or its headers."""
    for part in _parts(msg, "message/rfc822", "message/global"):
        payload = part.get_payload()
        if isinstance(payload, list) and payload:
            return payload[0]
    for part in _parts(msg, "text/rfc822-headers", "text/global-headers"):
        payload = part.get_payload(decode=True) or b""
        return email.message_from_bytes(payload)
    return None


def _status(block: Message) -> str:
    found = _STATUS.search(str(block.get("Status", "")))
    if found is None:
        found = _STATUS.search(str(block.get("Diagnostic-Code", "")))
    if found is not None:
        return ".".join(found.groups())
    code = _SMTP_CODE.search(str(block.get("Diagnostic-Code", "")))
    return f"{code.group(1)}.0.0" if code else ""


def hard_status(status: str) -> bool:
    """A permanent failure that is about the address (5.x.x, but not a full mailbox or a
    policy refusal, which say more about the sender or the moment)."""
    return status.startswith("5.") and not status.startswith(_SOFT_PERMANENT)


def _auto_reply(msg: Message) -> bool:
    submitted = str(msg.get("Auto-Submitted", "")).lower()
    return (submitted.startswith("auto-replied") or bool(msg.get("X-Autoreply"))
            or bool(msg.get("X-Autorespond"))
            or str(msg.get("Precedence", "")).lower() == "auto_reply"
            or bool(_AUTO_SUBJECT.match(header_text(msg.get("Subject")))))


def read_message(raw: bytes, directory: Directory) -> Reading:
    """What `raw` says and about whom. Never raises for a malformed message: it says why."""
    try:
        msg = email.message_from_bytes(raw)
        return _read(msg, raw.decode("latin-1"), directory)
    except Exception as error:  # noqa: BLE001 - a hostile message must not stop the run
        log.debug("cannot read a message", exc_info=True)
        return Reading(problem=f"cannot be parsed ({type(error).__name__})")


def _delivery_text(msg: Message) -> str:
    return "\n".join(str(v) for name in _DELIVERY_HEADERS for v in msg.get_all(name) or ())


def _read(msg: Message, text: str, directory: Directory) -> Reading:
    # Whom it is about, by the return path: the headers it was delivered under first.
    via_path = directory.return_path(_delivery_text(msg)) or directory.return_path(text)
    feedback = next(_parts(msg, "message/feedback-report"), None)
    if feedback is not None:
        return _feedback(msg, feedback, via_path, directory)
    status_part = next(_parts(msg, "message/delivery-status",
                              "message/global-delivery-status"), None)
    if status_part is not None:
        reading = _dsn(msg, status_part, via_path, directory)
        if reading.findings or reading.problem:
            return reading
    request = _unsubscribe_request(msg, text, directory)
    if request is not None:
        return request
    if via_path is not None and _auto_reply(msg):
        return Reading([Finding("ignored", via_path[0], via_path[1], "an automatic reply")],
                       what="automatic reply")
    reading = _heuristic(msg, via_path, directory)
    if reading is not None:
        return reading
    if via_path is not None:
        email_, campaign = via_path
        return Reading([Finding("soft", email_, campaign, "a report to the return path that "
                                "names no failure briefbot can read")], what="unreadable report")
    return Reading(problem="not a delivery status notification, a feedback report or an "
                           "unsubscribe request briefbot recognises, and not sent to a return "
                           "path it made")


def _dsn(msg: Message, part: Message, via_path: tuple[str, str] | None,
         directory: Directory) -> Reading:
    returned = _returned(msg)
    message_id = header_text(returned.get("Message-ID")) if returned is not None else None
    failures: list[tuple[str, str | None, str]] = []  # (kind, named address, detail)
    recipients = [b for b in _blocks(part) if b.get("Action") or b.get("Final-Recipient")]
    for block in recipients:
        action = str(block.get("Action", "failed")).strip().lower()
        named = _address(block.get("Original-Recipient")) or _address(
            block.get("Final-Recipient"))
        also = _address(block.get("Final-Recipient"))
        status = _status(block)
        diagnostic = " ".join(header_text(block.get("Diagnostic-Code", "")).split())[:300]
        detail = f"{status or 'no status'} {diagnostic}".strip()
        if action != "failed":
            failures.append(("ignored", named, f"{action}: {detail}"))
            continue
        kind = "hard" if hard_status(status) else "soft"
        failures.append((kind, named if directory.known(named) or not also else also, detail))
    if not failures:
        return Reading(what="delivery status notification")
    what = "delivery status notification"
    if via_path is not None:  # one envelope, one recipient: the worst of what it says
        email_, campaign = via_path
        kind = next(k for k in ("hard", "soft", "ignored") if any(f[0] == k for f in failures))
        detail = next(f[2] for f in failures if f[0] == kind)
        return Reading([Finding(kind, email_, campaign, detail, failures[0][1])], what=what)
    findings = []
    for kind, named, detail in failures:
        known = directory.known(named)
        campaign = directory.campaign_of(message_id, known) if known else None
        findings.append(Finding(kind if known else "ignored", known, campaign,
                                detail if known else f"{detail} (not on the list)", named))
    return Reading(findings, what=what)


def _feedback(msg: Message, part: Message, via_path: tuple[str, str] | None,
              directory: Directory) -> Reading:
    blocks = _blocks(part)
    fields = blocks[0] if blocks else Message()
    kind = str(fields.get("Feedback-Type", "abuse")).strip().lower() or "abuse"
    agent = " ".join(header_text(fields.get("User-Agent", "")).split())[:100]
    returned = _returned(msg)
    detail = f"complaint ({kind} report{' by ' + agent if agent else ''})"
    what = "feedback report"
    if via_path is None:
        via_path = directory.return_path(str(fields.get("Original-Mail-From", "")))
    target = via_path[0] if via_path else None
    campaign = via_path[1] if via_path else None
    if target is None and returned is not None:
        target = directory.unsubscribe_token(
            str(returned.get("List-Unsubscribe", "")) + "\n" + _body_text(returned))
    if target is None:
        target = directory.known(_address(fields.get("Original-Rcpt-To")))
    if target is None and returned is not None:
        target = next((k for _, a in getaddresses(returned.get_all("To") or [])
                       if (k := directory.known(a))), None)
    if target is None:
        return Reading(problem=f"a {kind} feedback report that names no subscriber (the "
                               "recipient is redacted and no briefbot token survived)",
                       what=what)
    if campaign is None and returned is not None:
        campaign = directory.campaign_of(header_text(returned.get("Message-ID")), target)
    verdict = "complaint" if kind in _COMPLAINTS else "ignored"
    return Reading([Finding(verdict, target, campaign, detail)], what=what)


def _body_text(msg: Message, limit: int = 200_000) -> str:
    chunks = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                chunks.append(payload[:limit].decode(part.get_content_charset() or "latin-1",
                                                     "replace"))
    return "\n".join(chunks)


def _unsubscribe_request(msg: Message, text: str, directory: Directory) -> Reading | None:
    """A person's email to the `mailto:` of `List-Unsubscribe` (or saying so in its subject)."""
    mailto = directory.settings.config.email.unsubscribe_mailto
    mailto = (mailto or "").removeprefix("mailto:").partition("?")[0].strip().lower()
    subject = header_text(msg.get("Subject"))
    to_us = bool(mailto) and mailto in _delivery_text(msg).lower()
    if not (to_us or re.search(r"\bunsubscribe\b", subject, re.IGNORECASE)):
        return None
    what = "unsubscribe request"
    target = directory.unsubscribe_token(subject) or directory.unsubscribe_token(
        _body_text(msg))
    how = "by email, with its token"
    if target is None:
        target = directory.known(parseaddr(header_text(msg.get("From")))[1])
        how = "by email, from the address itself"
    if target is None:
        return Reading(problem="an unsubscribe request with no briefbot token, from an address "
                               "not on the list", what=what)
    return Reading([Finding("unsubscribe", target, None, f"unsubscribe request {how}")],
                   what=what)


def _heuristic(msg: Message, via_path: tuple[str, str] | None,
               directory: Directory) -> Reading | None:
    """Bounces in no standard format, through flufl.bounce's detectors (Exim, qmail, ...)."""
    from flufl.bounce import all_failures

    temporary, permanent = all_failures(msg)
    found = [("hard", a) for a in sorted(permanent)] + [
        ("soft", a) for a in sorted(temporary - permanent)]
    if not found:
        return None
    what = "non-standard bounce"
    names = [(kind, a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a))
             for kind, a in found]
    if via_path is not None:
        kind = "hard" if any(k == "hard" for k, _ in names) else "soft"
        return Reading([Finding(kind, via_path[0], via_path[1], f"{kind} bounce (non-standard "
                                "report)", names[0][1])], what=what)
    returned = _returned(msg)
    message_id = header_text(returned.get("Message-ID")) if returned is not None else None
    findings = []
    for kind, named in names:
        known = directory.known(named)
        campaign = directory.campaign_of(message_id, known) if known else None
        findings.append(Finding(kind if known else "ignored", known, campaign,
                                f"{kind} bounce (non-standard report)"
                                + ("" if known else " (not on the list)"), named))
    return Reading(findings, what=what)
