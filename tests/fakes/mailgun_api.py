"""A fake Mailgun messages API on loopback, built from the reference summarised in
tests/data/mailgun-api.md: `POST /v3/<domain>/messages` with HTTP basic auth (`api`, key),
multipart form fields (`to` repeated, `recipient-variables` JSON, `o:tag`, `h:` headers),
at most 1,000 recipients, `%recipient.KEY%` substituted per recipient; answers
`{"id": "<...>", "message": "Queued. Thank you."}` or `{"message": ...}` with 400/401/404.

Every recipient of an accepted call is kept in `delivered` as Mailgun would send it (its own
subject, bodies and headers), with the call's id, and in `received` as (id, address).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from dataclasses import dataclass
from email.message import Message as MimeMessage
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import parseaddr

from tests.fakes.server import FakeApi, Reply, Request, route

MAX_RECIPIENTS = 1000
VARIABLE = re.compile(r"%recipient\.([A-Za-z0-9_-]+)%")
# A plain syntax check in the spirit of the reference's "fails syntax checks": local@domain.tld
ADDRESS = re.compile(r"[^@\s<>\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")


@dataclass
class Delivered:
    """One recipient's message as Mailgun builds it from a call."""

    id: str
    to: str  # the address
    display: str  # the `to` value as given
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    tags: list[str]


def form_fields(request: Request) -> list[tuple[str, str]]:
    """Every multipart field in order, repeated names kept (`to` is given once per address)."""
    head = f"Content-Type: {request.header('content-type')}\r\n\r\n".encode()
    parsed = BytesParser(policy=HTTP).parsebytes(head + request.body)
    fields = []
    for part in parsed.iter_parts() if parsed.is_multipart() else []:
        assert isinstance(part, MimeMessage)
        name = str(part.get_param("name", header="content-disposition"))
        fields.append((name, (part.get_payload(decode=True) or b"").decode("utf-8")))
    return fields


class FakeMailgun(FakeApi):
    def __init__(self, api_key: str, domain: str, *, keep_messages: bool = True) -> None:
        super().__init__()
        #: With False, a big send keeps only `received` (id, address), not every message.
        self.keep_messages = keep_messages
        self.received: list[tuple[str, str]] = []
        self.api_key = api_key
        self.domain = domain
        self.delivered: list[Delivered] = []
        #: Addresses this fake's syntax check refuses (as Mailgun refuses a whole call).
        self.invalid: set[str] = set()
        #: Seconds to wait before answering the next accepted calls (a slow answer: the
        #: client's read timeout fires after the work is done).
        self.stalls: list[float] = []
        self._ids = itertools.count(1)

    def authorize(self, request: Request) -> Reply | None:
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if request.header("authorization") != expected:
            return Reply(401, "Forbidden")
        return None

    def stall_next(self, seconds: float) -> None:
        with self.lock:
            self.stalls.append(seconds)

    @route("POST", r"/v3/(?P<domain>[^/]+)/messages")
    def messages(self, request: Request, domain: str) -> Reply:
        if domain != self.domain:
            return Reply(404, {"message": "Domain not found"})
        if not (request.header("content-type") or "").startswith("multipart/form-data"):
            return self._bad("expected multipart/form-data")
        fields = form_fields(request)
        one = {name: value for name, value in fields}
        recipients = [value for name, value in fields if name == "to"]
        if not one.get("from"):
            return self._bad("from parameter is missing")
        if not recipients:
            return self._bad("to parameter is missing")
        if not any(one.get(k) for k in ("text", "html", "amp-html", "template")):
            return self._bad("Need at least one of 'text', 'html', 'amp-html' or 'template' "
                             "parameters specified")
        if len(recipients) > MAX_RECIPIENTS:
            return self._bad(f"too many recipients: at most {MAX_RECIPIENTS} per batch")
        addresses = []
        for display in recipients:
            address = parseaddr(display)[1]
            if not ADDRESS.fullmatch(address) or address in self.invalid:
                return self._bad("'to' parameter is not a valid address. please check "
                                 "documentation")
            addresses.append(address)
        variables: dict[str, dict] = {}
        if "recipient-variables" in one:
            try:
                variables = json.loads(one["recipient-variables"])
            except ValueError:
                return self._bad("recipient-variables parameter is not a valid JSON")
            if not isinstance(variables, dict):
                return self._bad("recipient-variables parameter is not a valid JSON")
        message_id = f"<20261203.{next(self._ids)}.briefbot-fake@{self.domain}>"
        tags = [value for name, value in fields if name == "o:tag"]
        headers = {name[2:]: value for name, value in fields if name.startswith("h:")}
        self.received.extend((message_id, address) for address in addresses)
        for display, address in zip(recipients, addresses, strict=True):
            if not self.keep_messages:
                break
            own = variables.get(address, {})

            def fill(text: str, own: dict = own) -> str:
                return VARIABLE.sub(lambda m: str(own.get(m.group(1), m.group(0))), text)

            self.delivered.append(Delivered(
                id=message_id, to=address, display=display, subject=fill(one.get("subject", "")),
                text=fill(one.get("text", "")), html=fill(one.get("html", "")),
                headers={k: fill(v) for k, v in headers.items()}, tags=tags))
        if self.stalls:
            time.sleep(self.stalls.pop(0))
        return Reply(200, {"id": message_id, "message": "Queued. Thank you."})

    @staticmethod
    def _bad(message: str) -> Reply:
        return Reply(400, {"message": message})
