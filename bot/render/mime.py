"""One email's MIME bytes, built once, then copied per recipient with only the personal parts.

Building an `EmailMessage` per subscriber is slow (a few hundred a second), so `assemble` encodes
headers and bodies once and keeps the result as byte segments with slots between them: the
recipient's To, Date, Message-ID, List-Unsubscribe header, and the unsubscribe URL inside each
body. Each body is quoted-printable encoded piece by piece around its URL token, every piece
ending with a soft line break, so a URL of any length drops in at column 0, is encoded on its
own, and every line stays within 76 octets.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parseaddr

from bot.briefs import clean_text

_SLOT_DATE, _SLOT_TO, _SLOT_MID, _SLOT_UNSUBSCRIBE, _SLOT_TEXT_URL, _SLOT_HTML_URL = range(6)
_ATOM_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")
_DOMAIN = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,200}@[!-;=?-~]{1,200}>")
_URL = re.compile(r"[!#-;=?-~]{1,900}")  # printable ASCII without space, quotes, < and >
_NAME_LIMIT = 200


class HeaderValueError(ValueError):
    """A configured value (From, Reply-To, List-Id) that cannot go in its header."""

    def __init__(self, header: str, message: str):
        super().__init__(message)
        self.header = header


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str | None = None


class PreparedEmail:
    """A rendered, MIME-encoded email waiting for its recipients (see the module docstring).

    `html` and `text` hold `token` where the unsubscribe URL goes; `html_for`/`text_for` fill it.
    """

    def __init__(self, *, subject: str, html: str, text: str, preheader: str, token: str,
                 parts: list[bytes], slots: list[tuple[int, int]],
                 headers: dict[str, str] | None = None):
        self.subject = subject
        #: The headers every recipient's copy shares (From, Reply-To, List-Id, List-Archive),
        #: checked and as configured, for providers that take headers rather than bytes.
        self.headers = headers or {}
        self.html = html
        self.text = text
        self.html_bytes = len(html.encode("utf-8"))
        self.preheader = preheader
        self.token = token  # stands for the unsubscribe URL in `html` and `text`
        self._parts = parts
        self._slots = slots

    def html_for(self, unsubscribe_url: str) -> str:
        """The HTML body as one recipient sees it (for previews)."""
        return self.html.replace(self.token, _html_attr(unsubscribe_url))

    def text_for(self, unsubscribe_url: str) -> str:
        return self.text.replace(self.token, unsubscribe_url)

    def personalise(self, recipient: Recipient, *, message_id: str, unsubscribe_url: str,
                    unsubscribe_mailto: str | None, date: datetime) -> bytes:
        """The complete message for one recipient: CRLF bytes ready for SMTP `DATA`.

        Raises ValueError for an address, URL or Message-ID that cannot go in a header safely.
        """
        if not _MESSAGE_ID.fullmatch(message_id):
            raise ValueError(f"{message_id!r} is not a Message-ID such as <id@example.org>")
        url = _checked_url(unsubscribe_url, "unsubscribe URL")
        unsubscribe = b"<" + url.encode("ascii") + b">"
        if unsubscribe_mailto:
            mailto = unsubscribe_mailto.strip()
            if not mailto.lower().startswith("mailto:"):
                mailto = "mailto:" + mailto
            unsubscribe += b",\r\n <" + _checked_url(mailto, "unsubscribe mailto").encode() + b">"
        if date.tzinfo is None:
            raise ValueError("the Date header needs a timezone-aware datetime")
        values = (
            format_datetime(date).encode("ascii"),
            format_recipient(recipient),
            message_id.encode("ascii"),
            unsubscribe,
            _qp_piece(url.encode("ascii")),
            _qp_piece(_html_attr(url).encode("ascii")),
        )
        chunks = self._parts.copy()
        for index, slot in self._slots:
            chunks[index] = values[slot]
        return b"".join(chunks)


def assemble(*, from_address: str, subject: str, list_id: str, reply_to: str | None,
             html: str, text: str, preheader: str, token: str,
             list_archive: str | None = None) -> PreparedEmail:
    """Encode everything that is the same for every recipient; `token` marks the URL's places.

    Raises HeaderValueError when a configured From, Reply-To or List-Id cannot be used.
    """
    static_headers = b"".join((
        b"Subject: " + _unstructured(clean_text(subject)) + b"\r\n",
        b"From: " + _configured_address(from_address, "From") + b"\r\n",
        b"Reply-To: " + _configured_address(reply_to, "Reply-To") + b"\r\n" if reply_to else b"",
        b"List-Id: " + _list_id(list_id) + b"\r\n",
        b"List-Archive: <" + _list_archive(list_archive) + b">\r\n" if list_archive else b"",
    ))
    # "=_" never occurs in quoted-printable text, and the token already hashes the content.
    boundary = "=_briefbot_" + token.rsplit("-", 1)[-1]

    parts: list[bytes] = []
    slots: list[tuple[int, int]] = []

    def slot(kind: int) -> None:
        slots.append((len(parts), kind))
        parts.append(b"")

    parts.append(b"Date: ")
    slot(_SLOT_DATE)
    parts.append(b"\r\n" + static_headers + b"To: ")
    slot(_SLOT_TO)
    parts.append(b"\r\nMessage-ID: ")
    slot(_SLOT_MID)
    parts.append(b"\r\nList-Unsubscribe: ")
    slot(_SLOT_UNSUBSCRIBE)
    parts.append(
        b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative;\r\n boundary="' + boundary.encode() + b'"\r\n\r\n'
    )
    for subtype, body, kind in (("plain", text, _SLOT_TEXT_URL), ("html", html, _SLOT_HTML_URL)):
        parts.append(
            b"--" + boundary.encode() + b"\r\nContent-Type: text/" + subtype.encode()
            + b'; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
        )
        pieces = _normalise_newlines(body).split(token)
        for number, piece in enumerate(pieces):
            if number:
                slot(kind)
            parts.append(_qp_piece(piece.encode("utf-8"), last=number == len(pieces) - 1))
        parts.append(b"\r\n")
    parts.append(b"--" + boundary.encode() + b"--\r\n")
    headers = {"From": clean_text(from_address), "List-Id": clean_text(list_id)}
    if reply_to:
        headers["Reply-To"] = clean_text(reply_to)
    if list_archive:
        headers["List-Archive"] = f"<{list_archive}>"
    return PreparedEmail(subject=clean_text(subject), html=html, text=text, preheader=preheader,
                         token=token, parts=parts, slots=slots, headers=headers)


def format_recipient(recipient: Recipient) -> bytes:
    """`Name <address>` for the To header: RFC 2047 words for non-ASCII, never a CR or LF."""
    address = _checked_address(recipient.email)
    name = clean_text(recipient.name or "")[:_NAME_LIMIT]
    return _phrase(name) + b" <" + address + b">" if name else address


def _phrase(name: str) -> bytes:
    """A display name: as it is, quoted, or RFC 2047 encoded words."""
    if _ATOM_NAME.fullmatch(name) and "=?" not in name:
        return name.encode("ascii")
    if name.isascii():
        return b'"' + name.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"'
    return b"\r\n ".join(_encoded_words(name))


def _unstructured(text: str) -> bytes:
    """A Subject: ASCII folded at spaces to about 78 columns, else RFC 2047 encoded words."""
    words = text.split(" ")
    if not text.isascii() or "=?" in text or max(map(len, words)) > 900:
        return b"\r\n ".join(_encoded_words(text))
    lines, line = [], ""
    for word in words:
        if line and len(line) + len(word) > 68:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\r\n ".join([*lines, line]).encode("ascii")


def _configured_address(value: str, header: str) -> bytes:
    name, address = parseaddr(clean_text(value))
    try:
        return format_recipient(Recipient(address, name or None))
    except ValueError:
        raise HeaderValueError(header, f"{value!r} is not an address such as "
                               '"Weekly brief <digest@example.org>"') from None


def _list_id(value: str) -> bytes:
    name, list_id = parseaddr(clean_text(value))
    if not _DOMAIN.fullmatch(list_id) or "." not in list_id:
        raise HeaderValueError("List-Id", f"{value!r} is not a list id such as "
                               '"Weekly brief <weekly.example.org>"')
    return (_phrase(name) + b" " if name else b"") + b"<" + list_id.encode("ascii") + b">"


def _list_archive(url: str) -> bytes:
    try:
        return _checked_url(url, "archive URL").encode("ascii")
    except ValueError as error:
        raise HeaderValueError("List-Archive", str(error)) from None


def _encoded_words(text: str, max_bytes: int = 45) -> list[bytes]:
    """Base64 encoded words of at most 75 characters, split between characters."""
    words, chunk = [], b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > max_bytes:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return [b"=?utf-8?b?" + base64.b64encode(word) + b"?=" for word in words if word]


def _checked_address(email: str) -> bytes:
    local, at, domain = email.strip().rpartition("@")
    if at and not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            domain = ""
    if not (at and _LOCAL_PART.fullmatch(local) and _DOMAIN.fullmatch(domain)):
        raise ValueError(f"{email!r} is not an email address this sender can put in a header "
                         "(name@example.org, ASCII before the @); fix the subscriber's address")
    return f"{local}@{domain}".encode("ascii")


def _checked_url(url: str, what: str) -> str:
    if not _URL.fullmatch(url):
        raise ValueError(f"the {what} must be printable ASCII without spaces, quotes or "
                         "angle brackets, at most 900 characters (percent-encode the rest)")
    return url


def _html_attr(url: str) -> str:
    return url.replace("&", "&amp;")


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _qp_piece(data: bytes, *, last: bool = False) -> bytes:
    """Quoted-printable with CRLF; unless `last`, ending in a soft break so what follows starts
    a fresh line."""
    encoded = binascii.b2a_qp(data, istext=True).replace(b"\nFrom ", b"\nFrom=20")
    if encoded.startswith(b"From "):  # mbox-style stores would turn it into ">From"
        encoded = b"From=20" + encoded[5:]
    encoded = encoded.replace(b"\n", b"\r\n")
    if last:
        return encoded
    return encoded + b"=\r\n"
