"""X (Twitter): posts through the v2 API with OAuth 1.0a user context.

Posts, the account lookup and its timeline go through tweepy's `Client`; images go through
`POST /2/media/upload` (and alt text through `POST /2/media/metadata`) with a small
uploader of our own, because tweepy 4.17 only uploads through the retired v1.1 endpoint.
tweepy is imported on first use, so listing or previewing never loads it.

X has no idempotency key. A retry of a post that did go out is refused as duplicate content,
and that refusal leads to `reconcile`, which looks for the brief's link on the account's recent
posts, instead of to a blind resend.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

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
from bot.channels.http import never_left, retry_after
from bot.channels.options import XOptions
from bot.config import ConfigError
from bot.images import X_MAX_BYTES, X_MAX_SIDE
from bot.render.media import with_hero_image
from bot.render.post import render_post

if TYPE_CHECKING:
    from requests_oauthlib import OAuth1Session

    from bot.images import ProcessedImage

log = logging.getLogger("briefbot.x")

DEFAULT_API_BASE = "https://api.x.com"
# Where tweepy's Client sends every request; `_RebasedSession` points it at `api_base`.
TWEEPY_HOST = "https://api.twitter.com"
DUPLICATE = "duplicate content"
CREDENTIALS = {  # option → (default variable, what it holds)
    "api_key_env": ("X_API_KEY", "the app's API key (consumer key)"),
    "api_secret_env": ("X_API_SECRET", "the app's API key secret (consumer secret)"),
    "access_token_env": ("X_ACCESS_TOKEN", "the account's access token"),
    "access_secret_env": ("X_ACCESS_TOKEN_SECRET", "the account's access token secret"),
}
ALT_TEXT_MAX = 1000
RECENT_POSTS = 100


class _RebasedSession(requests.Session):
    """tweepy's `BaseClient.request` hard-codes `https://api.twitter.com` and sends without a
    timeout; as its `session`, this points it at the configured base and bounds every call."""

    def __init__(self, base: str, timeout: float):
        super().__init__()
        self.base = base.rstrip("/")
        self.timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any):
        if isinstance(url, str) and url.startswith(TWEEPY_HOST):
            url = self.base + url[len(TWEEPY_HOST):]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


class XChannel(Channel):
    type = "x"
    Options = XOptions

    def __init__(self, name, config, settings):
        super().__init__(name, config, settings)
        self.api_base = str(self.options.get("api_base", DEFAULT_API_BASE)).rstrip("/")
        self.timeout = float(self.options.get("timeout", 30))
        self.env_names = {option: str(self.options.get(option, default))
                          for option, (default, _) in CREDENTIALS.items()}
        self._client: Any = None
        self._uploader: OAuth1Session | None = None
        self._user_id: str | None = None

    # -- render -----------------------------------------------------------------------------

    def render(self, brief, key) -> Message:
        message = render_post(brief, key, network="x", settings=self.settings,
                              options=self.options)
        return with_hero_image(message, self.settings, brief, max_bytes=X_MAX_BYTES,
                               max_side=X_MAX_SIDE)

    # -- send -------------------------------------------------------------------------------

    def send(self, message: Message) -> Receipt:
        client = self._connect()
        notes = [note.text for note in message.notes]
        media_ids = []
        image: ProcessedImage | None = message.fitted_image
        if image is not None:
            media_id = self._upload(image, message.image_alt, notes)
            if media_id:
                media_ids.append(media_id)
        import tweepy

        try:
            response = client.create_tweet(text=message.text, media_ids=media_ids or None,
                                           user_auth=True)
        except tweepy.Forbidden as error:
            if any(DUPLICATE in text for text in error.api_messages):
                return self._settle_duplicate(message)
            raise self._error(error, "posting") from None
        except (tweepy.TweepyException, requests.RequestException) as error:
            raise self._error(error, "posting") from None
        tweet_id = str(response.data["id"])
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
        import tweepy

        client = self._connect()
        try:
            if self._user_id is None:
                self._user_id = str(client.get_me(user_auth=True).data["id"])
            response = client.get_users_tweets(
                self._user_id, max_results=RECENT_POSTS, tweet_fields=["entities"],
                exclude=["retweets", "replies"], user_auth=True)
        except (tweepy.TweepyException, requests.RequestException) as error:
            raise self._error(error, "reading the account's recent posts") from None
        for tweet in response.data or []:
            if message.link and _links_to(tweet, message.link):
                return Receipt(remote_id=str(tweet.id), url=status_url(str(tweet.id)),
                               note="found on the account's recent posts")
        return None

    def close(self) -> None:
        for session in (getattr(self._client, "session", None), self._uploader):
            if session is not None:
                session.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _credentials(self) -> dict[str, str]:
        values = {}
        for option, (_, what) in CREDENTIALS.items():
            try:
                values[option] = self.settings.secret(self.env_names[option],
                                                      what=f"channel {self.name}: {what}")
            except ConfigError as error:
                raise PermanentError(str(error)) from None
        redaction.register(*values.values())
        return values

    def _connect(self) -> Any:
        if self._client is None:
            import tweepy
            from requests_oauthlib import OAuth1Session

            creds = self._credentials()
            client = tweepy.Client(
                consumer_key=creds["api_key_env"], consumer_secret=creds["api_secret_env"],
                access_token=creds["access_token_env"],
                access_token_secret=creds["access_secret_env"],
                wait_on_rate_limit=False,  # a rate limit becomes a retry time, never a sleep
            )
            client.session = _RebasedSession(self.api_base, self.timeout)
            self._uploader = OAuth1Session(
                creds["api_key_env"], client_secret=creds["api_secret_env"],
                resource_owner_key=creds["access_token_env"],
                resource_owner_secret=creds["access_secret_env"])
            self._client = client
        return self._client

    def _upload(self, image: ProcessedImage, alt: str | None, notes: list[str]) -> str | None:
        """Upload the image (and its alt text); None with a note if X refuses the image."""
        assert self._uploader is not None
        response = self._call(
            "uploading the image", "/2/media/upload",
            files={"media": ("image", image.data, image.mime)},
            data={"media_category": "tweet_image", "media_type": image.mime})
        if response.status_code >= 400:
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
            response = self._call("adding alt text", "/2/media/metadata", json=body)
        except ChannelError as error:
            notes.append(f"image posted without alt text: {error}")
            return
        if response.status_code >= 400:
            notes.append(f"image posted without alt text: X refused it "
                         f"({response.status_code}: {_detail(response)})")

    def _call(self, doing: str, path: str, **kwargs: Any) -> requests.Response:
        """POST to the media API; rate limits, outages and auth failures become our errors."""
        assert self._uploader is not None
        try:
            response = self._uploader.post(self.api_base + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise TransientError(f"X did not answer while {doing}: "
                                 f"{redaction.redact(type(error).__name__)}") from None
        if response.status_code == 429:
            raise TransientError(f"X rate limit while {doing}",
                                 retry_after=retry_after(response.headers))
        if response.status_code >= 500:
            raise TransientError(f"X answered {response.status_code} while {doing}")
        if response.status_code in (401, 403):
            raise PermanentError(self._auth_hint(response.status_code, doing,
                                                 _detail(response)))
        return response

    def _error(self, error: Exception, doing: str) -> ChannelError:
        import tweepy

        if isinstance(error, tweepy.TooManyRequests):
            reset = getattr(error, "reset_time", None)
            retry = max(0.0, reset - time.time()) if reset is not None else None
            return TransientError(f"X rate limit while {doing}", retry_after=retry)
        if isinstance(error, tweepy.TwitterServerError):
            if doing == "posting" and error.response.status_code not in (503,):
                # A gateway error or a crash after the write: it may be on the timeline.
                return UnknownOutcome(f"X answered {error.response.status_code} while {doing}; "
                                      "the outcome is unknown until it is reconciled")
            return TransientError(f"X answered {error.response.status_code} while {doing}")
        if isinstance(error, tweepy.Unauthorized | tweepy.Forbidden):
            detail = "; ".join(error.api_messages) or error.response.reason
            return PermanentError(self._auth_hint(error.response.status_code, doing, detail))
        if isinstance(error, tweepy.HTTPException):
            detail = "; ".join(error.api_messages) or error.response.reason
            return PermanentError(f"X refused the post ({error.response.status_code}: "
                                  f"{redaction.redact(detail)})")
        if isinstance(error, requests.Timeout | requests.ConnectionError):
            if never_left(error):
                return TransientError(f"could not reach X while {doing} "
                                      f"({type(error).__name__})")
            return UnknownOutcome(f"X did not answer while {doing} ({type(error).__name__}); "
                                  "the outcome is unknown until it is reconciled")
        return TransientError(f"X failed while {doing}: "
                              f"{redaction.redact(type(error).__name__)}")

    def _auth_hint(self, status: int, doing: str, detail: str) -> str:
        names = ", ".join(self.env_names.values())
        extra = (" and that the app has Read and Write permission (regenerate the access "
                 "token after changing it)") if status == 403 else ""
        return (f"X refused the credentials while {doing} ({status}: "
                f"{redaction.redact(detail)}); check {names}{extra}")


def status_url(tweet_id: str) -> str:
    return f"https://x.com/i/web/status/{tweet_id}"


def _links_to(tweet: Any, link: str) -> bool:
    urls = ((getattr(tweet, "entities", None) or {}).get("urls") or [])
    return any(u.get("expanded_url") == link for u in urls) or link in (tweet.text or "").split()


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
        detail = body.get("detail") or "; ".join(
            str(e.get("message", e)) for e in body.get("errors", []) if isinstance(e, dict))
    except (ValueError, AttributeError):
        detail = ""
    return redaction.redact(detail or response.reason or str(response.status_code))
