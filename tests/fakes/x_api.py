"""A fake X API v2 on loopback, built from the reference summarised in tests/data/x-api-v2.md:
`POST /2/tweets`, `POST /2/media/upload`, `POST /2/media/metadata`, `GET /2/users/me` and
`GET /2/users/{id}/tweets`, with X's problem-details errors and its 429 with
`x-rate-limit-reset`.

It checks OAuth 1.0a user-context signatures (HMAC-SHA1 over method, URL and query, as X
does), wraps links in returned texts as t.co links with `entities.urls[].expanded_url` (so
code that looks for a link must use the entities, as with the real API), refuses a text
repeated within `duplicate_window` seconds of its clock the way X does (and takes it again
after that: X's duplicate check is not an idempotency key), and keeps every upload and post
for tests to inspect.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import re
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from oauthlib.oauth1.rfc5849 import signature, utils
from PIL import Image

from tests.fakes.server import FakeApi, Reply, Request, route

DUPLICATE = "You are not allowed to create a Tweet with duplicate content."
DUPLICATE_WINDOW = 24 * 3600  # undocumented by X; a test moves the clock past it
MEDIA_TYPES = ("image/jpeg", "image/bmp", "image/png", "image/webp", "image/pjpeg", "image/tiff")
IMAGE_MAX_BYTES = 5 * 1024 * 1024
IMAGE_MAX_SIDE = 8192  # docs.x.com media best practices: images up to 8192x8192
_URL = re.compile(r"https?://\S+")


@dataclass
class Media:
    id: str
    data: bytes
    media_type: str
    category: str
    width: int
    height: int
    alt_text: str | None = None


@dataclass
class Tweet:
    id: str
    text: str  # as received
    media_ids: list[str] = field(default_factory=list)
    urls: list[dict[str, Any]] = field(default_factory=list)
    created: float = 0.0  # on the fake's clock

    @property
    def display_text(self) -> str:
        """What X returns: every link replaced by its t.co link."""
        text = self.text
        for url in self.urls:
            text = text.replace(url["expanded_url"], url["url"], 1)
        return text


def _problem(status: int, title: str, detail: str, **extra: Any) -> Reply:
    return Reply(status, {"title": title, "detail": detail, "type": "about:blank",
                          "status": status, **extra})


class FakeX(FakeApi):
    def __init__(self, *, consumer_key: str, consumer_secret: str, access_token: str,
                 access_secret: str, user_id: str = "1500000000000000001",
                 username: str = "briefbot", duplicate_window: float = DUPLICATE_WINDOW) -> None:
        super().__init__()
        self.duplicate_window = duplicate_window
        self.consumer_key, self.consumer_secret = consumer_key, consumer_secret
        self.access_token, self.access_secret = access_token, access_secret
        self.user = {"id": user_id, "name": "Brief Bot", "username": username}
        self.media: dict[str, Media] = {}
        self.tweets: list[Tweet] = []
        self._ids = itertools.count(1860000000000000000)

    # -- test controls ----------------------------------------------------------------------

    def rate_limit_next(self, reset_in: int, *, path: str | None = None) -> int:
        """The next request (matching `path`) gets X's 429; returns the reset epoch second."""
        reset = int(time.time()) + reset_in
        self.fail_next(429, path=path, headers={
            "x-rate-limit-limit": "100", "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": str(reset)},
            body={"errors": [{"code": 88, "message": "Rate limit exceeded"}]})
        return reset

    def unauthorized_next(self, *, path: str | None = None) -> None:
        self.fail_next(401, path=path, body={"title": "Unauthorized", "type": "about:blank",
                                             "status": 401, "detail": "Unauthorized"})

    # -- auth -------------------------------------------------------------------------------

    def authorize(self, request: Request) -> Reply | None:
        header = request.header("authorization") or ""
        unauthorized = _problem(401, "Unauthorized", "Unauthorized")
        if not header.startswith("OAuth "):
            return unauthorized
        params = {k: utils.unescape(v) for k, v in utils.parse_authorization_header(header)}
        if (params.get("oauth_consumer_key") != self.consumer_key
                or params.get("oauth_token") != self.access_token
                or params.get("oauth_signature_method") != "HMAC-SHA1"):
            return unauthorized
        body = None
        if (request.header("content-type") or "").startswith("application/x-www-form-urlencoded"):
            body = request.body.decode()
        collected = signature.collect_parameters(
            uri_query=request.raw_query, body=body, headers={"Authorization": header},
            exclude_oauth_signature=True)
        base = signature.signature_base_string(
            request.method,
            signature.base_string_uri(f"http://{request.header('host')}{request.path}"),
            signature.normalize_parameters(collected))
        keys = SimpleNamespace(client_secret=self.consumer_secret,
                               resource_owner_secret=self.access_secret)
        expected = signature.sign_hmac_sha1_with_client(base, keys)
        if params.get("oauth_signature") != expected:
            return unauthorized
        return None

    # -- endpoints --------------------------------------------------------------------------

    @route("POST", r"/2/media/upload")
    def upload(self, request: Request) -> Reply:
        fields = self._upload_fields(request)
        if fields is None or "media" not in fields or "media_category" not in fields:
            return _problem(400, "Invalid Request", "`media` and `media_category` are required")
        data, category = fields["media"], fields["media_category"].decode()
        media_type = fields.get("media_type", b"").decode() or None
        if category != "tweet_image":
            return _problem(400, "Invalid Request", f"unsupported media_category {category}")
        if media_type is not None and media_type not in MEDIA_TYPES:
            return _problem(400, "Invalid Request", f"unsupported media_type {media_type}")
        if len(data) > IMAGE_MAX_BYTES:
            return _problem(400, "Invalid Request", "File size exceeds 5242880 bytes.")
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height, kind = im.width, im.height, (im.format or "").lower()
        except OSError:
            return _problem(400, "Invalid Request", "media type unrecognized.")
        if max(width, height) > IMAGE_MAX_SIDE:
            return _problem(400, "Invalid Request", "Image dimensions exceed 8192x8192.")
        media_id = str(next(self._ids))
        self.media[media_id] = Media(media_id, data, media_type or f"image/{kind}", category,
                                     width, height)
        return Reply(200, {"data": {
            "id": media_id, "media_key": f"3_{media_id}", "size": len(data),
            "expires_after_secs": 86400,
            "processing_info": {"state": "succeeded", "check_after_secs": 1,
                                "progress_percent": 100}}})

    @staticmethod
    def _upload_fields(request: Request) -> dict[str, bytes] | None:
        """Multipart parts, or a JSON body with the file base64-encoded (both documented)."""
        kind = request.header("content-type") or ""
        if kind.startswith("multipart/form-data"):
            return {name: part.data for name, part in request.form().items()}
        if kind.startswith("application/json"):
            body = request.json()
            try:
                fields = {k: str(v).encode() for k, v in body.items() if k != "media"}
                if "media" in body:
                    fields["media"] = base64.b64decode(body["media"], validate=True)
            except (AttributeError, binascii.Error):
                return None
            return fields
        return None

    @route("POST", r"/2/media/metadata")
    def metadata(self, request: Request) -> Reply:
        """docs.x.com/x-api/media/create-media-metadata: `{"id", "metadata": {"alt_text":
        {"text"}}}` in, `{"data": {"id", "associated_metadata": {...}}}` out."""
        body = request.json()
        media = self.media.get(str(body.get("id")))
        text = ((body.get("metadata") or {}).get("alt_text") or {}).get("text")
        if media is None:
            return _problem(400, "Invalid Request", "id not found")
        if not text or len(text) > 1000:
            return _problem(400, "Invalid Request", "alt_text.text must be 1-1000 characters")
        media.alt_text = text
        return Reply(200, {"data": {"id": media.id,
                                    "associated_metadata": {"alt_text": {"text": text}}}})

    @route("POST", r"/2/tweets")
    def create_tweet(self, request: Request) -> Reply:
        body = request.json()
        text = body.get("text") or ""
        media_ids = [str(m) for m in (body.get("media") or {}).get("media_ids", [])]
        unknown = [m for m in media_ids if m not in self.media]
        if unknown:
            return _problem(400, "Invalid Request", f"media ids not found: {unknown}")
        if not text and not media_ids:
            return _problem(400, "Invalid Request", "one of `text` or `media` is required")
        now = self.clock.now()
        if any(t.text == text and now - t.created < self.duplicate_window for t in self.tweets):
            return _problem(403, "Forbidden", DUPLICATE)
        tweet_id = str(next(self._ids))
        urls = []
        for index, match in enumerate(_URL.finditer(text)):
            urls.append({"start": match.start(), "end": match.end(),
                         "url": f"https://t.co/fake{tweet_id[-6:]}{index}",
                         "expanded_url": match.group(), "display_url": match.group()[8:30]})
        tweet = Tweet(tweet_id, text, media_ids, urls, created=now)
        self.tweets.append(tweet)
        return Reply(201, {"data": {"id": tweet_id, "text": tweet.display_text,
                                    "edit_history_tweet_ids": [tweet_id]}})

    @route("GET", r"/2/users/me")
    def me(self, request: Request) -> Reply:
        return Reply(200, {"data": dict(self.user)})

    @route("GET", r"/2/users/(?P<user_id>\d+)/tweets")
    def user_tweets(self, request: Request, user_id: str) -> Reply:
        if user_id != self.user["id"]:
            return Reply(200, {"meta": {"result_count": 0}})
        limit = int(request.query.get("max_results", ["10"])[0])
        if not 5 <= limit <= 100:
            return _problem(400, "Invalid Request",
                            f"The `max_results` query parameter value [{limit}] is not between "
                            "5 and 100")
        fields = ",".join(request.query.get("tweet.fields", [])).split(",")
        newest = list(reversed(self.tweets))[:limit]
        data = []
        for tweet in newest:
            item: dict[str, Any] = {"id": tweet.id, "text": tweet.display_text,
                                    "edit_history_tweet_ids": [tweet.id]}
            if "entities" in fields and tweet.urls:
                item["entities"] = {"urls": tweet.urls}
            data.append(item)
        if not data:
            return Reply(200, {"meta": {"result_count": 0}})
        return Reply(200, {"data": data, "meta": {"result_count": len(data),
                                                  "newest_id": data[0]["id"],
                                                  "oldest_id": data[-1]["id"]}})
