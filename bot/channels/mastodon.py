"""Mastodon: statuses through the REST API of one instance, with a bearer token.

The instance's own limits (`/api/v2/instance`: characters per status, characters per link,
image bytes and pixels) are read once per run and drive the render. Every status is posted with
an `Idempotency-Key` derived from the delivery key, so a retry after a lost answer returns the
status that was already made instead of making a second one (Mastodon keeps keys for an hour;
beyond that, `reconcile` finds the post by its link on the account's recent statuses).
"""

from __future__ import annotations

import html
import logging
import re
import time
from dataclasses import dataclass, replace
from typing import Any

import requests

from bot import redaction
from bot.channels.base import (
    Channel,
    Message,
    PermanentError,
    Receipt,
    TransientError,
)
from bot.channels.http import HttpClient, error_for, read_secret
from bot.channels.options import MastodonOptions
from bot.images import ProcessedImage
from bot.network import ImageLimits, Network
from bot.render import fit
from bot.render.media import with_hero_image
from bot.render.post import render_post

log = logging.getLogger("briefbot.mastodon")

DEFAULT_TOKEN_ENV = "MASTODON_TOKEN"
NOT_PROCESSED = "not finished processing"  # English only; the media state decides otherwise
ALT_TEXT_MAX = 1500
RECENT_STATUSES = 40
_HREF = re.compile(r'href="([^"]*)"')


def _rules(options: dict[str, Any]) -> fit.NetworkRules:
    """Mastodon's length: the instance's own limit and link charge, as read into `options`."""
    return fit.mastodon_rules(int(options.get("max_characters", 500)),
                              int(options.get("characters_reserved_per_url", fit.URL_LENGTH)))


# Stock defaults only (app/models/media_attachment.rb: IMAGE_LIMIT 16 MB, MAX_MATRIX_LIMIT
# 7680x4320 since 4.4); an instance advertises its own, which replace these at render.
MASTODON_DEFAULT_MAX_BYTES = 16_000_000
MASTODON_DEFAULT_MAX_PIXELS = 33_177_600
STOCK_IMAGES = ImageLimits(max_bytes=MASTODON_DEFAULT_MAX_BYTES,
                           max_pixels=MASTODON_DEFAULT_MAX_PIXELS,
                           formats=("image/jpeg", "image/png", "image/gif", "image/webp"))
NETWORK = Network("mastodon", "Mastodon", "characters", rules=_rules, images=STOCK_IMAGES,
                  limits_announced=True)


@dataclass(frozen=True)
class InstanceLimits:
    """What the instance allows; stock Mastodon defaults when it could not be asked."""

    max_characters: int = 500
    characters_reserved_per_url: int = 23
    image_size_limit: int = MASTODON_DEFAULT_MAX_BYTES
    image_matrix_limit: int = MASTODON_DEFAULT_MAX_PIXELS
    warning: str | None = None


class MastodonChannel(Channel):
    type = "mastodon"
    network = NETWORK
    Options = MastodonOptions

    def __init__(self, name, config, settings):
        super().__init__(name, config, settings)
        self.instance = str(self.options["instance"]).strip().rstrip("/")
        self.token_env = str(self.options.get("token_env", DEFAULT_TOKEN_ENV))
        self.visibility = str(self.options.get("visibility", "public"))
        self.timeout = float(self.options.get("timeout", 30))
        self.media_wait = float(self.options.get("media_wait", 60))
        self.poll_interval = float(self.options.get("media_poll_interval", 1.0))
        self._limits: InstanceLimits | None = None
        self._http: HttpClient | None = None
        self._account_id: str | None = None

    # -- render -----------------------------------------------------------------------------

    def limits(self) -> InstanceLimits:
        """The instance's limits, read once per run (a public, read-only call)."""
        if self._limits is None:
            self._limits = self._read_limits()
        return self._limits

    def render(self, brief, key) -> Message:
        limits = self.limits()
        options = {**self.options, "max_characters": limits.max_characters,
                   "characters_reserved_per_url": limits.characters_reserved_per_url}
        message = render_post(brief, key, network=NETWORK, settings=self.settings,
                              options=options)
        images = replace(STOCK_IMAGES, max_bytes=limits.image_size_limit,
                         max_pixels=limits.image_matrix_limit)
        return with_hero_image(message, self.settings, brief, images,
                               notes=(limits.warning,) if limits.warning else ())

    # -- send -------------------------------------------------------------------------------

    def send(self, message: Message) -> Receipt:
        notes = [note.text for note in message.notes]
        media_ids = []
        image: ProcessedImage | None = message.fitted_image
        if image is not None:
            media_id = self._upload(image, message.image_alt, notes)
            if media_id:
                media_ids.append(media_id)
        status = self._post_status(message, media_ids)
        return Receipt(remote_id=str(status["id"]), url=status.get("url") or status.get("uri"),
                       note="; ".join(notes) or None)

    def reconcile(self, message: Message) -> Receipt | None:
        """Look for the brief's link on the account's recent statuses."""
        if self._account_id is None:
            account = self._request("GET", "/api/v1/accounts/verify_credentials",
                                     doing="reading the account").json()
            self._account_id = str(account["id"])
        statuses = self._request(
            "GET", f"/api/v1/accounts/{self._account_id}/statuses",
            params={"limit": RECENT_STATUSES, "exclude_replies": "true",
                    "exclude_reblogs": "true"},
            doing="reading the account's recent statuses").json()
        for status in statuses:
            if message.link and message.link in _links(status):
                return Receipt(remote_id=str(status["id"]),
                               url=status.get("url") or status.get("uri"),
                               note="found on the account's recent statuses")
        return None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _read_limits(self) -> InstanceLimits:
        try:
            response = requests.get(f"{self.instance}/api/v2/instance", timeout=self.timeout,
                                    headers={"Accept": "application/json"})
            response.raise_for_status()
            config = response.json()["configuration"]
            statuses, media = config["statuses"], config.get("media_attachments", {})
            return InstanceLimits(
                max_characters=int(statuses["max_characters"]),
                characters_reserved_per_url=int(statuses.get("characters_reserved_per_url", 23)),
                image_size_limit=int(media.get("image_size_limit", MASTODON_DEFAULT_MAX_BYTES)),
                image_matrix_limit=int(media.get("image_matrix_limit")
                                       or MASTODON_DEFAULT_MAX_PIXELS),
            )
        except (requests.RequestException, ValueError, KeyError, TypeError) as error:
            return InstanceLimits(warning=(
                f"could not read the limits of {self.instance} ({type(error).__name__}); "
                "fitted to Mastodon's defaults (500 characters)"))

    def _connect(self) -> HttpClient:
        if self._http is None:
            token = read_secret(self.settings, self.token_env,
                                f"channel {self.name}: the Mastodon token")
            self._http = HttpClient(self.instance, timeout=self.timeout)
            self._http.session.headers["Authorization"] = f"Bearer {token}"
        return self._http

    def _request(self, method: str, path: str, *, doing: str, ok: tuple[int, ...] = (),
                 **kwargs: Any) -> requests.Response:
        """One API call; answers become errors as every web API's do (`bot.channels.http`)."""
        response = self._connect().call(method, self.instance + path, doing=doing, **kwargs)
        if response.status_code < 300 or response.status_code in ok:
            return response
        raise error_for(
            response.status_code, _error_text(response),
            where=f"{self.instance} answered {response.status_code} while {doing}",
            method=method, headers=response.headers,
            credentials=(f"check the access token in {self.token_env} (it needs the "
                         "write:statuses and write:media scopes, and read:accounts to "
                         "reconcile)"),
            refused=(f"check `instance` in the channel {self.name!r} of the configuration"
                     if response.status_code == 404 else ""))

    def _upload(self, image: ProcessedImage, alt: str | None, notes: list[str]) -> str | None:
        """Upload and wait until processed; None with a note if the instance refuses it."""
        extension = image.mime.split("/")[-1].replace("jpeg", "jpg")
        data = {"description": alt[:ALT_TEXT_MAX]} if alt else {}
        response = self._request(
            "POST", "/api/v2/media", doing="uploading the image", ok=(413, 422),
            files={"file": (f"image.{extension}", image.data, image.mime)}, data=data)
        if response.status_code in (413, 422):
            notes.append(f"posted without its image: {self.instance} refused it "
                         f"({_error_text(response)})")
            return None
        media = response.json()
        media_id = str(media["id"])
        if response.status_code == 202 or not media.get("url"):
            failed = self._wait_processed(media_id)
            if failed:
                notes.append(f"posted without its image: {self.instance} could not process it "
                             f"({failed})")
                return None
        return media_id

    def _wait_processed(self, media_id: str) -> str | None:
        """Poll until the instance has processed the upload, for at most `media_wait` s; the
        instance's words if processing failed (a 422 on `GET /api/v1/media/:id`), else None.

        If it is still not done, the status post below retries the 422 the same bounded way.
        """
        deadline = time.monotonic() + self.media_wait
        delay = self.poll_interval
        while time.monotonic() < deadline:
            response = self._media_state(media_id)
            if response.status_code == 422:
                return _error_text(response)
            if response.status_code == 200 and response.json().get("url"):
                return None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 5.0)
        return None

    def _media_state(self, media_id: str) -> requests.Response:
        """`GET /api/v1/media/:id`: 200 processed, 206 still processing, 422 failed."""
        return self._request("GET", f"/api/v1/media/{media_id}", ok=(206, 422),
                             doing="waiting for the image to be processed")

    def _still_processing(self, media_ids: list[str]) -> bool:
        """Whether a 422 on the status is Mastodon's "not finished processing": told by the
        media's state, since the error text is in the account's language."""
        return any(self._media_state(m).status_code == 206 for m in media_ids)

    def _post_status(self, message: Message, media_ids: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"status": message.text, "visibility": self.visibility}
        if media_ids:
            body["media_ids"] = media_ids
        language = message.language or self.options.get("language")
        if language:
            body["language"] = str(language)
        headers = {"Idempotency-Key": message.idempotency_key}
        deadline = time.monotonic() + self.media_wait
        delay = self.poll_interval
        while True:
            response = self._request("POST", "/api/v1/statuses", json=body, headers=headers,
                                     doing="posting the status", ok=(422,))
            if response.status_code != 422:
                return response.json()
            text = _error_text(response)
            if NOT_PROCESSED not in text and not self._still_processing(media_ids):
                raise PermanentError(f"{self.instance} refused the status: {text}")
            if time.monotonic() >= deadline:
                raise TransientError(f"{self.instance} is still processing the image after "
                                     f"{self.media_wait:.0f} s; will retry")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 5.0)


def _links(status: dict[str, Any]) -> set[str]:
    links = {html.unescape(href) for href in _HREF.findall(status.get("content") or "")}
    card = status.get("card") or {}
    if card.get("url"):
        links.add(card["url"])
    return links


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
        text = body.get("error") or body.get("error_description") or ""
    except (ValueError, AttributeError):
        text = ""
    return redaction.redact(str(text) or response.reason or str(response.status_code))


