"""Webhooks: a JSON POST per brief to a URL, shaped for a generic receiver, Slack or Discord.

A webhook URL often *is* the credential (Slack's and Discord's are), so it may come from an
environment variable (`url_env`) and is then kept out of logs and error messages. Every request
carries an `Idempotency-Key` derived from the delivery key, for receivers that deduplicate, and,
with `secret_env`, an `X-Briefbot-Signature: sha256=<HMAC of the body>` so a receiver can check
that the request came from us. A webhook cannot be asked what it received, so an unknown outcome
is settled by the channel's `unknown_policy`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import replace
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from bot import redaction
from bot.channels.base import (
    Channel,
    ChannelError,
    Message,
    PermanentError,
    Receipt,
    TransientError,
    UnknownOutcome,
)
from bot.channels.options import WebhookOptions
from bot.config import ConfigError
from bot.render.post import render_post


class WebhookChannel(Channel):
    type = "webhook"
    Options = WebhookOptions

    def __init__(self, name, config, settings):
        super().__init__(name, config, settings)
        self.url_option = self.options.get("url")
        self.url_env = self.options.get("url_env")
        self.shape = str(self.options.get("shape", "generic"))
        self.secret_env = self.options.get("secret_env")
        self.timeout = float(self.options.get("timeout", 15))
        self._session: requests.Session | None = None

    def render(self, brief, key) -> Message:
        message = render_post(brief, key, network=self.options.get("network", "generic"),
                              settings=self.settings, options=self.options)
        image = brief.image if brief.image and urlsplit(brief.image).scheme in (
            "http", "https") else None
        notes = message.notes
        if brief.image and not image:
            notes += ("the hero image is a local file; webhooks carry only image URLs",)
        return replace(message, image=image, notes=notes)

    def payload(self, message: Message) -> dict[str, Any]:
        """The JSON body for this channel's shape."""
        title = str(message.extra.get("title") or "")
        summary = str(message.extra.get("summary") or "")
        if self.shape == "slack":
            blocks: list[dict[str, Any]] = [{"type": "section", "text": {
                "type": "mrkdwn", "text": _slack_escape(message.text)}}]
            if message.image:
                blocks.append({"type": "image", "image_url": message.image,
                               "alt_text": (message.image_alt or title or "image")[:2000]})
            return {"text": message.text, "blocks": blocks, "unfurl_links": True}
        if self.shape == "discord":
            embed: dict[str, Any] = {"title": title[:256], "description": summary[:4096]}
            if message.link:
                embed["url"] = message.link
            if message.image:
                embed["image"] = {"url": message.image}
            return {"content": message.text[:2000], "embeds": [embed],
                    "allowed_mentions": {"parse": []}}
        return {
            "text": message.text, "link": message.link, "title": title, "summary": summary,
            "image": message.image, "image_alt": message.image_alt,
            "brief": message.key.campaign.removeprefix("brief:"),
            "idempotency_key": message.idempotency_key,
        }

    def send(self, message: Message) -> Receipt:
        url = self._url()
        body = json.dumps(self.payload(message), ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Idempotency-Key": message.idempotency_key,
                   "User-Agent": "briefbot (webhook)"}
        if self.secret_env:
            headers["X-Briefbot-Signature"] = "sha256=" + hmac.new(
                self._secret(self.secret_env, "the webhook signing secret").encode(),
                body, hashlib.sha256).hexdigest()
        params = {"wait": "true"} if self.shape == "discord" else None
        if self._session is None:
            self._session = requests.Session()
        try:
            response = self._session.post(url, data=body, headers=headers, params=params,
                                          timeout=self.timeout)
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as error:
            raise TransientError(f"could not reach the webhook {self._where()} "
                                 f"({type(error).__name__})") from None
        except requests.ConnectionError as error:
            if "NewConnectionError" in repr(error) or "Failed to establish" in repr(error):
                raise TransientError(f"could not reach the webhook {self._where()}") from None
            # The request may have arrived: without reconcile, the unknown policy decides.
            raise UnknownOutcome(f"the webhook {self._where()} dropped the connection before "
                                 "answering") from None
        except requests.RequestException as error:
            raise UnknownOutcome(f"the webhook {self._where()} did not answer "
                                 f"({type(error).__name__})") from None
        if response.ok:
            return _receipt(response, message)
        raise self._error(response)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _url(self) -> str:
        if self.url_option:
            return str(self.url_option)
        url = self._secret(str(self.url_env), "the webhook URL")
        parts = urlsplit(url)
        # HTTP libraries log the path alone ("POST /services/T0/B0/XYZ"): it is the secret part.
        redaction.register(parts.path, parts.query, f"{parts.path}?{parts.query}")
        return url

    def _secret(self, env_name: str, what: str) -> str:
        try:
            value = self.settings.secret(env_name, what=f"channel {self.name}: {what}")
        except ConfigError as error:
            raise PermanentError(str(error)) from None
        redaction.register(value)
        return value

    def _where(self) -> str:
        if self.url_option:
            return f"at {urlsplit(str(self.url_option)).netloc}"
        return f"in {self.url_env}"

    def _error(self, response: requests.Response) -> ChannelError:
        text = redaction.redact((response.text or response.reason or "")[:200].strip())
        where = f"the webhook {self._where()} answered {response.status_code}"
        if response.status_code == 429:
            return TransientError(f"{where}: rate limited", retry_after=_retry_after(response))
        if response.status_code >= 500 or response.status_code == 408:
            return TransientError(f"{where}: {text}", retry_after=_retry_after(response))
        option = "url" if self.url_option else f"url_env ({self.url_env})"
        return PermanentError(f"{where}: {text}; check `{option}` and `shape` "
                              f"({self.shape}) of the channel {self.name!r}")


def _receipt(response: requests.Response, message: Message) -> Receipt:
    """The receiver's id and URL if it returned JSON with them, else our idempotency key."""
    try:
        data = response.json()
    except ValueError:
        data = None
    data = data if isinstance(data, dict) else {}
    remote_id = data.get("id")
    url = data.get("url")
    return Receipt(remote_id=str(remote_id) if remote_id else message.idempotency_key,
                   url=url if isinstance(url, str) else None)


def _retry_after(response: requests.Response) -> float | None:
    """`Retry-After` in seconds or as an HTTP date, else Discord's JSON `retry_after`."""
    value = response.headers.get("Retry-After", "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    try:
        seconds = response.json().get("retry_after")
        return max(0.0, float(seconds)) if seconds is not None else None
    except (ValueError, AttributeError, TypeError):
        return None


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
