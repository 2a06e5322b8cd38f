"""Bluesky: posts written straight into the account's repository on its PDS, over XRPC.

Plain XRPC rather than the atproto SDK because the post must be written with `putRecord`, a
record key derived from the delivery key and an explicit `"swapRecord": null`: the PDS then
creates the record once and refuses to write it again, so a retry after a lost answer can never
make a second post (the SDK drops a `None` swap, which turns the call into an overwrite).

The login session is kept in the state folder and refreshed when it expires, because Bluesky
allows only a few dozen logins a day per account.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot import redaction
from bot.briefs import Brief
from bot.channels.base import (
    Channel,
    ChannelError,
    Message,
    PermanentError,
    Receipt,
    TransientError,
)
from bot.channels.http import HttpClient, error_for, read_secret
from bot.channels.options import BlueskyOptions
from bot.images import ProcessedImage
from bot.network import EMBED_CARD, ImageLimits, Network
from bot.render import fit
from bot.render.media import with_hero_image
from bot.render.post import render_post

log = logging.getLogger("briefbot.bluesky")

POST = "app.bsky.feed.post"
DEFAULT_SERVICE = "https://bsky.social"
DEFAULT_PASSWORD_ENV = "BLUESKY_APP_PASSWORD"
TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_TOKEN_ERRORS = {"ExpiredToken", "InvalidToken"}
# A blob is at most 1,000,000 bytes (app.bsky.embed.images); the post itself 300 graphemes and
# 3,000 bytes (fit.BLUESKY), and it carries its own link card (an external embed).
IMAGES = ImageLimits(max_bytes=1_000_000, formats=("image/jpeg", "image/png", "image/webp"))
NETWORK = Network("bluesky", "Bluesky", "graphemes", rules=lambda options: fit.BLUESKY,
                  images=IMAGES, link_card=EMBED_CARD)


def record_key(key: object) -> str:
    """A valid TID (13 base32-sortable characters) derived from a delivery key.

    The same delivery always maps to the same record, which is what makes a retry safe. The top
    bit of the 64-bit value is 0, as the TID syntax requires (first character `2`-`b`).
    """
    value = int(hashlib.sha256(str(key).encode()).hexdigest()[:16], 16) >> 1
    chars = []
    for _ in range(13):
        chars.append(TID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


@dataclass(frozen=True)
class _Session:
    """A login: the tokens are secrets, so they stay out of the repr."""

    service: str
    handle: str
    did: str
    access: str = field(repr=False)
    refresh: str = field(repr=False)


class _XrpcError(Exception):
    """A 4xx answer other than a rate limit, keeping the protocol's `error` name."""

    def __init__(self, nsid: str, status: int, error: str, message: str):
        super().__init__(f"{nsid}: HTTP {status} {error}: {message}")
        self.nsid = nsid
        self.status = status
        self.error = error
        self.message = message


class BlueskyChannel(Channel):
    """Posts a brief to one Bluesky account (options: `handle`, `password_env`, `service`,
    `embed`, `langs`, plus the post options `hashtags` and `utm`)."""

    type = "bluesky"
    network = NETWORK
    Options = BlueskyOptions

    def __init__(self, name, config, settings):
        super().__init__(name, config, settings)
        self.service = str(self.options.get("service") or DEFAULT_SERVICE).rstrip("/")
        self.handle = str(self.options.get("handle") or "").strip().lstrip("@").lower()
        self.password_env = str(self.options.get("password_env") or DEFAULT_PASSWORD_ENV)
        self.embed = str(self.options.get("embed") or "auto")
        self.timeout = float(self.options.get("timeout", 30))
        langs = self.options.get("langs") or []
        self.langs = [langs] if isinstance(langs, str) else [str(lang) for lang in langs]
        self.http = HttpClient(f"Bluesky at {self.service}", timeout=self.timeout)
        self._current: _Session | None = None

    # -- the Channel interface -------------------------------------------------------------

    def render(self, brief: Brief, key) -> Message:
        """The fitted post, with the hero image already re-encoded to Bluesky's blob limit."""
        message = render_post(brief, key, network=NETWORK, settings=self.settings,
                              options=self.options)
        return with_hero_image(message, self.settings, brief, IMAGES)

    def send(self, message: Message) -> Receipt:
        rkey = record_key(message.key)
        try:
            session = self._session()
            embed, notes = self._embed(message)
            created_at = datetime.now(UTC)
            record: dict[str, Any] = {
                "$type": POST,
                "text": message.text,
                "createdAt": created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
            if message.facets:
                record["facets"] = list(message.facets)
            langs = [message.language] if message.language else self.langs
            if langs:
                record["langs"] = langs
            if embed:
                record["embed"] = embed
            answer = self._call_authed(
                "com.atproto.repo.putRecord",
                body={"repo": session.did, "collection": POST, "rkey": rkey, "record": record,
                      "swapRecord": None},
            )
        except _XrpcError as error:
            if error.error == "InvalidSwap":
                found = self.reconcile(message)
                if found is not None:
                    return replace(found, note="already posted by an earlier attempt (its text "
                                               "or time differs); kept that post")
            raise self._refused(error) from None
        log.info("bluesky %s: posted %s", self.name, answer.get("uri"))
        return Receipt(remote_id=answer["uri"], url=self._public_url(rkey), sent_at=created_at,
                       note="; ".join([*(n.text for n in message.notes), *notes]) or None)

    def reconcile(self, message: Message) -> Receipt | None:
        """Look the delivery's record key up: found → it went out; RecordNotFound → it did not."""
        rkey = record_key(message.key)
        try:
            session = self._session()
            found = self._call(
                "GET", "com.atproto.repo.getRecord",
                params={"repo": session.did, "collection": POST, "rkey": rkey},
            )
        except _XrpcError as error:
            if error.error == "RecordNotFound":
                return None
            raise self._refused(error) from None
        return Receipt(remote_id=found["uri"], url=self._public_url(rkey),
                       note="found on Bluesky")

    def close(self) -> None:
        self.http.close()

    # -- the post's embed ------------------------------------------------------------------

    def _embed(self, message: Message) -> tuple[dict[str, Any] | None, list[str]]:
        """The images embed, a link card or nothing, as `embed` says; problems become notes.

        Like a broken image file, an image the PDS refuses never blocks the post.
        """
        notes: list[str] = []
        image: ProcessedImage | None = message.fitted_image
        blob = None
        if image is not None and (self.embed != "card" or message.link):
            try:
                blob = self._upload(image)
            except _XrpcError as error:
                if error.status == 401:
                    raise
                notes.append(f"Bluesky refused the hero image ({error.error}: {error.message}); "
                             "posted without it")
        if blob is not None and self.embed != "card":
            entry = {"alt": message.image_alt or "", "image": blob,
                     "aspectRatio": {"width": image.width, "height": image.height}}
            return {"$type": "app.bsky.embed.images", "images": [entry]}, notes
        if self.embed == "image" or not message.link:
            return None, notes
        external: dict[str, Any] = {
            "uri": message.link,
            # The brief's title and summary, cleaned by the reader.
            "title": message.card.title if message.card else "",
            "description": message.card.summary if message.card else "",
        }
        if blob is not None:
            external["thumb"] = blob
        return {"$type": "app.bsky.embed.external", "external": external}, notes

    def _upload(self, image: ProcessedImage) -> dict[str, Any]:
        answer = self._call_authed("com.atproto.repo.uploadBlob", data=image.data,
                                   content_type=image.mime)
        return answer["blob"]

    # -- session ---------------------------------------------------------------------------

    @property
    def session_file(self) -> Path:
        return self.settings.state_dir / "bluesky" / f"{self.name}.json"

    def _session(self) -> _Session:
        """The saved login if it is for this service and handle, else a fresh one."""
        if self._current is None:
            self._current = self._load_session() or self._login()
        return self._current

    def _load_session(self) -> _Session | None:
        try:
            data = json.loads(self.session_file.read_text(encoding="utf-8"))
            session = _Session(service=data["service"], handle=data["handle"], did=data["did"],
                               access=data["accessJwt"], refresh=data["refreshJwt"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        redaction.register(session.access, session.refresh)
        if session.service != self.service or self.handle not in (session.handle, session.did):
            return None
        return session

    def _save_session(self, session: _Session) -> None:
        """Written whole, owner-only (0600): the tokens let anyone post as the account."""
        redaction.register(session.access, session.refresh)
        folder = self.session_file.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = folder / f".{self.session_file.name}.{os.getpid()}.tmp"
        data = json.dumps({"service": session.service, "handle": session.handle,
                           "did": session.did, "accessJwt": session.access,
                           "refreshJwt": session.refresh})
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.session_file)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._current = session

    def _forget_session(self) -> None:
        self._current = None
        self.session_file.unlink(missing_ok=True)

    def _from_answer(self, answer: dict[str, Any]) -> _Session:
        return _Session(service=self.service, handle=answer.get("handle") or self.handle,
                        did=answer["did"], access=answer["accessJwt"],
                        refresh=answer["refreshJwt"])

    def _login(self) -> _Session:
        password = read_secret(self.settings, self.password_env,
                               what=f"Bluesky channel {self.name!r} (the app password of "
                                    f"{self.handle})")
        try:
            answer = self._call(
                "POST", "com.atproto.server.createSession",
                body={"identifier": self.handle, "password": password},
            )
        except _XrpcError as error:
            if error.status == 401 or error.error == "AuthenticationRequired":
                raise PermanentError(
                    f"Bluesky refused the login of {self.handle} at {self.service} "
                    f"({error.error}: {error.message}); check the handle and the app password "
                    f"in {self.password_env}"
                ) from None
            if error.error == "AuthFactorTokenRequired":
                raise PermanentError(
                    f"Bluesky asks {self.handle} for a sign-in code: put an app password "
                    f"(Settings → App passwords), not the account password, in "
                    f"{self.password_env}"
                ) from None
            raise self._refused(error) from None
        log.info("bluesky %s: logged in as %s", self.name, self.handle)
        session = self._from_answer(answer)
        self._save_session(session)
        return session

    def _refresh(self, session: _Session) -> _Session:
        """A new access token from the refresh token; log in again only if that is refused."""
        try:
            answer = self._call("POST", "com.atproto.server.refreshSession",
                                token=session.refresh)
        except _XrpcError as error:
            log.info("bluesky %s: session refresh refused (%s); logging in again",
                     self.name, error.error)
            self._forget_session()
            return self._login()
        log.info("bluesky %s: session refreshed", self.name)
        fresh = self._from_answer(answer)
        self._save_session(fresh)
        return fresh

    # -- XRPC ------------------------------------------------------------------------------

    def _call_authed(self, nsid: str, *, body: dict[str, Any] | None = None,
                     data: bytes | None = None, content_type: str | None = None) -> Any:
        """A procedure with the access token, refreshed once if the PDS says it expired."""
        session = self._session()
        try:
            return self._call("POST", nsid, token=session.access, body=body, data=data,
                              content_type=content_type)
        except _XrpcError as error:
            if error.error not in _TOKEN_ERRORS:
                raise
        session = self._refresh(session)
        return self._call("POST", nsid, token=session.access, body=body, data=data,
                          content_type=content_type)

    def _call(self, method: str, nsid: str, *, token: str | None = None,
              params: dict[str, str] | None = None, body: dict[str, Any] | None = None,
              data: bytes | None = None, content_type: str | None = None) -> Any:
        """One XRPC request, mapped by the shared HTTP base. Every call is `repeatable`: the
        post is a `putRecord` under our own record key that only creates, so sending it again
        after a lost answer cannot post twice. Other 4xx answers keep XRPC's error name."""
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        resp = self.http.call(method, f"{self.service}/xrpc/{nsid}", doing=f"calling {nsid}",
                              repeatable=True, params=params, data=data, headers=headers)
        if resp.status_code < 400:
            try:
                return resp.json()
            except ValueError:
                raise TransientError(f"Bluesky {nsid}: answer is not JSON") from None
        try:
            err = resp.json()
            if not isinstance(err, dict):
                err = {}
        except ValueError:
            err = {}
        error = str(err.get("error") or f"HTTP {resp.status_code}")
        text = str(err.get("message") or resp.reason or "")[:300]
        if resp.status_code in (408, 429) or resp.status_code >= 500:
            raise error_for(resp.status_code, f"{error}: {text}", where=f"Bluesky {nsid}",
                            method=method, headers=resp.headers, repeatable=True)
        raise _XrpcError(nsid, resp.status_code, error, text)

    def _refused(self, error: _XrpcError) -> ChannelError:
        """A refusal → the error publish understands; a 401 also drops the saved session."""
        if error.status == 401:
            self._forget_session()
            return PermanentError(
                f"Bluesky refused the session of {self.handle} ({error.error}: {error.message}); "
                f"check the app password in {self.password_env}"
            )
        return PermanentError(f"Bluesky refused {error.nsid} ({error.error}): {error.message}")

    def _public_url(self, rkey: str) -> str:
        handle = self._current.handle if self._current else self.handle
        return f"https://bsky.app/profile/{handle}/post/{rkey}"
