"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives and misbehaves on cue.

It can refuse given recipients (550 or 451), drop the connection at the Nth recipient, before
any data (the client may safely resend), or after the Nth message was received but before the
reply (an unknown outcome for the client), and speak STARTTLS + AUTH with a certificate made
here by a throwaway test CA.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes

    def parse(self) -> EmailMessage:
        return BytesParser(policy=default).parsebytes(self.data)


@dataclass
class Mailbox:
    """The handler: stores messages; `refuse`, `drop_before_data` and `drop_before_reply` make
    it misbehave. They count recipients (RCPT commands) and messages (DATA) from 1, across
    connections, retries included."""

    refuse: dict[str, int] = field(default_factory=dict)
    pipelining: bool = False  # offer PIPELINING (RFC 2920); aiosmtpd reads commands in order
    drop_before_data: set[int] = field(default_factory=set)
    drop_before_reply: set[int] = field(default_factory=set)
    reply_delay: float = 0.0  # seconds before each DATA reply: a slow relay
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    recipients: int = 0
    transactions: int = 0
    logins: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.recipients += 1
            drop = self.recipients in self.drop_before_data
        if drop:
            server.transport.close()
            return "421 4.3.0 connection dropped by the test server"
        code = self.refuse.get(address.lower())
        if code == 550:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        if code == 451:
            return f"451 4.2.0 <{address}>: try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.transactions += 1
            number = self.transactions
        if number in self.drop_before_reply:
            self._keep(envelope)
            server.transport.close()
            return "421 4.3.0 connection dropped by the test server"
        self._keep(envelope)
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        return f"250 2.0.0 Ok: queued as T{number}"

    def _keep(self, envelope) -> None:
        with self.lock:
            self.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos),
                                          envelope.original_content or envelope.content))

    # -- what tests read -----------------------------------------------------------------

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.messages)

    def per_recipient(self) -> Counter[str]:
        return Counter(r.lower() for m in self.received() for r in m.rcpt_tos)

    def wait_for(self, count: int, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= count:
                return True
            time.sleep(0.01)
        return self.count() >= count


class _CountingController(Controller):
    def factory(self):
        mailbox: Mailbox = self.handler
        with mailbox.lock:
            mailbox.connections += 1
        return super().factory()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, what: str, timeout: float = 30.0) -> None:
    """Until a server `what` listens on 127.0.0.1:`port` (a bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


@dataclass
class SmtpServer:
    host: str
    port: int
    mailbox: Mailbox
    ca_file: Path | None = None


@contextmanager
def smtp_server(mailbox: Mailbox | None = None, *, tls: TestCertificates | None = None,
                credentials: tuple[str, str] | None = None) -> Iterator[SmtpServer]:
    """Serve on 127.0.0.1; with `tls`, STARTTLS is offered and required before AUTH/MAIL;
    with `credentials`, AUTH PLAIN/LOGIN is required and checked against them."""
    mailbox = mailbox or Mailbox()
    kwargs: dict = {}
    if tls is not None:
        kwargs.update(tls_context=tls.server_context(), require_starttls=True)
    if credentials is not None:
        user, password = credentials

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login.decode() == user
                  and auth_data.password.decode() == password)
            if ok:
                with mailbox.lock:
                    mailbox.logins.append(mechanism)
            return AuthResult(success=ok, handled=False)

        kwargs.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=tls is not None)
    controller = _CountingController(mailbox, hostname="127.0.0.1", port=free_port(),
                                     ready_timeout=10, **kwargs)
    controller.start()
    with mailbox.lock:
        mailbox.connections = 0  # start() opens one connection of its own to check it serves
    try:
        yield SmtpServer("127.0.0.1", controller.port, mailbox,
                         tls.ca_file if tls is not None else None)
    finally:
        controller.stop()


@dataclass
class TestCertificates:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, signed by it."""

    folder: Path
    ca_file: Path
    cert_file: Path
    key_file: Path

    __test__ = False  # not a pytest class

    @classmethod
    def create(cls, folder: Path) -> TestCertificates:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        folder.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "briefbot test CA")])
        ca = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        paths = cls(folder, folder / "ca.pem", folder / "server.pem", folder / "server.key")
        paths.ca_file.write_bytes(ca.public_bytes(pem))
        paths.cert_file.write_bytes(cert.public_bytes(pem))
        paths.key_file.write_bytes(key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return paths

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context
