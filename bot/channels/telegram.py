"""Telegram: a post per brief to a channel or group through the Bot API.

`sendPhoto` with the hero image and the post as its caption (at most 1,024 characters), or
`sendMessage` (at most 4,096) when there is no image or it cannot be sent; HTML parse mode, so
the text is escaped and the link stays whole. The bot's token is part of every request's path,
so it is registered as a secret before the first call. The Bot API cannot list what a bot
posted, so an unknown outcome is settled by the channel's `unknown_policy`.

Options: `chat_id` (required: `@channelusername` or a numeric id), `token_env` (default
`TELEGRAM_BOT_TOKEN`), `api_base` (default `https://api.telegram.org`), `timeout`, and the post
options `hashtags` and `utm`.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from bot.channels.base import Channel, Message, PermanentError, Receipt
from bot.channels.http import HttpClient, error_for, json_or_none, read_secret
from bot.channels.options import EnvName, PostOptions, Seconds
from bot.network import ImageLimits, Network
from bot.render import fit
from bot.render.media import with_hero_image
from bot.render.post import render_post

CAPTION_MAX = 1024  # sendPhoto's caption, "0-1024 characters after entities parsing"
TEXT_MAX = 4096  # sendMessage's text
PHOTO_MAX_BYTES = 10_000_000  # "The photo must be at most 10 MB in size"
PHOTO_MAX_SIDE = 5000  # width + height at most 10,000


class TelegramOptions(PostOptions):
    chat_id: Annotated[str, StringConstraints(pattern=r"^(@[A-Za-z][A-Za-z0-9_]{3,}|-?\d+)$")]
    token_env: EnvName = "TELEGRAM_BOT_TOKEN"
    api_base: str = "https://api.telegram.org"
    timeout: Seconds = 30
    max_characters: int = Field(CAPTION_MAX, ge=50, le=CAPTION_MAX)


def telegram_length(text: str) -> int:
    """Telegram counts UTF-16 code units (an emoji outside the BMP is 2)."""
    return len(text.encode("utf-16-le")) // 2


NETWORK = Network(
    "telegram", "Telegram", "characters (UTF-16)",
    rules=lambda options: fit.NetworkRules(
        "telegram", int(options.get("max_characters", CAPTION_MAX)), telegram_length),
    images=ImageLimits(max_bytes=PHOTO_MAX_BYTES, max_side=PHOTO_MAX_SIDE),
    template="social/generic.txt.j2",  # plain text, escaped for HTML parse mode at send
)


class TelegramChannel(Channel):
    type = "telegram"
    Options = TelegramOptions
    network = NETWORK

    def __init__(self, name, config, settings):
        super().__init__(name, config, settings)
        self.chat_id = str(self.options["chat_id"])
        self.token_env = str(self.options.get("token_env", "TELEGRAM_BOT_TOKEN"))
        self.api_base = str(self.options.get("api_base", "https://api.telegram.org")).rstrip("/")
        self.http = HttpClient("Telegram", timeout=float(self.options.get("timeout", 30)))
        self._token: str | None = None

    # -- render -----------------------------------------------------------------------------

    def render(self, brief, key) -> Message:
        message = render_post(brief, key, network=NETWORK, settings=self.settings,
                              options=self.options)
        return with_hero_image(message, self.settings, brief, NETWORK.images)

    # -- send -------------------------------------------------------------------------------

    def send(self, message: Message) -> Receipt:
        text = html.escape(message.text, quote=False)
        image = message.fitted_image
        if image is not None and telegram_length(message.text) <= CAPTION_MAX:
            extension = image.mime.split("/")[-1].replace("jpeg", "jpg")
            answer = self._call("sendPhoto", doing="posting the photo", data={
                "chat_id": self.chat_id, "caption": text, "parse_mode": "HTML"},
                files={"photo": (f"hero.{extension}", image.data, image.mime)})
        else:
            if telegram_length(message.text) > TEXT_MAX:
                raise PermanentError(f"the post is {telegram_length(message.text)} characters, "
                                     f"over Telegram's {TEXT_MAX}; shorten the title")
            answer = self._call("sendMessage", doing="posting", json={
                "chat_id": self.chat_id, "text": text, "parse_mode": "HTML"})
        return self._receipt(answer)

    def close(self) -> None:
        self.http.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, method: str, *, doing: str, **kwargs: Any) -> dict[str, Any]:
        if self._token is None:
            self._token = read_secret(self.settings, self.token_env,
                                      f"channel {self.name}: the Telegram bot token")
        response = self.http.call("POST", f"{self.api_base}/bot{self._token}/{method}",
                                  doing=doing, **kwargs)
        body = json_or_none(response)
        if response.ok and isinstance(body, dict) and body.get("ok"):
            return body.get("result") or {}
        description = body.get("description") if isinstance(body, dict) else None
        raise error_for(
            response.status_code, str(description or response.reason or "")[:300],
            where=f"Telegram answered {response.status_code} while {doing} to {self.chat_id}",
            headers=response.headers, body=body,
            credentials=(f"check the bot token in {self.token_env}, and that the bot is an "
                         f"administrator of {self.chat_id} allowed to post"),
            refused=f"check `chat_id` ({self.chat_id}) of the channel {self.name!r}")

    def _receipt(self, result: dict[str, Any]) -> Receipt:
        message_id = result.get("message_id")
        if message_id is None:
            raise PermanentError("Telegram answered without a message_id; nothing to record")
        chat = result.get("chat") or {}
        username = chat.get("username") or (self.chat_id[1:] if self.chat_id.startswith("@")
                                            else None)
        url = f"https://t.me/{username}/{message_id}" if username else None
        return Receipt(remote_id=f"{chat.get('id', self.chat_id)}:{message_id}", url=url)
