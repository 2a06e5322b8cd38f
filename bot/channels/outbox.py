"""The outbox: writes every message to `outbox/<channel>/` instead of the world.

Posts become JSON files, emails `.eml` files. Each file is written whole (temporary file, then
rename) and carries the idempotency key in its name, so after a crash `reconcile` can tell
for certain whether a message went out.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bot.channels.base import Channel, Message, PermanentError, Receipt
from bot.channels.networks import network_of
from bot.channels.options import OutboxOptions
from bot.render.post import render_post


class OutboxChannel(Channel):
    type = "outbox"
    Options = OutboxOptions
    sends_digest = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # One outbox can stand in for the social channels, the email channel, or both.
        self.posts_briefs = bool(self.options.get("posts", True))
        self.sends_digest = bool(self.options.get("digest", True))

    @property
    def folder(self) -> Path:
        base = self.settings.resolve(self.options.get("folder", "outbox"))
        return base / self.name

    def render(self, brief, key) -> Message:
        return render_post(brief, key, network=network_of(self), settings=self.settings,
                           options=self.options)

    def _existing(self, message: Message) -> list[Path]:
        if not self.folder.is_dir():
            return []
        # Only whole files count: a `.tmp` left by a crash before the rename was never sent.
        pattern = f"*--{message.idempotency_key[:16]}--*"
        found = [p for p in self.folder.glob(pattern) if p.suffix in (".json", ".eml")]
        return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))  # the first write

    def send(self, message: Message) -> Receipt:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        campaign = re.sub(r"[^A-Za-z0-9._-]+", "_", message.key.campaign)[:80]
        suffix = ".eml" if message.kind == "email" else ".json"
        name = f"{stamp}-{campaign}--{message.idempotency_key[:16]}--{uuid.uuid4().hex[:8]}"
        target = self.folder / f"{name}{suffix}"
        if message.kind == "email":
            if message.raw is None:
                raise PermanentError("email message has no raw bytes to write")
            data = message.raw
        else:
            data = json.dumps(
                {
                    "channel": message.key.channel,
                    "campaign": message.key.campaign,
                    "text": message.text,
                    "link": message.link,
                    "image": message.image,
                    "image_alt": message.image_alt,
                    "length": message.length,
                    "limit": message.limit,
                    "notes": [note.text for note in message.notes],
                    "idempotency_key": message.idempotency_key,
                },
                ensure_ascii=False,
                indent=2,
            ).encode("utf-8")
        temporary = target.with_suffix(".tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        return Receipt(remote_id=target.name, url=target.as_uri())

    def reconcile(self, message: Message) -> Receipt | None:
        found = self._existing(message)
        if found:
            return Receipt(remote_id=found[0].name, url=found[0].as_uri(), note="found in outbox")
        return None
