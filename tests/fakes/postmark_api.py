"""A fake Postmark Email API on loopback, built from the reference summarised (with its
examples) in tests/data/postmark-api.md: `POST /email/batch` (up to 500 messages, 50 MB) and
`POST /email/batchWithTemplates`, authenticated by `X-Postmark-Server-Token`, answering one
response per message (`ErrorCode` 0 with a `MessageID`, or the API error code of that message
alone), and the HTTP errors of the Overview (401, 413, 415, 422 with an API error code).

Tests read `sent` (every message Postmark accepted, as received) and mark addresses inactive
(`inactive`) the way a hard bounce or a spam complaint does.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import Any

from tests.fakes.server import FakeApi, Reply, Request, route

MAX_BATCH = 500
MAX_BATCH_BYTES = 50 * 1024 * 1024
ADDRESS = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+")
MUSTACHIO = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")


class FakePostmark(FakeApi):
    def __init__(self, token: str, *, sender_domain: str = "example.org",
                 streams: tuple[str, ...] = ("outbound", "broadcast")) -> None:
        super().__init__()
        self.token = token
        self.sender_domain = sender_domain  # a confirmed sender signature (a domain)
        self.streams = set(streams)
        self.inactive: set[str] = set()
        self.templates: dict[str, dict[str, str]] = {}  # alias → Subject/HtmlBody/TextBody
        self.sent: list[dict[str, Any]] = []  # accepted messages, with MessageID added

    def authorize(self, request: Request) -> Reply | None:
        if (request.header("x-postmark-server-token") or "") != self.token:
            return Reply(401, {"ErrorCode": 10, "Message": "Your request did not contain the "
                               "correct API token in the header."})
        if not (request.header("content-type") or "").lower().startswith("application/json"):
            return Reply(415, {"ErrorCode": 409, "Message": "Your HTTP request does not have "
                               "the Accept and Content-Type headers set to application/json."})
        return None

    # -- endpoints ----------------------------------------------------------------------------

    @route("POST", r"/email/batch")
    def batch(self, request: Request) -> Reply:
        messages = self._messages(request, lambda body: body)
        if isinstance(messages, Reply):
            return messages
        return Reply(200, [self._send(message) for message in messages])

    @route("POST", r"/email/batchWithTemplates")
    def batch_with_templates(self, request: Request) -> Reply:
        messages = self._messages(request, lambda body: body.get("Messages")
                                  if isinstance(body, dict) else None)
        if isinstance(messages, Reply):
            return messages
        return Reply(200, [self._send_template(message) for message in messages])

    # -- plumbing -----------------------------------------------------------------------------

    def _messages(self, request: Request, pick: Any) -> list[Any] | Reply:
        if len(request.body) > MAX_BATCH_BYTES:
            return Reply(413, {"ErrorCode": 300, "Message": "Payload Too Large"})
        try:
            messages = pick(request.json())
        except ValueError:
            return Reply(422, {"ErrorCode": 402, "Message": "The JSON input you provided is "
                               "syntactically incorrect."})
        if not isinstance(messages, list):
            return Reply(422, {"ErrorCode": 300, "Message": "Validation failed for the email "
                               "request JSON data that you provided."})
        if len(messages) > MAX_BATCH:
            return Reply(422, {"ErrorCode": 410, "Message": "You may only send up to 500 "
                               "messages in a batch."})
        return messages

    def _send_template(self, message: Any) -> dict[str, Any]:
        if not isinstance(message, dict):
            return self._error(300, "Validation failed for the email request JSON data that "
                               "you provided.", "")
        template = self.templates.get(str(message.get("TemplateAlias") or
                                          message.get("TemplateId") or ""))
        if template is None:
            return self._error(1101, "The template could not be found.",
                               str(message.get("To") or ""))
        model = message.get("TemplateModel") or {}

        def fill(text: str) -> str:
            return MUSTACHIO.sub(lambda m: str(model.get(m.group(1), "")), text)

        rendered = {k: v for k, v in message.items()
                    if k not in ("TemplateAlias", "TemplateId", "TemplateModel", "InlineCss")}
        rendered.update({name: fill(text) for name, text in template.items()})
        return self._send(rendered)

    def _send(self, message: Any) -> dict[str, Any]:
        if not isinstance(message, dict):
            return self._error(300, "Validation failed for the email request JSON data that "
                               "you provided.", "")
        to = str(message.get("To") or "")
        addresses = [address for _, address in getaddresses([to])]
        if not addresses or len(addresses) > 50 or not all(map(ADDRESS.fullmatch, addresses)):
            return self._error(300, f"Error parsing 'To': Illegal email address '{to}'.", to)
        sender = [address for _, address in getaddresses([str(message.get("From") or "")])]
        if not sender or not sender[0].lower().endswith("@" + self.sender_domain):
            return self._error(400, "You're trying to send email with a From address that "
                               "doesn't have a sender signature.", to)
        if not (message.get("HtmlBody") or message.get("TextBody")):
            return self._error(300, "Provide either email TextBody or HtmlBody or both.", to)
        stream = message.get("MessageStream") or "outbound"
        if stream not in self.streams:
            return self._error(1235, "The message stream for the provided 'MessageStream' "
                               "value was not found.", to)
        headers = message.get("Headers") or []
        if not isinstance(headers, list) or not all(
                isinstance(h, dict) and h.get("Name") for h in headers):
            return self._error(300, "Validation failed for the email request JSON data that "
                               "you provided.", to)
        inactive = [a for a in addresses if a.lower() in self.inactive]
        if inactive:
            return self._error(406, "You tried to send to a recipient that has been marked as "
                               f"inactive. Found inactive addresses: {', '.join(inactive)}. "
                               "Inactive recipients are ones that have generated a hard "
                               "bounce, a spam complaint, or a manual suppression.", to)
        message_id = str(uuid.uuid4())
        with self.lock:
            self.sent.append({**message, "MessageID": message_id})
        return {"ErrorCode": 0, "Message": "OK", "MessageID": message_id,
                "SubmittedAt": datetime.now(UTC).isoformat(), "To": to}

    @staticmethod
    def _error(code: int, message: str, to: str) -> dict[str, Any]:
        return {"ErrorCode": code, "Message": message, "To": to}
