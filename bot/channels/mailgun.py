"""Mailgun: the digest (and single-brief emails) through the messages API, 1,000 recipients a call.

One `POST /v3/<domain>/messages` carries the prepared email as a template and every
recipient's own parts as `recipient-variables` (Mailgun's batch sending): the unsubscribe link
in both bodies and in `List-Unsubscribe` is `%recipient.unsubscribe_url%`, so nothing is
rendered per recipient. Mailgun answers one message id for the whole call; each recipient's
receipt keeps it, and its event webhooks (`bot.webhooks.mailgun`) name it with the recipient,
which is how a bounce finds its campaign.

Mailgun refuses a whole call when one address fails its syntax check ("'to' parameter is not a
valid address"): nothing was sent, so the batch is split in halves and each half sent again,
down to the refused address alone, which is then a hard bounce while the others go out.
Everything else maps as `bot.channels.http` says; a missing domain or a refused key stops the
run (`run_level`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from bot.channels.base import PermanentError, Receipt
from bot.channels.batch import BatchChannel, BatchItem, BatchOutcome, template_html, template_text
from bot.channels.http import HttpClient, error_for, json_or_none, read_secret
from bot.channels.options import MailgunOptions
from bot.render.mime import Recipient, format_recipient

if TYPE_CHECKING:
    from bot.render.mime import PreparedEmail

REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
URL = "%recipient.unsubscribe_url%"
URL_HTML = "%recipient.unsubscribe_html%"
LIST_UNSUBSCRIBE = "%recipient.list_unsubscribe%"


class SetupRefused(PermanentError):
    """Mailgun refused the key or does not know the domain: nothing can go out until fixed."""

    run_level = True


class Refused(PermanentError):
    """Mailgun refused this one address."""

    bounce = "hard"


class MailgunChannel(BatchChannel):
    type = "mailgun"
    Options = MailgunOptions
    max_batch: ClassVar[int] = 1000  # "The maximum number of recipients allowed for batch"

    def __init__(self, name, config, settings):
        super().__init__(name, config, settings)
        options = self.options
        self.domain = str(options["domain"])
        base = options.get("api_base") or REGIONS[options.get("region", "us")]
        self.url = f"{base.rstrip('/')}/v3/{self.domain}/messages"
        self.api_key_env = options.get("api_key_env", "MAILGUN_API_KEY")
        self.tags = list(options.get("tags", []))
        self.http = HttpClient("Mailgun", timeout=float(options.get("timeout", 60)))
        self._key: str | None = None
        self.stats = {"calls": 0}

    def send_batch(self, prepared: PreparedEmail,
                   items: Sequence[BatchItem]) -> list[BatchOutcome]:
        if self._key is None:
            self._key = read_secret(self.settings, self.api_key_env,
                                    f"channel {self.name}: the Mailgun API key")
        boundary = ("briefbot-" + os.urandom(12).hex()).encode()
        shared = self._shared_fields(boundary, prepared)
        return self._send(boundary, shared, list(items))

    def _send(self, boundary: bytes, shared: bytes,
              items: list[BatchItem]) -> list[BatchOutcome]:
        body = _multipart(boundary, shared, items)
        self.stats["calls"] += 1
        response = self.http.call(
            "POST", self.url, doing=f"sending a batch of {len(items)}", data=body,
            auth=("api", self._key or ""),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"})
        answer = json_or_none(response)
        said = str(answer.get("message", "")) if isinstance(answer, dict) else response.text
        if response.status_code == 200 and isinstance(answer, dict) and answer.get("id"):
            receipt = Receipt(remote_id=str(answer["id"]))
            return [receipt] * len(items)
        if response.status_code == 400 and "'to'" in said:
            if len(items) == 1:  # nothing went out: this address alone was refused
                return [Refused(f"Mailgun refused {items[0].address}: {said[:300]}")]
            half = len(items) // 2
            return (self._send(boundary, shared, items[:half])
                    + self._send(boundary, shared, items[half:]))
        where = f"Mailgun answered {response.status_code} while sending a batch"
        if response.status_code in (401, 403, 404):
            hint = (f"check ${self.api_key_env} and that `channels.{self.name}.domain` "
                    f"({self.domain}) is a sending domain of that account in the "
                    f"{self.options.get('region', 'us').upper()} region")
            raise SetupRefused(f"{where}: {said[:300]}; {hint}")
        raise error_for(response.status_code, said[:300], where=where,
                        headers=response.headers, body=answer)

    def _shared_fields(self, boundary: bytes, prepared: PreparedEmail) -> bytes:
        """Every part of the call that is the same for each recipient, encoded once."""
        headers = prepared.headers
        fields = [("from", headers.get("From", "")), ("subject", prepared.subject),
                  ("text", template_text(prepared, URL)),
                  ("html", template_html(prepared, URL_HTML)),
                  ("h:List-Unsubscribe", LIST_UNSUBSCRIBE),
                  ("h:List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]
        for name in ("List-Id", "Reply-To", "List-Archive"):
            if headers.get(name):
                fields.append((f"h:{name}", headers[name]))
        fields += [("o:tag", tag) for tag in self.tags]
        if any(boundary.decode() in value for _, value in fields):  # pragma: no cover
            raise PermanentError("the email contains the form boundary (96 random bits); "
                                 "send it again")
        return b"".join(_part(boundary, name, value) for name, value in fields)

    def close(self) -> None:
        self.http.close()


def _part(boundary: bytes, name: str, value: str) -> bytes:
    return (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name.encode()
            + b'"\r\n\r\n' + value.encode("utf-8") + b"\r\n")


def _variables(item: BatchItem) -> dict[str, str]:
    unsubscribe = f"<{item.unsubscribe_url}>"
    if item.unsubscribe_mailto:
        unsubscribe += f", <{item.unsubscribe_mailto}>"
    return {"unsubscribe_url": item.unsubscribe_url,
            "unsubscribe_html": item.unsubscribe_url.replace("&", "&amp;"),
            "list_unsubscribe": unsubscribe}


def _multipart(boundary: bytes, shared: bytes, items: list[BatchItem]) -> bytes:
    """The form body: the shared parts, one `to` per recipient, and their variables."""
    recipients = [_part(boundary, "to",
                        format_recipient(Recipient(item.address, item.name)).decode())
                  for item in items]
    variables = json.dumps({item.address: _variables(item) for item in items},
                           separators=(",", ":"))
    return (shared + b"".join(recipients) + _part(boundary, "recipient-variables", variables)
            + b"--" + boundary + b"--\r\n")
