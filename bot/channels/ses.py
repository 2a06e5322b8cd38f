"""Amazon SES (API v2, through boto3): a mailing in batches, paced by the account's send rate.

Two ways to send, `mode`:

- `bulk` (the default): `SendBulkEmail`, up to 50 destinations a call. The prepared email is
  the call's inline template, with `{{unsubscribe_url}}` where each recipient's link goes, and
  each destination carries its link as replacement data and its `List-Unsubscribe` header:
  one copy of the bodies per call, no per-recipient rendering. A digest whose own text holds
  `{{` (which SES would read as a template tag) goes out as `raw` instead.
- `raw`: each recipient's complete message (the mailing's byte-swapped MIME, with its
  Message-ID) through `SendEmail`, one call per recipient, several calls in flight.

The pace is the account's: `GetAccount`'s `SendQuota.MaxSendRate` (messages a second), read
before the first batch unless `max_rate` is set. Throttling (429 TooManyRequestsException) is
transient: the call is made again after a second, within the delivery step's bounds. Each
destination's result is its own: `SUCCESS` is a receipt whose remote id is SES's `MessageId`
(what its SNS notifications name as `mail.messageId`); a rejected address is a hard bounce
for that address alone; a status or error that says the account or the identity cannot send
stops the run. botocore's own retries are off: a retry decided there could send a batch twice.

Credentials come only from the standard variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
(and `AWS_SESSION_TOKEN` if set); nothing is read from `~/.aws` or an instance's metadata.
boto3 is imported only when a channel of this type sends (`pip install 'briefbot[ses]'`).

Options: `region` (required), `mode`, `configuration_set`, `batch_size`, `connections`,
`max_rate`, `timeout`, `endpoint_url` (a test server or a VPC endpoint).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import formataddr
from typing import Any

from bot import redaction
from bot.channels.base import (
    ChannelError,
    Pacer,
    PermanentError,
    Receipt,
    TransientError,
    UnknownOutcome,
)
from bot.channels.batch import BatchChannel, BatchItem, BatchOutcome, waiting_out
from bot.channels.http import error_for, read_secret
from bot.channels.options import SesOptions
from bot.config import ConfigError
from bot.render.mime import Recipient

log = logging.getLogger("briefbot.channels.ses")

MAX_BULK = 50  # SendBulkEmail: "BulkEmailEntries ... Maximum number of 50 items"
PLACEHOLDER = "{{unsubscribe_url}}"
THROTTLED = {"TooManyRequestsException", "Throttling", "ThrottlingException"}
THROTTLE_WAIT = 1.0  # SES names no delay; its rate is per second
#: Errors that no recipient causes: every call of the run would fail alike.
STOPS = {"AccountSuspendedException", "SendingPausedException",
         "MailFromDomainNotVerifiedException", "NotFoundException", "LimitExceededException"}
#: `BulkEmailEntryResult.Status` values other than SUCCESS, by what they mean here.
ADDRESS_REFUSED = {"MESSAGE_REJECTED"}
RETRY_LATER = {"TRANSIENT_FAILURE", "ACCOUNT_THROTTLED", "FAILED"}
STOP_STATUSES = {"MAIL_FROM_DOMAIN_NOT_VERIFIED", "CONFIGURATION_SET_NOT_FOUND",
                 "TEMPLATE_NOT_FOUND", "ACCOUNT_SUSPENDED", "ACCOUNT_DAILY_QUOTA_EXCEEDED",
                 "INVALID_SENDING_POOL_NAME", "ACCOUNT_SENDING_PAUSED",
                 "CONFIGURATION_SET_SENDING_PAUSED"}
CREDENTIALS = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)"


class SesChannel(BatchChannel):
    type = "ses"
    Options = SesOptions
    max_batch = MAX_BULK

    def __init__(self, name, config, settings):
        super().__init__(name, config, settings)
        if importlib.util.find_spec("boto3") is None:
            raise ConfigError(f"channels.{name}: the SES channel needs boto3; install it with "
                              "pip install 'briefbot[ses]'")
        self.region = str(self.options["region"])
        self.mode = str(self.options.get("mode", "bulk"))
        self.wants_raw = self.mode == "raw"  # the mailing then builds each complete message
        self.configuration_set = self.options.get("configuration_set")
        self.endpoint_url = self.options.get("endpoint_url")
        self.timeout = float(self.options.get("timeout", 60))
        self.stats = {"calls": 0}
        self._lock = threading.Lock()  # the first read of the send rate
        self._client_lock = threading.Lock()
        self._client: Any = None
        self._rate_read = self.max_rate is not None
        self._templates: dict[str, dict[str, Any] | None] = {}

    # -- pace -------------------------------------------------------------------------------

    def pace(self, messages: int) -> None:
        """Before the first batch, the account's send rate from `GetAccount` (unless
        `max_rate` is set); a failure to read it leaves only SES's own throttling."""
        if not self._rate_read:
            with self._lock:
                if not self._rate_read:
                    self._rate_read = True
                    rate = self.account_rate()
                    if rate:
                        self.max_rate = rate
                        self._pacer = Pacer(rate)
        super().pace(messages)

    def account_rate(self) -> float | None:
        try:
            answer = self._call("get_account", doing="reading the send quota", write=False)
        except ChannelError as error:
            log.warning("channel %s: could not read the SES send rate (%s); sending unpaced",
                        self.name, error)
            return None
        rate = (answer.get("SendQuota") or {}).get("MaxSendRate")
        return float(rate) if rate else None

    # -- send -------------------------------------------------------------------------------

    def send_batch(self, prepared, items: Sequence[BatchItem]) -> list[BatchOutcome]:
        template = None if self.wants_raw else self._template(prepared)
        if template is None:
            return self._raw_each(prepared, items)
        entries = [self._entry(item) for item in items]
        answer = self._call("send_bulk_email", doing="sending a bulk batch",
                            DefaultContent={"Template": template}, BulkEmailEntries=entries,
                            **self._common(prepared))
        results = answer.get("BulkEmailEntryResults")
        if not isinstance(results, list) or len(results) != len(items):
            return [UnknownOutcome("SES answered a bulk batch without one result per "
                                   "destination; it may have sent")] * len(items)
        return [self._result(result) for result in results]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- bulk -------------------------------------------------------------------------------

    def _template(self, prepared) -> dict[str, Any] | None:
        """The call's inline template for `prepared` (built once), or None when its own text
        holds `{{`, which SES would read as a tag."""
        key = prepared.token  # it hashes the content: another mailing has another
        if key not in self._templates:
            html = prepared.html.replace(prepared.token, PLACEHOLDER)
            text = prepared.text.replace(prepared.token, PLACEHOLDER)
            own = (prepared.subject + prepared.html + prepared.text).count("{{")
            if own:
                log.info("channel %s: the email holds '{{'; sending each message raw",
                         self.name)
                self._templates = {key: None}
            else:
                shared = prepared.headers
                headers = [{"Name": "List-Unsubscribe-Post",
                            "Value": "List-Unsubscribe=One-Click"}]
                headers += [{"Name": name, "Value": shared[name]}
                            for name in ("List-Id", "List-Archive") if shared.get(name)]
                self._templates = {key: {
                    "TemplateContent": {"Subject": prepared.subject, "Html": html,
                                        "Text": text},
                    "TemplateData": "{}", "Headers": headers}}
        return self._templates[key]

    @staticmethod
    def _entry(item: BatchItem) -> dict[str, Any]:
        unsubscribe = f"<{item.unsubscribe_url}>"
        if item.unsubscribe_mailto:
            unsubscribe += f", <{item.unsubscribe_mailto}>"
        return {
            "Destination": {"ToAddresses": [formataddr((item.name or "", item.address))]},
            "ReplacementEmailContent": {"ReplacementTemplate": {
                "ReplacementTemplateData": json.dumps({"unsubscribe_url": item.unsubscribe_url})}},
            "ReplacementHeaders": [{"Name": "List-Unsubscribe", "Value": unsubscribe}],
        }

    def _common(self, prepared) -> dict[str, Any]:
        common: dict[str, Any] = {"FromEmailAddress": prepared.headers["From"]}
        if prepared.headers.get("Reply-To"):
            common["ReplyToAddresses"] = [prepared.headers["Reply-To"]]
        if self.configuration_set:
            common["ConfigurationSetName"] = self.configuration_set
        return common

    def _result(self, result: Any) -> BatchOutcome:
        status = str(result.get("Status") or "") if isinstance(result, dict) else ""
        said = redaction.redact(str(result.get("Error") or "")[:300]) if status else ""
        if status == "SUCCESS" and result.get("MessageId"):
            return Receipt(remote_id=str(result["MessageId"]))
        if status in ADDRESS_REFUSED:
            error = PermanentError(f"SES refused the address ({status}): {said}")
            error.bounce = "hard"
            return error
        if status in RETRY_LATER:
            return TransientError(f"SES did not send it ({status}): {said}")
        if status in STOP_STATUSES:
            return _stopping(f"SES cannot send for this account ({status}): {said}; check the "
                             f"account, the sender identity and `configuration_set` of the "
                             f"channel {self.name!r}")
        return PermanentError(f"SES refused the message ({status or 'no status'}): {said}")

    # -- raw --------------------------------------------------------------------------------

    def _raw_each(self, prepared, items: Sequence[BatchItem]) -> list[BatchOutcome]:
        """Each recipient's complete message in its own `SendEmail`. A failure that is not the
        address's own ends the batch there: the rest were not sent."""
        common = self._common(prepared)
        outcomes: list[BatchOutcome] = []
        now = datetime.now(UTC)
        for index, item in enumerate(items):
            raw = item.raw if item.raw is not None else prepared.personalise(
                Recipient(item.address, item.name), message_id=item.message_id,
                unsubscribe_url=item.unsubscribe_url,
                unsubscribe_mailto=item.unsubscribe_mailto, date=now)
            try:
                answer = self._send_raw(raw, item.address, common)
            except ChannelError as error:
                if error.bounce or (isinstance(error, PermanentError) and not error.run_level):
                    outcomes.append(error)  # this address (or message) only
                    continue
                if index == 0 and (len(items) == 1 or not isinstance(error, UnknownOutcome)):
                    raise  # nothing went out: the delivery step decides for the whole batch
                outcomes.append(error)
                outcomes += [TransientError("not sent: an earlier message of its batch "
                                            f"failed ({error})")] * (len(items) - index - 1)
                return outcomes
            outcomes.append(Receipt(remote_id=str(answer.get("MessageId"))))
        return outcomes

    def _send_raw(self, raw: bytes, address: str, common: dict[str, Any]) -> dict[str, Any]:
        # Throttling is waited out message by message: raised, it would end the batch here.
        return waiting_out(lambda: self._call("send_email", doing="sending a message",
                                              Destination={"ToAddresses": [address]},
                                              Content={"Raw": {"Data": raw}}, **common))

    # -- plumbing ---------------------------------------------------------------------------

    def _session_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                token = os.environ.get("AWS_SESSION_TOKEN") or None
                if token:
                    redaction.register(token)
                session = boto3.session.Session(
                    aws_access_key_id=read_secret(self.settings, "AWS_ACCESS_KEY_ID",
                                                  f"channel {self.name}: the AWS access key"),
                    aws_secret_access_key=read_secret(
                        self.settings, "AWS_SECRET_ACCESS_KEY",
                        f"channel {self.name}: the AWS secret key"),
                    aws_session_token=token, region_name=self.region)
                self._client = session.client(
                    "sesv2", endpoint_url=self.endpoint_url, config=Config(
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=min(10.0, self.timeout), read_timeout=self.timeout,
                        max_pool_connections=max(10, self.connections),
                        user_agent_extra="briefbot"))
            return self._client

    def _call(self, operation: str, *, doing: str, write: bool = True, **kwargs: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        client = self._session_client()
        self.stats["calls"] += 1
        try:
            return getattr(client, operation)(**kwargs)
        except ClientError as error:
            raise self._error(error, doing, write) from None
        except (ReadTimeoutError, ConnectionClosedError) as error:
            if not write:
                raise TransientError(f"Amazon SES did not answer while {doing} "
                                     f"({type(error).__name__})") from None
            raise UnknownOutcome(f"Amazon SES did not answer while {doing} "
                                 f"({type(error).__name__}); it may have sent") from None
        except EndpointConnectionError as error:  # connect timeouts too: nothing was sent
            raise TransientError(f"could not reach Amazon SES while {doing} "
                                 f"({type(error).__name__})") from None
        except BotoCoreError as error:
            if not write:
                raise TransientError(f"Amazon SES failed while {doing} "
                                     f"({type(error).__name__})") from None
            raise UnknownOutcome(f"Amazon SES failed while {doing} ({type(error).__name__}); "
                                 "it may have sent") from None

    def _error(self, error: Any, doing: str, write: bool) -> ChannelError:
        """The delivery error an SES error answer means: throttling and the account's own
        state here, the rest through the shared HTTP mapping."""
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(error.response.get("Error", {}).get("Code") or "")
        text = redaction.redact(str(error.response.get("Error", {}).get("Message") or ""))[:300]
        where = f"Amazon SES answered {status} ({code}) while {doing}"
        if code in THROTTLED:
            return TransientError(f"{where}: throttled", retry_after=THROTTLE_WAIT)
        if code in STOPS or (code == "MessageRejected" and "not verified" in text.lower()):
            return _stopping(f"{where}: {text}; check the account, the sender identity of "
                             f"email.from_address and `configuration_set` of the channel "
                             f"{self.name!r}")
        if code == "MessageRejected":
            refused = PermanentError(f"{where}: {text}")
            refused.bounce = "hard"
            return refused
        mapped = error_for(status, text, where=where, method="POST" if write else "GET",
                           credentials=CREDENTIALS, refused=f"check the channel {self.name!r}")
        if status in (401, 403):
            mapped.run_level = True
        return mapped


def _stopping(message: str) -> PermanentError:
    error = PermanentError(message)
    error.run_level = True
    return error

