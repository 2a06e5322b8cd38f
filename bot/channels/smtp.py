"""SMTP: the digest (and, if configured, each brief) to subscribers, over persistent connections.

A TLS handshake and a login cost more than a message, so every sending thread keeps one
connection open for the whole run and reconnects only when the server drops it. The protocol
steps are driven one by one (MAIL, RCPT, DATA, data) rather than through `sendmail`, because
what a failure means depends on where it happens:

- the connection drops before the end of the data: the server cannot have accepted the message,
  so it is sent again once on a fresh connection;
- it drops after the data went out but before the server's reply: the message may or may not
  have been accepted. That is an *unknown* outcome (`UnknownOutcome`), settled by the channel's
  `unknown_policy`; the Message-ID derived from the delivery key makes a resend recognisable;
- a 4xx reply is transient (`Deferred`, a soft bounce on RCPT/DATA), a 5xx permanent (`Refused`,
  a hard bounce on RCPT/DATA). A refused sender (MAIL FROM) is not the recipient's fault.

Errors that concern the whole run rather than one recipient (the server is unreachable, the
login or the certificate is refused) carry `run_level = True`: the sender stops and leaves the
remaining recipients for the next run instead of failing every one of them.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import threading
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, ClassVar

from bot import redaction
from bot.channels.base import (
    Channel,
    ChannelError,
    Message,
    Pacer,
    PermanentError,
    Receipt,
    TransientError,
    UnknownOutcome,
)
from bot.channels.options import SmtpOptions
from bot.config import ConfigError

if TYPE_CHECKING:
    from bot.briefs import Brief
    from bot.message import DeliveryKey

log = logging.getLogger("briefbot.smtp")

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_UNSAFE_ADDRESS = re.compile(r"[\s<>]|^$")


class Refused(PermanentError):
    """The server answered 5xx; on RCPT or DATA that is a hard bounce of the recipient."""

    def __init__(self, message: str, *, code: int, phase: str):
        super().__init__(message)
        self.code = code
        self.phase = phase
        self.bounce = "hard" if phase in ("RCPT TO", "DATA") else None


class Deferred(TransientError):
    """The server answered 4xx: try later; on RCPT or DATA that is a soft bounce."""

    def __init__(self, message: str, *, code: int, phase: str):
        super().__init__(message)
        self.code = code
        self.phase = phase
        self.bounce = "soft" if phase in ("RCPT TO", "DATA") else None


class ServerUnavailable(TransientError):
    """The server cannot be reached, or keeps dropping the connection: stop and retry later."""

    run_level = True


class SetupRefused(PermanentError):
    """Login, certificate or STARTTLS refused: no message can go out until the setup is fixed."""

    run_level = True


class _Reconnect(Exception):
    """The connection is gone before the data was complete: safe to send again."""



class SmtpChannel(Channel):
    """Mails the digest to every subscriber; with `email.single_brief_email`, each brief too.

    For a single-brief email the publisher's delivery `(brief:<id>, <channel>, "")` stands for
    the whole mailing, which is fanned out to per-subscriber deliveries
    `(brief:<id>, <channel>, <email>)` exactly like a digest (see `bot.mailing`).
    """

    type = "smtp"
    Options = SmtpOptions
    sends_digest: ClassVar[bool] = True
    fans_out: ClassVar[bool] = True
    # SMTP cannot be asked whether a message went out. Resending loses nobody, and the copy has
    # the same Message-ID, which mail clients and many servers fold into one; leaving it to an
    # operator would leave a reader without the issue after every crash mid-send.
    default_unknown_policy: ClassVar[str] = "resend"
    posts_briefs: bool = False  # per instance: on when `email.single_brief_email` is

    def __init__(self, name, config, settings):
        super().__init__(name, config, settings)
        options = self.options
        self.posts_briefs = settings.config.email.single_brief_email
        self.host = str(options.get("host") or "localhost")
        self.security = str(options.get("security", "starttls"))
        self.port = int(options.get("port") or DEFAULT_PORTS[self.security])
        self.timeout = float(options.get("timeout", 60))
        self.connections = int(options.get("connections", 1))
        rate = options.get("max_rate")
        self.max_rate = None if rate is None else float(rate)
        self.username_env = options.get("username_env")
        self.password_env = options.get("password_env")
        self.verify = options.get("verify_certificates", True)
        ca_file = options.get("ca_file")
        self.ca_file = settings.resolve(ca_file) if ca_file else None
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ConfigError(f"channels.{name}.ca_file: {self.ca_file} does not exist")
        if self.security != "none" and not self.verify:
            log.warning("channels.%s: verify_certificates = false: the certificate of %s is not "
                        "checked, so anyone on the network path can read and change the mail",
                        name, self.host)
        sender = str(options.get("envelope_from") or "") or parseaddr(
            settings.config.email.from_address)[1]
        self.envelope_from = sender
        self._local = threading.local()
        self._open: set[smtplib.SMTP] = set()
        self._lock = threading.Lock()
        self._pacer = Pacer(self.max_rate) if self.max_rate else None
        self.stats = {"connections": 0, "tls_handshakes": 0, "logins": 0, "messages": 0}

    # -- the Channel interface -------------------------------------------------------------

    def render(self, brief: Brief, key: DeliveryKey) -> Message:
        """The single-brief email, to be fanned out to subscribers by `send`."""
        from bot.render.email import brief_email_message  # mjml loads only when rendering

        return brief_email_message(self.settings, brief, key)

    def send(self, message: Message) -> Receipt:
        if not message.key.recipient or message.raw is None:
            raise PermanentError("an email needs a recipient and its raw bytes to be sent")
        reply = self.send_raw(self.sender_for(message.key), message.key.recipient, message.raw)
        return Receipt(remote_id=message.message_id, note=reply)

    def reconcile(self, message: Message) -> Receipt | None:
        if message.key.recipient:
            return super().reconcile(message)
        # A single-brief mailing is resumable: every recipient has their own delivery, so
        # sending "again" only reaches those who have not had it.
        return None

    def close(self) -> None:
        with self._lock:
            connections, self._open = list(self._open), set()
        for smtp in connections:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        self._local = threading.local()

    # -- sending -----------------------------------------------------------------------------

    def send_email(self, key: DeliveryKey, data: bytes, message_id: str) -> Receipt:
        return Receipt(remote_id=message_id,
                       note=self.send_raw(self.sender_for(key), key.recipient, data))

    def sender_for(self, key: DeliveryKey) -> str:
        """The envelope sender (where bounce reports go): with `email.bounce_address`, one of
        its own per recipient and campaign (VERP); otherwise `envelope_from` or the From."""
        if key.recipient and self.settings.config.email.bounce_address:
            from bot.tokens import bounce_address

            return bounce_address(self.settings, key.campaign, key.recipient) or ""
        return self.envelope_from

    def send_raw(self, sender: str, recipient: str, data: bytes) -> str:
        """Send complete CRLF message bytes to one recipient; returns the server's reply.

        Raises `Refused`, `Deferred`, `UnknownOutcome`, `ServerUnavailable` or `SetupRefused`.
        """
        if self._pacer is not None:
            self._pacer.wait()
        payload = _dot_stuffed(data)
        for attempt in (1, 2):
            smtp = self._connection()
            try:
                reply = self._transaction(smtp, sender, recipient, payload)
            except _Reconnect as error:
                self._discard(smtp)
                if attempt == 2:
                    raise ServerUnavailable(
                        f"{self.host}:{self.port} dropped the connection twice ({error}); "
                        "the message was not sent and will be retried"
                    ) from None
                continue
            self._count("messages")
            return reply
        raise AssertionError("unreachable")

    def _transaction(self, smtp: smtplib.SMTP, sender: str, recipient: str,
                     payload: bytes) -> str:
        if _UNSAFE_ADDRESS.search(sender) or _UNSAFE_ADDRESS.search(recipient):
            raise Refused(f"{recipient!r}: not an address that can go in an SMTP command",
                          code=553, phase="RCPT TO")
        option = ""
        if not (sender.isascii() and recipient.isascii()):
            if not smtp.has_extn("smtputf8"):
                raise Refused(f"{recipient}: the address is not ASCII and {self.host} does not "
                              "support SMTPUTF8", code=553, phase="RCPT TO")
            smtp.command_encoding = "utf-8"
            option = " SMTPUTF8"
        # Written directly: `smtplib.mail`/`rcpt` would parse each address again, per message.
        commands = ((f"MAIL FROM:<{sender}>{option}", "MAIL FROM"),
                    (f"RCPT TO:<{recipient}>", "RCPT TO"), ("DATA", "DATA"))
        try:
            if smtp.has_extn("pipelining"):
                # RFC 2920: the three commands in one write, then their three replies: two
                # round trips per message instead of four.
                smtp.send("".join(f"{command}\r\n" for command, _ in commands))
                replies = [smtp.getreply() for _ in commands]
                if replies[2][0] == 354 and any(code >= 300 for code, _ in replies[:2]):
                    smtp.send(b".\r\n")  # DATA went through without a recipient: end it empty
                    smtp.getreply()
                for (code, reply), (_, phase) in zip(replies, commands, strict=True):
                    self._check(smtp, code, reply, phase, recipient)
            else:
                for command, phase in commands:
                    smtp.send(f"{command}\r\n")
                    code, reply = smtp.getreply()
                    self._check(smtp, code, reply, phase, recipient)
            smtp.send(payload)
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            raise _Reconnect(str(error) or type(error).__name__) from None
        try:
            code, reply = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self._discard(smtp)
            raise UnknownOutcome(
                f"{recipient}: the connection to {self.host} dropped after the message was sent "
                f"but before the server answered ({error or type(error).__name__}); it may or "
                "may not have been accepted"
            ) from None
        if code == 421:
            self._discard(smtp)
        self._check(smtp, code, reply, "DATA", recipient, reset=False)
        return _text(reply)

    def _check(self, smtp: smtplib.SMTP, code: int, reply: bytes, phase: str,
               recipient: str, *, reset: bool = True) -> None:
        if 200 <= code < 400:
            return
        if reset and code == 421 or code == -1:
            raise _Reconnect(f"{code} {_text(reply)}")  # the server is closing this connection
        if reset:
            try:
                smtp.rset()
            except (smtplib.SMTPException, OSError):
                self._discard(smtp)
        text = f"{recipient}: {phase} refused by {self.host}: {code} {_text(reply)}"
        if 400 <= code < 500:
            raise Deferred(text, code=code, phase=phase)
        raise Refused(text, code=code, phase=phase)

    # -- connections -------------------------------------------------------------------------

    def _connection(self) -> smtplib.SMTP:
        smtp = getattr(self._local, "smtp", None)
        if smtp is None:
            smtp = self._connect()
            self._local.smtp = smtp
            with self._lock:
                self._open.add(smtp)
        return smtp

    def _discard(self, smtp: smtplib.SMTP) -> None:
        smtp.close()
        if getattr(self._local, "smtp", None) is smtp:
            self._local.smtp = None
        with self._lock:
            self._open.discard(smtp)

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> smtplib.SMTP:
        where = f"{self.host}:{self.port}"
        smtp: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                        context=self._tls_context())
                self._count("tls_handshakes")
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            self._count("connections")
            # Without this, the last small TCP segment of a message can wait for a delayed ACK
            # (tens of milliseconds per message, worst behind TLS).
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo()
            if self.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise SetupRefused(
                        f"channels.{self.name}: {where} does not offer STARTTLS; set "
                        'security = "tls" (port 465) if it expects TLS from the start, or '
                        '"none" only for a relay on this machine'
                    )
                smtp.starttls(context=self._tls_context())
                self._count("tls_handshakes")
                smtp.ehlo()
            if self.username_env:
                self._login(smtp)
            return smtp
        except ssl.SSLCertVerificationError as error:
            self._close_quietly(smtp)
            raise SetupRefused(
                f"channels.{self.name}: the certificate of {where} is not trusted "
                f"({error.verify_message}); point ca_file at the CA that signed it, or fix "
                "the host name"
            ) from None
        except (ChannelError, ConfigError):
            self._close_quietly(smtp)
            raise
        except smtplib.SMTPResponseException as error:
            self._close_quietly(smtp)
            text = f"{where} refused the session: {error.smtp_code} {_text(error.smtp_error)}"
            if 500 <= error.smtp_code < 600:
                raise SetupRefused(f"channels.{self.name}: {text}") from None
            raise ServerUnavailable(text) from None
        except (OSError, smtplib.SMTPException) as error:
            self._close_quietly(smtp)
            raise ServerUnavailable(
                f"cannot connect to {where} (channels.{self.name}): "
                f"{redaction.redact(str(error)) or type(error).__name__}"
            ) from None

    def _login(self, smtp: smtplib.SMTP) -> None:
        names = f"{self.username_env} and {self.password_env}"
        try:
            user = self.settings.secret(self.username_env, what=f"channels.{self.name} login")
            password = self.settings.secret(self.password_env,
                                             what=f"channels.{self.name} login")
        except ConfigError as error:
            raise SetupRefused(str(error)) from None
        redaction.register(password)
        if not smtp.has_extn("auth"):
            raise SetupRefused(f"channels.{self.name}: {self.host} offers no AUTH on this "
                               "connection; use security = \"starttls\" or \"tls\", or unset "
                               "username_env and password_env")
        try:
            smtp.login(user, password)
        except smtplib.SMTPAuthenticationError as error:
            raise SetupRefused(
                f"channels.{self.name}: {self.host} refused the login "
                f"({error.smtp_code}); check the user name in {self.username_env} and the "
                f"password in {self.password_env}"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise SetupRefused(f"channels.{self.name}: {self.host} supports none of the login "
                               f"methods briefbot knows; cannot log in with {names}") from None
        self._count("logins")

    def _count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    @staticmethod
    def _close_quietly(smtp: smtplib.SMTP | None) -> None:
        if smtp is not None:
            smtp.close()


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload: leading dots doubled, CRLF-terminated, then the lone dot."""
    data = data.replace(b"\n.", b"\n..")  # every line but the first starts after a LF
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _text(reply: Any) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return redaction.redact(" ".join(str(reply).split()))
