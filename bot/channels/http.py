"""What every adapter that talks to a web API shares: one session, secrets read through the
settings and kept out of logs, one mapping of HTTP answers and transport failures to the
delivery errors, and one `Retry-After` reader.

The mapping, in one place so every network behaves alike:

- the request never left (no connection, TLS refused, connect timeout): `TransientError`;
- it left and no answer came (read timeout, connection dropped): `UnknownOutcome`, which
  `reconcile` or the channel's `unknown_policy` settles, never a blind retry;
- 429: `TransientError` with the announced delay; 408 and 503: `TransientError` (the server
  says it did not take the request); any other 5xx after a write: `UnknownOutcome` (a gateway
  error or a crash may come after the work was done);
- 401/403: `PermanentError` naming the credential to check; other 4xx: `PermanentError`.

A `repeatable` request (an idempotent write, such as Bluesky's `putRecord` under a record key
of ours) is safe to send again, so a lost answer or a 5xx is a `TransientError` there too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from bot import redaction
from bot.config import ConfigError, Settings
from bot.message import ChannelError, PermanentError, TransientError, UnknownOutcome

USER_AGENT = "briefbot"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def read_secret(settings: Settings, env_name: str, what: str) -> str:
    """A credential from the environment, registered so no log record or error shows it."""
    try:
        value = settings.secret(env_name, what=what)
    except ConfigError as error:
        raise PermanentError(str(error)) from None
    redaction.register(value)
    return value


def retry_after(headers: Mapping[str, str], body: Any = None) -> float | None:
    """Seconds to wait: `Retry-After` (seconds or an HTTP date), a rate-limit reset header
    (X's `x-rate-limit-reset` and the Bluesky PDS's `RateLimit-Reset`, Unix seconds;
    Mastodon's `X-RateLimit-Reset`, an ISO 8601 time), else a JSON body's `retry_after`
    (Discord) or `parameters.retry_after` (Telegram). `headers` should be case-insensitive,
    as requests' are."""
    reset = (headers.get("X-RateLimit-Reset") or headers.get("x-rate-limit-reset")
             or headers.get("RateLimit-Reset") or "").strip()
    if reset:
        if reset.isdigit():
            return max(0.0, int(reset) - time.time())
        try:
            moment = datetime.fromisoformat(reset.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            return max(0.0, (moment - datetime.now(UTC)).total_seconds())
    value = (headers.get("Retry-After") or "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    if isinstance(body, dict):
        for holder in (body, body.get("parameters")):
            if isinstance(holder, dict) and holder.get("retry_after") is not None:
                try:
                    return max(0.0, float(holder["retry_after"]))
                except (TypeError, ValueError):
                    return None
    return None


def error_for(status: int, text: str, *, where: str, method: str = "POST",
              headers: Mapping[str, str] | None = None, body: Any = None,
              credentials: str = "", refused: str = "", repeatable: bool = False) -> ChannelError:
    """The delivery error an HTTP answer means. `where` says who answered what ("Telegram
    answered 400 while posting"); `credentials` what to check on 401/403; `refused` what
    to check on another 4xx; `repeatable` as the module says."""
    headers = headers or {}
    text = redaction.redact(text)
    message = f"{where}: {text}" if text else where
    if status == 429:
        return TransientError(f"{where}: rate limited", retry_after=retry_after(headers, body))
    if status in (408, 503):
        return TransientError(message, retry_after=retry_after(headers, body))
    if status >= 500:
        if method in WRITES and not repeatable:
            return UnknownOutcome(f"{message}; the request may have been carried out")
        return TransientError(message, retry_after=retry_after(headers, body))
    if status in (401, 403) and credentials:
        return PermanentError(f"{message}; {credentials}")
    return PermanentError(f"{message}; {refused}" if refused else message)


class HttpClient:
    """A session for one adapter; `call` maps transport failures as the module says."""

    def __init__(self, service: str, *, timeout: float):
        self.service = service  # how errors name the far end ("Telegram", "mastodon.social")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def call(self, method: str, url: str, *, doing: str, repeatable: bool = False,
             **kwargs: Any) -> requests.Response:
        write = method in WRITES and not repeatable
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as error:
            raise TransientError(f"could not reach {self.service} while {doing}: it did not "
                                 f"answer ({type(error).__name__})") from None
        except requests.ConnectionError as error:
            if never_left(error) or not write:
                raise TransientError(f"could not reach {self.service} while {doing}: it did "
                                     "not answer") from None
            raise UnknownOutcome(f"{self.service} dropped the connection while {doing}, before "
                                 "answering") from None
        except requests.RequestException as error:
            if not write:
                raise TransientError(f"{self.service} did not answer while {doing} "
                                     f"({type(error).__name__})") from None
            raise UnknownOutcome(f"{self.service} did not answer while {doing} "
                                 f"({type(error).__name__})") from None

    def close(self) -> None:
        self.session.close()


def never_left(error: BaseException) -> bool:
    """A connection that could not be made (or a connect timeout): the request was
    certainly not sent."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    text = repr(error)
    return "NewConnectionError" in text or "Failed to establish" in text or (
        "Name or service not known" in text)


def json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
