"""X (Twitter): posts through the v2 API with OAuth 1.0a user context.

Every call (`POST /2/tweets`, the image through `POST /2/media/upload` and its alt text through
`POST /2/media/metadata`, the account and its timeline for `reconcile`) goes through the shared
HTTP base (`bot.channels.http`): one session, the credentials read with `read_secret`, and one
mapping of answers and transport failures to delivery errors, with X's `x-rate-limit-reset` read
by the one retry-time reader. tweepy signs the requests (its OAuth 1.0a handler), imported on
first use, so listing or previewing never loads it.

X has no idempotency key. A retry of a post that did go out is refused as duplicate content,
and that refusal leads to `reconcile`, which looks for the brief's link on the account's recent
posts, instead of to a blind resend. X forgets duplicates after a while, so a late retry of an
unknown outcome must be (and is, by the delivery engine) settled by `reconcile` first.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import requests

from bot import redaction
from bot.channels.base import (
    Channel,
    ChannelError,
    Message,
    Receipt,
    TransientError,
    UnknownOutcome,
)
from bot.channels.http import HttpClient, error_for, json_or_none, read_secret
from bot.channels.options import XOptions
from bot.network import ImageLimits, Network
from bot.render import fit
from bot.render.media import with_hero_image
from bot.render.post import render_post

if TYPE_CHECKING:
    from bot.images import ProcessedImage

log = logging.getLogger("briefbot.x")

DEFAULT_API_BASE = "https://api.x.com"
DUPLICATE = "duplicate content"
CREDENTIALS = {  # option → (default variable, what it holds)
    "api_key_env": ("X_API_KEY", "the app's API key (consumer key)"),
    "api_secret_env": ("X_API_SECRET", "the app's API key secret (consumer secret)"),
    "access_token_env": ("X_ACCESS_TOKEN", "the account's access token"),
    "access_secret_env": ("X_ACCESS_TOKEN_SECRET", "the account's access token secret"),
}
ALT_TEXT_MAX = 1000
# docs.x.com media best practices: images at most 5 MB and 8192 px a side.
IMAGES = ImageLimits(max_bytes=5_000_000, max_side=8192,
                     formats=("image/jpeg", "image/png", "image/webp", "image/gif"))
NETWORK = Network("x", "X", "weighted characters", rules=lambda options: fit.X,  # twitter-text v3
                  images=IMAGES)
RECENT_POSTS = 100  # the most `GET /2/users/:id/tweets` returns at once
_REFUSALS = tuple(status for status in range(400, 500) if status != 429)  # a media call's own


class XChannel(Channel):
    type = "x"
    Options = XOptions
    network = NETWORK

    def __init__(self, name, config, settings):
        super().__init__(name, config, settings)
        self.api_base = str(self.options.get("api_base", DEFAULT_API_BASE)).rstrip("/")
        self.timeout = float(self.options.get("timeout", 30))
        self.env_names = {option: str(self.options.get(option, default))
                          for option, (default, _) in CREDENTIALS.items()}
        self._http: HttpClient | None = None
        self._user_id: str | None = None

    # -- render -----------------------------------------------------------------------------

    def render(self, brief, key) -> Message:
        message = render_post(brief, key, network=NETWORK, settings=self.settings,
                              options=self.options)
        return with_hero_image(message, self.settings, brief, IMAGES)

    # -- send -------------------------------------------------------------------------------

    def send(self, message: Message) -> Receipt:
        self._connect()
        notes = [note.text for note in message.notes]
        body: dict[str, Any] = {"text": message.text}
        image: ProcessedImage | None = message.fitted_image
        if image is not None:
            media_id = self._upload(image, message.image_alt, notes)
            if media_id:
                body["media"] = {"media_ids": [media_id]}
        response = self._call("POST", "/2/tweets", doing="posting", json=body, ok=(403,))
        if response.status_code == 403:
            if DUPLICATE in _detail(response).lower():
                return self._settle_duplicate(message)
            raise self._error(response, "POST", "posting")
        tweet_id = str(response.json()["data"]["id"])
        return Receipt(remote_id=tweet_id, url=status_url(tweet_id),
                       note="; ".join(notes) or None)

    def _settle_duplicate(self, message: Message) -> Receipt:
        """X refused the text as a duplicate: it most likely went out before. Find it."""
        found = self.reconcile(message)
        if found is not None:
            return replace(found, note=f"already posted (X refused a duplicate); {found.note}")
        raise TransientError(
            "X refused this post as a duplicate of a recent one, but it is not among the "
            f"account's last {RECENT_POSTS} posts yet; will look again on the next attempt")

    def reconcile(self, message: Message) -> Receipt | None:
        """Look for the brief's link on the account's recent posts (X has no idempotency)."""
        doing = "reading the account's recent posts"
        if self._user_id is None:
            me = self._call("GET", "/2/users/me", doing="reading the account").json()
            self._user_id = str(me["data"]["id"])
        timeline = self._call(
            "GET", f"/2/users/{self._user_id}/tweets", doing=doing,
            params={"max_results": RECENT_POSTS, "tweet.fields": "entities",
                    "exclude": "retweets,replies"}).json()
        for tweet in timeline.get("data") or []:
            if message.link and _links_to(tweet, message.link):
                return Receipt(remote_id=str(tweet["id"]), url=status_url(str(tweet["id"])),
                               note="found on the account's recent posts")
        return None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> HttpClient:
        """The session, signing every request with the account's OAuth 1.0a credentials."""
        if self._http is None:
            creds = {option: read_secret(self.settings, self.env_names[option],
                                         f"channel {self.name}: {what}")
                     for option, (_, what) in CREDENTIALS.items()}
            import tweepy

            http = HttpClient("X", timeout=self.timeout)
            http.session.auth = tweepy.OAuth1UserHandler(
                creds["api_key_env"], creds["api_secret_env"], creds["access_token_env"],
                creds["access_secret_env"]).apply_auth()
            self._http = http
        return self._http

    def _call(self, method: str, path: str, *, doing: str, ok: tuple[int, ...] = (),
              **kwargs: Any) -> requests.Response:
        """One API call; any answer but a success or one in `ok` becomes the base's error."""
        response = self._connect().call(method, self.api_base + path, doing=doing, **kwargs)
        if response.status_code < 300 or response.status_code in ok:
            return response
        raise self._error(response, method, doing)

    def _error(self, response: requests.Response, method: str, doing: str) -> ChannelError:
        status = response.status_code
        names = ", ".join(self.env_names.values())
        extra = (" and that the app has Read and Write permission (regenerate the access "
                 "token after changing it)") if status == 403 else ""
        return error_for(status, _detail(response), where=f"X answered {status} while {doing}",
                         method=method, headers=response.headers, body=json_or_none(response),
                         credentials=f"check {names}{extra}")

    def _media_call(self, path: str, *, doing: str, **kwargs: Any) -> requests.Response:
        """A media call: nothing shows on the timeline until the post, so an answer lost or a
        5xx here is worth a plain retry, never an unknown outcome."""
        try:
            return self._call("POST", path, doing=doing, ok=_REFUSALS, **kwargs)
        except UnknownOutcome as error:
            raise TransientError(str(error)) from None

    def _upload(self, image: ProcessedImage, alt: str | None, notes: list[str]) -> str | None:
        """Upload the image (and its alt text); None with a note if X refuses the image."""
        response = self._media_call(
            "/2/media/upload", doing="uploading the image",
            files={"media": ("image", image.data, image.mime)},
            data={"media_category": "tweet_image", "media_type": image.mime})
        if response.status_code >= 400:
            if response.status_code in (401, 403):
                raise self._error(response, "POST", "uploading the image")
            notes.append(f"posted without its image: X refused it "
                         f"({response.status_code}: {_detail(response)})")
            return None
        media_id = str(response.json()["data"]["id"])
        if alt:
            self._add_alt_text(media_id, alt, notes)
        return media_id

    def _add_alt_text(self, media_id: str, alt: str, notes: list[str]) -> None:
        """Alt text through X API v2 `POST /2/media/metadata`; any failure there (a refusal,
        a rate limit, an outage) only costs the alt text, never the post: a note says so."""
        body = {"id": media_id, "metadata": {"alt_text": {"text": alt[:ALT_TEXT_MAX]}}}
        try:
            response = self._media_call("/2/media/metadata", doing="adding alt text", json=body)
        except ChannelError as error:
            notes.append(f"image posted without alt text: {error}")
            return
        if response.status_code >= 400:
            notes.append(f"image posted without alt text: X refused it "
                         f"({response.status_code}: {_detail(response)})")


def status_url(tweet_id: str) -> str:
    return f"https://x.com/i/web/status/{tweet_id}"


def _links_to(tweet: dict[str, Any], link: str) -> bool:
    urls = (tweet.get("entities") or {}).get("urls") or []
    return (any(u.get("expanded_url") == link for u in urls)
            or link in (tweet.get("text") or "").split())


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
        detail = body.get("detail") or "; ".join(
            str(e.get("message", e)) for e in body.get("errors", []) if isinstance(e, dict))
    except (ValueError, AttributeError):
        detail = ""
    return redaction.redact(detail or response.reason or str(response.status_code))
