"""Signing up from the web form: its guards and the confirmation it mails.

The form carries a token signed with the list's secret and the hour it was shown, so a post
made from another site, or by a script that never loaded the form, is refused; each client gets
a few sign-ups per window, so the form cannot be used to fill the list or flood inboxes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path

from bot.config import Settings
from bot.tokens import token_secret

CONFIRMATIONS_FOLDER = "outbox/confirmations"
FORM_HOURS = 2  # a form is good for this long after it was shown (between 1 and 2 hours)
SIGNUPS_PER_WINDOW = 5
WINDOW_SECONDS = 600
MAX_CLIENTS = 10_000  # remembered at once; the oldest are forgotten first


def _form_mac(settings: Settings, hour: int) -> str:
    key = token_secret(settings)
    return hmac.new(key, f"subscribe-form:{hour}".encode(), hashlib.sha256).hexdigest()[:32]


def form_token(settings: Settings, now: float | None = None) -> str:
    hour = int((time.time() if now is None else now) // 3600)
    return f"{hour}.{_form_mac(settings, hour)}"


def valid_form_token(settings: Settings, token: str, now: float | None = None) -> bool:
    hour_text, _, mac = token.partition(".")
    if not hour_text.isdigit() or len(hour_text) > 12:
        return False
    hour, current = int(hour_text), int((time.time() if now is None else now) // 3600)
    if not 0 <= current - hour < FORM_HOURS:
        return False
    return hmac.compare_digest(mac.encode(), _form_mac(settings, hour).encode())


class SignupLimiter:
    """At most `SIGNUPS_PER_WINDOW` sign-ups per client address per `WINDOW_SECONDS`; memory
    bounded by `MAX_CLIENTS`."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.seen: OrderedDict[str, list[float]] = OrderedDict()
        self.lock = threading.Lock()

    def wait(self, client: str) -> int:
        """0 when this sign-up may go ahead (and it is counted), else seconds to wait."""
        now = self.clock()
        with self.lock:
            times = [t for t in self.seen.pop(client, []) if now - t < WINDOW_SECONDS]
            if len(times) >= SIGNUPS_PER_WINDOW:
                self.seen[client] = times
                return max(1, int(WINDOW_SECONDS - (now - times[0])) + 1)
            self.seen[client] = [*times, now]
            while len(self.seen) > MAX_CLIENTS:
                self.seen.popitem(last=False)
            return 0


def send_confirmation(settings: Settings, email: str, confirm_url: str) -> Path:
    """Write the double opt-in email to `outbox/confirmations/` as an `.eml`; returns its path.

    The one place a sign-up's email leaves from: an SMTP sender can take over here.
    """
    cfg = settings.config.email
    message = EmailMessage()
    message["From"] = cfg.from_address
    message["To"] = email
    message["Subject"] = f"Confirm your subscription to {cfg.list_name}"
    message["Date"] = format_datetime(datetime.now(UTC))
    domain = parseaddr(cfg.from_address)[1].rpartition("@")[2] or None
    message["Message-ID"] = make_msgid("confirm", domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    if cfg.reply_to:
        message["Reply-To"] = cfg.reply_to
    text = (
        f"Someone, hopefully you, asked to send {cfg.list_name} to {email}.\n\n"
        f"To confirm, open this link and press the button:\n{confirm_url}\n\n"
        "If it was not you, ignore this email: nothing will be sent.\n\n"
        f"-- \n{cfg.postal_address}\n"
    )
    # Unencoded, so the link stays whole on one line for every reader.
    message.set_content(text, cte="7bit" if text.isascii() else "8bit")
    folder = settings.resolve(CONFIRMATIONS_FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = folder / f"{stamp}-{uuid.uuid4().hex[:12]}.eml"
    temporary = target.with_suffix(".tmp")
    temporary.write_bytes(bytes(message))
    os.replace(temporary, target)
    return target
