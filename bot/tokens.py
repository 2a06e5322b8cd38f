"""Signed per-recipient tokens for unsubscribe and confirmation links, and return paths.

A token is `base64url(purpose:email).base64url(HMAC-SHA256(secret, that))`: it needs no
database row, works for as long as the secret is unchanged (an unsubscribe link in an old
digest must keep working), and cannot be forged or moved to another address or purpose.

The secret comes from the environment variable named by `email.token_secret_env`. Without it,
a random secret is generated once into the state folder, so the default configuration runs with
no credentials; several machines must then share the variable instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from bot.config import ConfigError, Settings

log = logging.getLogger("briefbot.tokens")

PURPOSES = ("unsubscribe", "confirm")
SECRET_FILE = "token-secret"
MAX_TOKEN_CHARS = 1200  # an address is at most 320 characters; anything longer is garbage
_DOMAIN = b"briefbot-token-v1\0"
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}")
_file_secrets: dict[Path, bytes] = {}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_secret(settings: Settings) -> bytes:
    """The signing key: the environment variable, else the state folder's generated one."""
    env_name = settings.config.email.token_secret_env
    value = os.environ.get(env_name, "")
    if value:
        return value.encode("utf-8")
    known = _file_secrets.get(settings.state_dir)  # asked for every message: no path work
    return known if known is not None else _file_secret(settings.state_dir / SECRET_FILE,
                                                        env_name)


def _file_secret(path: Path, env_name: str) -> bytes:
    if path in _file_secrets:
        return _file_secrets[path]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        if created:
            _create_secret_file(path)
        value = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"email.token_secret_env: {env_name} is not set and the generated secret in {path} "
            f"cannot be used ({error.__class__.__name__}); export {env_name}"
        ) from None
    if len(value) < 32:
        raise ConfigError(f"{path}: the generated token secret is damaged; delete the file "
                          f"(links already sent stop working) or export {env_name}")
    # Said once per state folder, when the secret is made, not on every command after.
    (log.warning if created else log.debug)(
        "%s is not set: unsubscribe and confirmation links are signed with a secret generated "
        "in %s. Set %s (the same value everywhere) if more than one machine sends mail or "
        "serves the web pages", env_name, path, env_name,
    )
    _file_secrets[path] = _file_secrets[path.parent] = value.encode("ascii")
    return _file_secrets[path]


def _create_secret_file(path: Path) -> None:
    """Write whole and owner-only, and never replace a secret another process just wrote."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)


def _signature(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, _DOMAIN + payload.encode("ascii"), hashlib.sha256).digest())


def make_token(settings: Settings, purpose: str, email: str) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}; use one of {PURPOSES}")
    payload = _b64(f"{purpose}:{email}".encode())
    return f"{payload}.{_signature(token_secret(settings), payload)}"


def read_token(settings: Settings, purpose: str, token: str) -> str | None:
    """The email a genuine token of this purpose was made for; None for anything else."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not _TOKEN.fullmatch(token):
        return None
    payload, signature = token.split(".")
    expected = _signature(token_secret(settings), payload)
    if not hmac.compare_digest(signature.encode("ascii"), expected.encode("ascii")):
        return None
    try:
        text = _unb64(payload).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    found, _, email = text.partition(":")
    return email if found == purpose and email else None


def find_tokens(text: str) -> list[str]:
    """Every string in `text` shaped like a token (to be checked with `read_token`)."""
    found = re.findall(r"(?<![A-Za-z0-9_.-])([A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])",
                       text or "")
    return list(dict.fromkeys(t for t in found if len(t) <= MAX_TOKEN_CHARS))


def _link(settings: Settings, route: str, purpose: str, email: str) -> str:
    base = settings.config.email.base_url.rstrip("/")
    return f"{base}/{route}/{make_token(settings, purpose, email)}"


def unsubscribe_url(settings: Settings, email: str) -> str:
    """The one-click link for `List-Unsubscribe` and the footer (RFC 8058)."""
    return _link(settings, "unsubscribe", "unsubscribe", email)


def confirm_url(settings: Settings, email: str) -> str:
    return _link(settings, "confirm", "confirm", email)


def unsubscribe_mailto(settings: Settings, email: str) -> str | None:
    """`mailto:` for `List-Unsubscribe`, with the token in the subject; None if not set up."""
    address = settings.config.email.unsubscribe_mailto
    if not address:
        return None
    address = address.strip().removeprefix("mailto:")
    separator = "&" if "?" in address else "?"
    subject = quote(f"unsubscribe {make_token(settings, 'unsubscribe', email)}")
    return f"mailto:{address}{separator}subject={subject}"


# -- the return path (VERP) ---------------------------------------------------------------
#
# A bounce report goes to the envelope sender, so giving each recipient of each campaign an
# envelope sender of their own (`bounce+TOKEN@domain`) says whom a report is about, whatever
# the report itself contains. The token must fit in an address's local part (64 characters)
# and survive MTAs that change its case, so it cannot carry the address and the campaign
# themselves; it carries keyed tags of each (base32, lower case) and a MAC binding them:
# `recipient tag (12) + campaign tag (6) + MAC (8)`. `BounceTokens` turns a token back into
# the one subscriber and campaign it was made for, given the list and the campaigns.

_TAG_SIZES = (12, 6, 8)
BOUNCE_TOKEN_CHARS = sum(_TAG_SIZES)
_VERP = re.compile(rf"\+([a-z2-7]{{{BOUNCE_TOKEN_CHARS}}})@", re.IGNORECASE)


def _tag(secret: bytes, what: str, text: str, size: int) -> str:
    digest = hmac.new(secret, _DOMAIN + f"{what}\0{text}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:size]


def _bounce_token(secret: bytes, campaign: str, email: str) -> str:
    r, c, m = _TAG_SIZES
    return (_tag(secret, "bounce-recipient", email, r) + _tag(secret, "bounce-campaign",
            campaign, c) + _tag(secret, "bounce", f"{campaign}\0{email}", m))


def bounce_address(settings: Settings, campaign: str, email: str) -> str | None:
    """The envelope sender for `email`'s copy of `campaign`; None without email.bounce_address."""
    address = settings.config.email.bounce_address
    if not address:
        return None
    local, _, domain = address.rpartition("@")
    return f"{local}+{_bounce_token(token_secret(settings), campaign, email)}@{domain}"


def find_bounce_tokens(text: str) -> list[str]:
    """Every `+TOKEN@` in `text` (an address, a header), lower-cased, in order, once each."""
    return list(dict.fromkeys(t.lower() for t in _VERP.findall(text or "")))


class BounceTokens:
    """Reads return-path tokens back: `resolve(token)` -> (email, campaign), or None when the
    token was not made with this secret for one of the given addresses and campaigns."""

    def __init__(self, settings: Settings, emails: Iterable[str], campaigns: Iterable[str]):
        self.secret = token_secret(settings)
        r, c, _ = _TAG_SIZES
        self.emails: dict[str, list[str]] = {}
        for email in emails:
            tag = _tag(self.secret, "bounce-recipient", email, r)
            self.emails.setdefault(tag, []).append(email)
        self.campaigns: dict[str, list[str]] = {}
        for campaign in campaigns:
            self.campaigns.setdefault(_tag(self.secret, "bounce-campaign", campaign, c),
                                      []).append(campaign)

    def resolve(self, token: str) -> tuple[str, str] | None:
        token = token.lower()
        if len(token) != BOUNCE_TOKEN_CHARS:
            return None
        r, c, _ = _TAG_SIZES
        for email in self.emails.get(token[:r], ()):
            for campaign in self.campaigns.get(token[r:r + c], ()):
                expected = _bounce_token(self.secret, campaign, email)
                if hmac.compare_digest(expected, token):
                    return email, campaign
        return None
