"""`briefbot bounces fetch`: what comes back by mail, read from the mailbox it arrives in.

This module reads one IMAP folder (IMAPS or STARTTLS, the password from the environment), has
`bot.bounce_reading` work out what each message says and about whom, `bot.bounce_applying`
apply it to the subscriber list, and moves the message to `bounces.processed_folder`. Nothing
is ever deleted, and a message it cannot read is left where it is and listed.

Exactly once, across crashes: a message is moved only after its reading was committed with its
`mail_reports` rows. A run that dies between the two finds the key on its next pass, changes
nothing and only moves the message.
"""

from __future__ import annotations

import email
import hashlib
import logging
import ssl
from collections import Counter
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from bot import redaction
from bot.bounce_applying import Applier
from bot.bounce_reading import Directory, header_text, read_message
from bot.config import ConfigError, Settings
from bot.ledger import open_ledger
from bot.subscribers import Subscribers

log = logging.getLogger("briefbot.bounces")


@dataclass
class Handled:
    uid: int
    subject: str
    sender: str
    what: str
    outcomes: list[str]
    already: bool = False


@dataclass
class Left:
    uid: int
    subject: str
    sender: str
    message_id: str
    why: str


@dataclass
class FetchReport:
    folder: str
    processed_folder: str
    handled: list[Handled] = field(default_factory=list)
    left: list[Left] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    moved: int = 0
    more: bool = False  # more messages than bounces.max_messages: the rest next time

    @property
    def ok(self) -> bool:
        return not self.left

    def summary(self) -> str:
        seen = len(self.handled) + len(self.left)
        parts = [f"{self.counts[k]} {k}" for k in
                 ("bounced", "soft bounce", "complaint", "unsubscribed", "no change",
                  "already processed") if self.counts[k]]
        text = (f"{self.folder}: {seen} message{'s' if seen != 1 else ''}: "
                f"{len(self.handled)} processed and moved to {self.processed_folder}"
                + (f" ({', '.join(parts)})" if parts else ""))
        if self.left:
            text += f"; {len(self.left)} not understood, left in {self.folder}"
        if self.more:
            text += "; more are waiting (bounces.max_messages)"
        return text

    def lines(self) -> list[str]:
        out = [f"UID {h.uid}: {h.what}: " + ("already processed; moved" if h.already else
                                               "; ".join(h.outcomes))
               for h in self.handled]
        out += [f"left: UID {m.uid} from {m.sender or '(no sender)'} "
                f"{m.subject!r}: {m.why}" for m in self.left]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "processed_folder": self.processed_folder,
                "handled": [h.__dict__ for h in self.handled],
                "left": [m.__dict__ for m in self.left], "counts": dict(self.counts),
                "moved": self.moved, "more": self.more, "summary": self.summary()}


def _tally(report: FetchReport, outcomes: list[str]) -> None:
    for outcome in outcomes:
        if outcome.endswith("now bounced"):
            report.counts["bounced"] += 1
        elif "soft bounce" in outcome and "already counted" not in outcome:
            report.counts["soft bounce"] += 1
        elif "now unsubscribed" in outcome:
            report.counts["complaint" if "complaint" in outcome else "unsubscribed"] += 1
        else:
            report.counts["no change"] += 1


# -- the mailbox ------------------------------------------------------------------------------


class MailboxError(Exception):
    """The mailbox could not be read (unreachable, dropped): try again later."""


def connect(settings: Settings) -> Any:
    """A logged-in IMAPClient for `[bounces]`. ConfigError for what only the setup can fix."""
    from imapclient import IMAPClient
    from imapclient.exceptions import IMAPClientError, LoginError

    cfg = settings.config.bounces
    if not cfg.host or not cfg.user:
        raise ConfigError("bounces.host and bounces.user: set both (the IMAP mailbox that "
                          "receives bounce reports; the password goes in the variable named "
                          f"by bounces.password_env, {cfg.password_env})")
    password = settings.secret(cfg.password_env, what="bounces.password_env (the mailbox login)")
    redaction.register(password)
    ca_file = settings.resolve(cfg.ca_file) if cfg.ca_file else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"bounces.ca_file: {ca_file} does not exist")
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not cfg.verify_certificates:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning("bounces.verify_certificates = false: the certificate of %s is not checked",
                    cfg.host)
    port = cfg.port or (993 if cfg.security == "tls" else 143)
    where = f"{cfg.host}:{port}"
    client = None
    try:
        client = IMAPClient(cfg.host, port=port, ssl=cfg.security == "tls",
                            ssl_context=context, timeout=cfg.timeout.total_seconds())
        if cfg.security == "starttls":
            client.starttls(context)
        client.login(cfg.user, password)
        return client
    except ssl.SSLCertVerificationError as error:
        _close(client)
        raise ConfigError(f"bounces: the certificate of {where} is not trusted "
                          f"({error.verify_message}); point bounces.ca_file at the CA that "
                          "signed it, or fix bounces.host") from None
    except LoginError:
        _close(client)
        raise ConfigError(f"bounces: {where} refused the login of {cfg.user!r}; check "
                          f"bounces.user and the password in {cfg.password_env}") from None
    except (OSError, IMAPClientError, ssl.SSLError) as error:
        _close(client)
        raise MailboxError(f"cannot read the mailbox at {where}: "
                           f"{redaction.redact(str(error)) or type(error).__name__}") from None


def _close(client: Any) -> None:
    if client is None:
        return
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - closing a broken connection
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001
            pass


def _move(client: Any, uids: list[int], folder: str) -> None:
    if not uids:
        return
    if client.has_capability("MOVE"):
        client.move(uids, folder)
        return
    from imapclient import DELETED

    client.copy(uids, folder)
    client.add_flags(uids, [DELETED])
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)
    else:
        client.expunge()


def fetch(settings: Settings) -> FetchReport:
    """Read `bounces.folder`, apply what each message says, move what was understood."""
    from imapclient.exceptions import IMAPClientError

    cfg = settings.config.bounces
    client = connect(settings)
    ledger = open_ledger(settings)
    report = FetchReport(cfg.folder, cfg.processed_folder)
    try:
        subscribers = Subscribers(ledger)
        directory = Directory.load(settings, ledger, subscribers)
        applier = Applier(settings, ledger, subscribers)
        try:
            client.select_folder(cfg.folder)
        except IMAPClientError:
            raise ConfigError(f"bounces.folder: there is no folder {cfg.folder!r} in the "
                              "mailbox") from None
        if not client.folder_exists(cfg.processed_folder):
            client.create_folder(cfg.processed_folder)
        uids = sorted(client.search(["NOT", "DELETED"]))
        report.more = len(uids) > cfg.max_messages
        for start in range(0, min(len(uids), cfg.max_messages), 50):
            chunk = uids[start:min(start + 50, cfg.max_messages)]
            done = _process(client, chunk, directory, applier, report, cfg.max_message_bytes)
            _move(client, done, cfg.processed_folder)  # only after each one's commit
            report.moved += len(done)
    except (OSError, IMAPClientError, ssl.SSLError) as error:
        raise MailboxError(f"the mailbox connection failed: "
                           f"{redaction.redact(str(error)) or type(error).__name__}; what "
                           "was processed is recorded, the rest is read next time") from None
    finally:
        ledger.close()
        _close(client)
    return report


def _process(client: Any, uids: list[int], directory: Directory, applier: Applier,
             report: FetchReport, max_bytes: int) -> list[int]:
    sizes = client.fetch(uids, ["RFC822.SIZE", "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM "
                                "MESSAGE-ID)]"])
    wanted = [uid for uid in uids if uid in sizes and sizes[uid].get(b"RFC822.SIZE", 0)
              <= max_bytes]
    bodies = client.fetch(wanted, ["BODY.PEEK[]"]) if wanted else {}
    done = []
    for uid in uids:
        head = email.message_from_bytes(next(
            (v for k, v in sizes.get(uid, {}).items() if k.startswith(b"BODY[HEADER")), b""))
        subject = header_text(head.get("Subject"))
        sender = parseaddr(header_text(head.get("From")))[1]
        message_id = header_text(head.get("Message-ID")).strip()
        raw = bodies.get(uid, {}).get(b"BODY[]")
        if raw is None:
            report.left.append(Left(uid, subject, sender, message_id,
                                    f"larger than bounces.max_message_bytes ({max_bytes:,})"))
            continue
        reading = read_message(raw, directory)
        if reading.problem:
            report.left.append(Left(uid, subject, sender, message_id, reading.problem))
            continue
        outcomes = applier.apply(hashlib.sha256(raw).hexdigest(), message_id, reading)
        if outcomes is None:
            report.handled.append(Handled(uid, subject, sender, reading.what, [], already=True))
            report.counts["already processed"] += 1
        else:
            report.handled.append(Handled(uid, subject, sender, reading.what, outcomes))
            _tally(report, outcomes)
        done.append(uid)
    return done
