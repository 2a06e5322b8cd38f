"""A fake Telegram Bot API on loopback, built from the reference summarised in
tests/data/telegram-bot-api.md: `POST /bot<token>/sendMessage` (JSON or form) and
`/bot<token>/sendPhoto` (multipart with the photo), answering `{"ok": true, "result": Message}`
or `{"ok": false, "error_code": ..., "description": ...}` as the document describes.
"""

from __future__ import annotations

import html
import itertools
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.server import FakeApi, Reply, Request, route

TAG = re.compile(r"</?(b|strong|i|em|u|ins|s|strike|del|a|code|pre|span|tg-spoiler)\b[^>]*>")


def _parsed_length(text: str) -> int:
    """The length Telegram checks: after HTML entities are parsed, in UTF-16 code units."""
    return len(html.unescape(TAG.sub("", text)).encode("utf-16-le")) // 2


@dataclass
class Post:
    message_id: int
    chat_id: str
    text: str  # as readers see it: entities parsed
    photo: bytes | None


class FakeTelegram(FakeApi):
    def __init__(self, token: str, *, username: str = "briefbot_news") -> None:
        super().__init__()
        self.token = token
        self.username = username
        self.posts: list[Post] = []
        self._ids = itertools.count(41)

    def authorize(self, request: Request) -> Reply | None:
        match = re.match(r"/bot([^/]+)/", request.path)
        if match is None or match.group(1) != self.token:
            return Reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        return None

    # -- methods ----------------------------------------------------------------------------

    @route("POST", r"/bot[^/]+/sendMessage")
    def send_message(self, request: Request) -> Reply:
        params = self._params(request)
        text = str(params.get("text", ""))
        if not text:
            return self._bad("Bad Request: message text is empty")
        return self._post(params, text, None, limit=4096)

    @route("POST", r"/bot[^/]+/sendPhoto")
    def send_photo(self, request: Request) -> Reply:
        if not (request.header("content-type") or "").startswith("multipart/form-data"):
            return self._bad("Bad Request: there is no photo in the request")
        parts = request.form()
        photo = parts.get("photo")
        if photo is None or not photo.data:
            return self._bad("Bad Request: there is no photo in the request")
        if len(photo.data) > 10_000_000:
            return Reply(413, {"ok": False, "error_code": 413,
                               "description": "Request Entity Too Large"})
        params = {name: part.text for name, part in parts.items() if name != "photo"}
        return self._post(params, params.get("caption", ""), photo.data, limit=1024)

    # -- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _params(request: Request) -> dict[str, Any]:
        kind = request.header("content-type") or ""
        if kind.startswith("application/json"):
            return request.json()
        if kind.startswith("multipart/form-data"):
            return {name: part.text for name, part in request.form().items()}
        return {k: v[0] for k, v in parse_qs(request.body.decode()).items()}

    @staticmethod
    def _bad(description: str) -> Reply:
        return Reply(400, {"ok": False, "error_code": 400, "description": description})

    def _post(self, params: dict[str, Any], text: str, photo: bytes | None, *,
              limit: int) -> Reply:
        chat = str(params.get("chat_id", ""))
        if chat != f"@{self.username}":
            return self._bad("Bad Request: chat not found")
        if params.get("parse_mode") == "HTML":
            if re.search(r"<(?!/?(b|strong|i|em|u|ins|s|strike|del|a|code|pre|span|"
                         r"tg-spoiler)\b)", text):
                return self._bad("Bad Request: can't parse entities: unsupported start tag")
            shown = html.unescape(TAG.sub("", text))
        else:
            shown = text
        if _parsed_length(text) > limit:
            what = "caption" if photo is not None else "message"
            return self._bad(f"Bad Request: {what} is too long")
        post = Post(next(self._ids), chat, shown, photo)
        self.posts.append(post)
        message: dict[str, Any] = {
            "message_id": post.message_id, "date": int(time.time()),
            "chat": {"id": -1001234567890, "type": "channel", "title": "Briefbot news",
                     "username": self.username},
        }
        if photo is not None:
            message.update(caption=shown, photo=[
                {"file_id": f"AgAC{post.message_id}", "file_unique_id": f"AQAD{post.message_id}",
                 "width": 320, "height": 240, "file_size": len(photo)}])
        else:
            message["text"] = shown
        return Reply(200, {"ok": True, "result": message})
