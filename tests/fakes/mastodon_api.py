"""A fake Mastodon server on loopback, built from the documentation and source summarised in
tests/data/mastodon-api.md.

It checks the `Bearer` token, counts status length the way Mastodon does (grapheme clusters,
every link as `characters_reserved_per_url`), can process media asynchronously (202, then 206
from `GET /api/v1/media/:id` until done, 422 there when processing failed, and 422 for a status
that attaches unprocessed media, in the words of its `locale`), and honours `Idempotency-Key` on
`POST /api/v1/statuses` for an hour of its clock, as Mastodon keeps the key in Redis with
`setex(..., 3_600, ...)`; after that the same key makes a second status.
"""

from __future__ import annotations

import html
import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import regex

from tests.fakes.server import FakeApi, Reply, Request, route

_URL = re.compile(r"https?://\S+")
NOT_PROCESSED = "Cannot attach files that have not finished processing. Try again in a moment!"
# `media_attachments.validations.not_ready` in another locale: Mastodon localises error texts,
# so a client must tell this 422 by the media's state, not by these words (illustrative wording).
NOT_PROCESSED_FR = ("Impossible de joindre des fichiers dont le traitement n'est pas terminé. "
                    "Réessayez dans un instant !")
IDEMPOTENCY_TTL = 3600  # post_status_service.rb: redis.setex(idempotency_key, 3_600, ...)


@dataclass
class Media:
    id: str
    data: bytes
    content_type: str
    description: str | None
    polls_left: int  # GETs answered 206 before processing is done
    failed: bool = False  # processing failed: GET answers 422

    @property
    def processed(self) -> bool:
        return self.polls_left <= 0


@dataclass
class Status:
    id: str
    text: str
    visibility: str
    media_ids: list[str]
    idempotency_key: str | None
    key_stored_at: float = 0.0  # on the fake's clock
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class FakeMastodon(FakeApi):
    def __init__(self, *, token: str, max_characters: int = 500, url_chars: int = 23,
                 image_size_limit: int = 16 * 1024 * 1024, image_matrix_limit: int = 33177600,
                 media_polls: int = 0, username: str = "briefbot", locale: str = "en",
                 fail_processing: bool = False) -> None:
        super().__init__()
        self.locale = locale
        self.fail_processing = fail_processing  # every upload's processing fails
        self.token = token
        self.max_characters = max_characters
        self.url_chars = url_chars
        self.image_size_limit = image_size_limit
        self.image_matrix_limit = image_matrix_limit
        self.media_polls = media_polls  # 0: images are processed at once (200)
        self.account = {"id": "109000000000000001", "username": username, "acct": username,
                        "display_name": "Brief Bot", "bot": True}
        self.media: dict[str, Media] = {}
        self.statuses: list[Status] = []
        self._ids = itertools.count(113000000000000000)

    # -- test controls ----------------------------------------------------------------------

    def rate_limit_next(self, reset_in: int, *, path: str | None = None) -> datetime:
        """The next request (matching `path`) gets Mastodon's 429; returns the reset time."""
        reset = datetime.now(UTC) + timedelta(seconds=reset_in)
        self.fail_next(429, path=path, body={"error": "Too many requests"}, headers={
            "X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0",
            # rack_attack.rb: Time#iso8601(6), six decimals and a Z
            "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
        return reset

    def unauthorized_next(self, *, path: str | None = None) -> None:
        self.fail_next(401, path=path, body={"error": "The access token is invalid"})

    # -- auth -------------------------------------------------------------------------------

    def authorize(self, request: Request) -> Reply | None:
        if request.path == "/api/v2/instance":
            return None  # public
        if request.header("authorization") != f"Bearer {self.token}":
            return Reply(401, {"error": "The access token is invalid"})
        return None

    # -- endpoints --------------------------------------------------------------------------

    @route("GET", r"/api/v2/instance")
    def instance(self, request: Request) -> Reply:
        return Reply(200, {
            "domain": "mastodon.test", "title": "Fake Mastodon", "version": "4.3.0",
            "source_url": "https://github.com/mastodon/mastodon",
            "description": "A fake Mastodon server for tests",
            "languages": ["en"],
            "configuration": {
                "urls": {"streaming": "wss://mastodon.test"},
                "accounts": {"max_featured_tags": 10, "max_pinned_statuses": 5},
                "statuses": {"max_characters": self.max_characters,
                             "max_media_attachments": 4,
                             "characters_reserved_per_url": self.url_chars},
                "media_attachments": {
                    "supported_mime_types": ["image/jpeg", "image/png", "image/gif",
                                             "image/webp"],
                    "image_size_limit": self.image_size_limit,
                    "image_matrix_limit": self.image_matrix_limit,
                    "video_size_limit": 103809024, "video_frame_rate_limit": 120,
                    "video_matrix_limit": 8294400},
                "polls": {"max_options": 4, "max_characters_per_option": 50,
                          "min_expiration": 300, "max_expiration": 2629746},
                "translation": {"enabled": False},
            },
            "registrations": {"enabled": False, "approval_required": False, "message": None},
            "contact": {"email": "admin@mastodon.test", "account": None},
            "rules": [],
        })

    @route("POST", r"/api/v2/media")
    def upload(self, request: Request) -> Reply:
        form = request.form()
        if "file" not in form:
            return Reply(422, {"error": "Validation failed: File can't be blank"})
        part = form["file"]
        if len(part.data) > self.image_size_limit:
            return Reply(422, {"error": "Validation failed: File file size must be less than "
                                        f"{self.image_size_limit} Bytes"})
        media_id = str(next(self._ids))
        description = form["description"].text if "description" in form else None
        media = Media(media_id, part.data, part.content_type, description, self.media_polls,
                      failed=self.fail_processing)
        self.media[media_id] = media
        return Reply(200 if media.processed else 202, self._media_json(media))

    @route("GET", r"/api/v1/media/(?P<media_id>\d+)")
    def media_status(self, request: Request, media_id: str) -> Reply:
        media = self.media.get(media_id)
        if media is None:
            return Reply(404, {"error": "Record not found"})
        if media.failed:  # media_controller.rb: check_processing
            return Reply(422, {"error": "Error processing thumbnail for uploaded media"})
        if not media.processed:
            media.polls_left -= 1
            if not media.processed:
                return Reply(206, self._media_json(media))
        return Reply(200, self._media_json(media))

    @route("POST", r"/api/v1/statuses")
    def post_status(self, request: Request) -> Reply:
        key = request.header("idempotency-key")
        now = self.clock.now()
        if key:
            for status in self.statuses:
                if status.idempotency_key == key and now - status.key_stored_at < IDEMPOTENCY_TTL:
                    return Reply(200, self._status_json(status))
        body = request.json()
        text = body.get("status") or ""
        media_ids = [str(m) for m in body.get("media_ids") or []]
        if not text and not media_ids:
            return Reply(422, {"error": "Validation failed: Text can't be blank"})
        if self.length(text) > self.max_characters:
            return Reply(422, {"error": "Validation failed: Text character limit of "
                                        f"{self.max_characters} exceeded"})
        for media_id in media_ids:
            media = self.media.get(media_id)
            if media is None:
                return Reply(422, {"error": "Validation failed: media not found"})
            if not media.processed and not media.failed:
                words = NOT_PROCESSED if self.locale == "en" else NOT_PROCESSED_FR
                return Reply(422, {"error": words})
        status = Status(str(next(self._ids)), text, body.get("visibility") or "public",
                        media_ids, key, key_stored_at=now)
        self.statuses.append(status)
        return Reply(200, self._status_json(status))

    @route("GET", r"/api/v1/accounts/verify_credentials")
    def verify_credentials(self, request: Request) -> Reply:
        return Reply(200, {**self.account, "url": f"{self.url}/@{self.account['username']}"})

    @route("GET", r"/api/v1/accounts/(?P<account_id>\d+)/statuses")
    def account_statuses(self, request: Request, account_id: str) -> Reply:
        if account_id != self.account["id"]:
            return Reply(404, {"error": "Record not found"})
        limit = min(int(request.query.get("limit", ["20"])[0]), 40)
        newest = list(reversed(self.statuses))[:limit]
        return Reply(200, [self._status_json(s) for s in newest])

    # -- shapes -----------------------------------------------------------------------------

    def length(self, text: str) -> int:
        counted = _URL.sub("x" * self.url_chars, text)
        return len(regex.findall(r"\X", counted))

    def _media_json(self, media: Media) -> dict[str, Any]:
        base = f"{self.url}/system/media_attachments/{media.id}"
        return {"id": media.id, "type": "image",
                "url": f"{base}/original.png" if media.processed else None,
                "preview_url": f"{base}/small.png", "remote_url": None,
                "description": media.description, "blurhash": None, "meta": {}}

    def _status_json(self, status: Status) -> dict[str, Any]:
        user = self.account["username"]
        return {
            "id": status.id,
            "created_at": status.created_at.isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "uri": f"{self.url}/users/{user}/statuses/{status.id}",
            "url": f"{self.url}/@{user}/{status.id}",
            "visibility": status.visibility,
            "content": _html(status.text),
            "media_attachments": [self._media_json(self.media[m]) for m in status.media_ids],
            "account": dict(self.account),
            "card": None,
            "reblog": None,
        }


def _html(text: str) -> str:
    """Mastodon's rendering: paragraphs, line breaks, links shortened for display."""

    def link(match: re.Match[str]) -> str:
        url = match.group()
        scheme, rest = url.split("://", 1)
        return (f'<a href="{html.escape(url)}" rel="nofollow noopener" target="_blank">'
                f'<span class="invisible">{scheme}://</span>'
                f'<span class="ellipsis">{html.escape(rest[:30])}</span>'
                f'<span class="invisible">{html.escape(rest[30:])}</span></a>')

    paragraphs = []
    for block in text.split("\n\n"):
        escaped = []
        last = 0
        for match in _URL.finditer(block):
            escaped.append(html.escape(block[last:match.start()]))
            escaped.append(link(match))
            last = match.end()
        escaped.append(html.escape(block[last:]))
        paragraphs.append("<p>" + "".join(escaped).replace("\n", "<br />") + "</p>")
    return "".join(paragraphs)
