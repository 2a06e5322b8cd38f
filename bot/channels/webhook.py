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
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import requests

from bot import redaction
from bot.channels.base import (
    Channel,
    Message,
    Receipt,
)
from bot.channels.http import HttpClient, error_for, json_or_none, read_secret
from bot.channels.networks import network_of
from bot.channels.options import WebhookOptions
from bot.message import Note, NoteKind
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
        self._http: HttpClient | None = None

    def render(self, brief, key) -> Message:
        message = render_post(brief, key, network=network_of(self), settings=self.settings,
                              options=self.options)
        image = brief.image if brief.image and urlsplit(brief.image).scheme in (
            "http", "https") else None
        notes = message.notes
        if brief.image and not image:
            notes += (Note(NoteKind.WARNING,
                           "the hero image is a local file; webhooks carry only image URLs"),)
        return replace(message, image=image, notes=notes)

    def payload(self, message: Message) -> dict[str, Any]:
        """The JSON body for this channel's shape."""
        title = message.card.title if message.card else ""
        summary = message.card.summary if message.card else ""
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
        if self._http is None:
            self._http = HttpClient(f"the webhook {self._where()}", timeout=self.timeout)
        response = self._http.call("POST", url, doing="posting", data=body, headers=headers,
                                   params=params)
        if response.ok:
            return _receipt(response, message)
        option = "url" if self.url_option else f"url_env ({self.url_env})"
        raise error_for(
            response.status_code, (response.text or response.reason or "")[:200].strip(),
            where=f"the webhook {self._where()} answered {response.status_code}",
            headers=response.headers, body=json_or_none(response),
            refused=f"check `{option}` and `shape` ({self.shape}) of the channel {self.name!r}")

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

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
        return read_secret(self.settings, env_name, f"channel {self.name}: {what}")

    def _where(self) -> str:
        if self.url_option:
            return f"at {urlsplit(str(self.url_option)).netloc}"
        return f"in {self.url_env}"


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


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
