"""Postmark: a mailing through the batch endpoint, `POST /email/batch`, up to 500 messages a call.

Postmark takes each message as fields (HtmlBody, TextBody, Headers), not as MIME bytes, so each
recipient's message is the prepared email's bodies with their unsubscribe link swapped in
(`PreparedEmail.html_for`/`text_for`: a string replace, no rendering) and their own headers
(Message-ID, List-Unsubscribe). A call is also bounded by Postmark's 50 MB: a batch whose JSON
would be larger goes in several calls.

Postmark answers a batch with one response per message: `ErrorCode` 0 is a receipt whose
remote id is Postmark's `MessageID` (what its bounce webhook names); 406 (an inactive
recipient: an earlier hard bounce, a complaint, a suppression) and 300 naming the `To` address
refuse that address alone, as a hard bounce; a code that says the configuration is wrong (no
sender signature, an unknown message stream, an account that may not send) stops the run.
Everything else maps through `bot.channels.http`.

Options: `token_env` (default `POSTMARK_SERVER_TOKEN`), `message_stream` (default
`broadcast`), `tag`, `batch_size`, `connections`, `max_rate`, `timeout`, `api_base`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from email.utils import formataddr
from typing import Any

from bot.channels.base import (
    ChannelError,
    PermanentError,
    Receipt,
    TransientError,
    UnknownOutcome,
)
from bot.channels.batch import BatchChannel, BatchItem, BatchOutcome
from bot.channels.http import HttpClient, error_for, json_or_none, read_secret
from bot.channels.options import PostmarkOptions

MAX_MESSAGES = 500  # "up to 500 messages per API call"
MAX_BYTES = 50 * 1024 * 1024  # "and up to 50 MB payload size"
INACTIVE, INVALID = 406, 300
#: Per-message codes that no recipient causes: the server's setup (sender signature, stream,
#: account) is wrong, so every message of the run would fail the same way.
SETUP_CODES = {10: "the server token", 400: "the sender signature of email.from_address",
               401: "the sender signature of email.from_address (it is not confirmed)",
               405: "the account (it may not send)", 412: "the account (it is pending)",
               413: "the account (it may not send)", 1235: "`message_stream`"}


class PostmarkChannel(BatchChannel):
    type = "postmark"
    Options = PostmarkOptions
    max_batch = MAX_MESSAGES
    wants_raw = False

    def __init__(self, name, config, settings):
        super().__init__(name, config, settings)
        self.token_env = str(self.options.get("token_env", "POSTMARK_SERVER_TOKEN"))
        self.stream = str(self.options.get("message_stream", "broadcast"))
        self.tag = self.options.get("tag")
        self.api_base = str(self.options.get("api_base", "https://api.postmarkapp.com"))
        self.http = HttpClient("Postmark", timeout=float(self.options.get("timeout", 60)))
        self.stats = {"calls": 0}
        self._token: str | None = None

    # -- send -------------------------------------------------------------------------------

    def send_batch(self, prepared, items: Sequence[BatchItem]) -> list[BatchOutcome]:
        # Each message is encoded once and dropped once sent: at most one batch's messages and
        # one call's body are in memory per connection.
        encoded = [_encode(self._message(prepared, item)) for item in items]
        outcomes: list[BatchOutcome] = []
        for start, end in _calls(encoded):
            body = b"[" + b",".join(encoded[start:end]) + b"]"
            encoded[start:end] = [b""] * (end - start)
            try:
                answers = self._post(body)
            except ChannelError as error:
                if not outcomes and (end == len(items) or not isinstance(error, UnknownOutcome)):
                    raise  # one call, or nothing went out: the batch shares the error (and wait)
                # This call's recipients share its error; the calls after it were never made.
                outcomes += [error] * (end - start)
                left = len(items) - end
                outcomes += [TransientError("not sent: an earlier call of its batch failed")
                             ] * left
                return outcomes
            finally:
                del body
            if not isinstance(answers, list) or len(answers) != end - start:
                outcomes += [UnknownOutcome("Postmark answered the batch without one response "
                                            "per message; it may have sent")] * (end - start)
                continue
            outcomes += [self._outcome(answer) for answer in answers]
        return outcomes

    def close(self) -> None:
        self.http.close()

    # -- one message ------------------------------------------------------------------------

    def _message(self, prepared, item: BatchItem) -> dict[str, Any]:
        unsubscribe = f"<{item.unsubscribe_url}>"
        if item.unsubscribe_mailto:
            unsubscribe += f", <{item.unsubscribe_mailto}>"
        headers = [{"Name": "Message-ID", "Value": item.message_id},
                   {"Name": "List-Unsubscribe", "Value": unsubscribe},
                   {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"}]
        shared = prepared.headers
        headers += [{"Name": name, "Value": shared[name]}
                    for name in ("List-Id", "List-Archive") if shared.get(name)]
        message: dict[str, Any] = {
            "From": shared["From"],
            "To": formataddr((item.name or "", item.address)),
            "Subject": prepared.subject,
            "HtmlBody": prepared.html_for(item.unsubscribe_url),
            "TextBody": prepared.text_for(item.unsubscribe_url),
            "Headers": headers,
            "MessageStream": self.stream,
            "TrackOpens": False,
            "TrackLinks": "None",
        }
        if shared.get("Reply-To"):
            message["ReplyTo"] = shared["Reply-To"]
        if self.tag:
            message["Tag"] = self.tag
        return message

    def _outcome(self, answer: Any) -> BatchOutcome:
        if not isinstance(answer, dict):
            return UnknownOutcome("Postmark's response for this message is not an object; it "
                                  "may have sent")
        code = answer.get("ErrorCode")
        text = str(answer.get("Message") or "")[:300]
        if code == 0 and answer.get("MessageID"):
            return Receipt(remote_id=str(answer["MessageID"]))
        if code == INACTIVE or (code == INVALID and "'To'" in text):
            error = PermanentError(f"Postmark refused the address ({code}): {text}")
            error.bounce = "hard"
            return error
        if code in SETUP_CODES:
            return _stopping(f"Postmark refused the message ({code}: {text}); check "
                             f"{SETUP_CODES[code]} of the channel {self.name!r}")
        return PermanentError(f"Postmark refused the message ({code}): {text}")

    # -- plumbing ---------------------------------------------------------------------------

    def _post(self, body: bytes) -> Any:
        if self._token is None:
            self._token = read_secret(self.settings, self.token_env,
                                      f"channel {self.name}: the Postmark server token")
        self.stats["calls"] += 1
        response = self.http.call(
            "POST", f"{self.api_base}/email/batch", doing="sending a batch", data=body,
            headers={"Accept": "application/json", "Content-Type": "application/json",
                     "X-Postmark-Server-Token": self._token})
        answer = json_or_none(response)
        if response.status_code == 200:
            if answer is None:
                raise UnknownOutcome("Postmark answered 200 without JSON; it may have sent")
            return answer
        text = str(answer.get("Message") or "") if isinstance(answer, dict) else response.reason
        error = error_for(response.status_code, str(text or "")[:300],
                          where=f"Postmark answered {response.status_code} to a batch",
                          headers=response.headers, body=answer,
                          credentials=f"check the server token in {self.token_env}",
                          refused=f"check the channel {self.name!r}")
        code = answer.get("ErrorCode") if isinstance(answer, dict) else None
        if response.status_code in (401, 403) or code in SETUP_CODES:
            error.run_level = True  # every batch would fail alike: stop, keep the keys due
        raise error


def _stopping(message: str) -> PermanentError:
    error = PermanentError(message)
    error.run_level = True
    return error


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _calls(encoded: list[bytes]) -> list[tuple[int, int]]:
    """The spans of `encoded` messages whose JSON array stays within MAX_BYTES."""
    calls, start, size = [], 0, 2
    for index, data in enumerate(encoded):
        if index > start and size + len(data) + 1 > MAX_BYTES:
            calls.append((start, index))
            start, size = index, 2
        size += len(data) + 1
    if encoded:
        calls.append((start, len(encoded)))
    return calls
