"""The preview's email cards: which digest the gallery shows (the closed period if it has not
gone out in full, else the one being collected), each prepared email personalised for a sample
recipient with a placeholder unsubscribe token, its size against Gmail's clipping, and its
images swapped for the gallery's own copies so the page loads nothing.

`bot.preview`'s builder inherits `EmailCards`; posts and the briefs stay there.
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from email import policy
from email.parser import BytesParser
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from bot.briefs import Brief
from bot.channels import Channel
from bot.config import Settings
from bot.gallery import GMAIL_CLIP_BYTES, Card, EmailView, Issue, State, human_bytes
from bot.images import ImageError
from bot.plan import DigestStep
from bot.redaction import redact
from bot.render.media import ImageMemo, publish_email_image

if TYPE_CHECKING:
    from bot.render.mime import PreparedEmail

SAMPLE_RECIPIENT = "subscriber@example.org"
TOKEN_PLACEHOLDER = "RECIPIENT-TOKEN"  # a preview shows no real (signed) unsubscribe token
EMAIL_HEADERS = ("From", "Reply-To", "To", "Subject", "List-Unsubscribe",
                 "List-Unsubscribe-Post", "List-Id")
_IMG_SRC = re.compile(r'(<img\b[^>]*?\ssrc=")([^"]*)(")', re.IGNORECASE)
_UNAVAILABLE = "data:image/svg+xml," + quote(
    "<svg xmlns='http://www.w3.org/2000/svg' width='552' height='120'>"
    "<rect width='100%' height='100%' fill='#fde8e8'/><text x='50%' y='55%' "
    "text-anchor='middle' font-family='sans-serif' font-size='18' fill='#a00'>"
    "hero image unavailable</text></svg>")


class EmailCards:
    """The email side of the gallery builder, which provides these and `_picture`."""

    settings: Settings
    now: datetime
    memo: ImageMemo

    def _digest(self, channels: dict[str, Channel], collecting: DigestStep,
                closed: DigestStep) -> tuple[Card | None, str]:
        """The digest still to go: the closed period if it has not gone out in full, else
        the one being collected. The note tells both."""
        from bot.render.email import prepare_digest

        senders = [name for name, channel in channels.items() if channel.sends_digest]
        if not senders:
            return None, ("No enabled channel sends the digest (add an smtp or outbox channel "
                          "to the configuration to have one).")
        note = (f"Collecting {collecting.period.describe()}: {collecting.reason}. Last closed "
                f"{closed.period.describe()}: {closed.state}, {closed.reason}.")
        shown = closed if closed.state in ("due", "partial") else collecting
        if not shown.briefs:
            return None, note
        state = State(shown.state, shown.reason)
        card = Card("email", ", ".join(senders), "email", state)
        try:
            prepared = prepare_digest(self.settings, shown.briefs,
                                      period_label=shown.period.label, now=self.now)
            card.email = self._email(prepared, f"Digest {shown.period.describe()}", card.issues,
                                     shown.briefs)
        except Exception as error:  # noqa: BLE001 - a broken template is shown, not raised
            card.kind = "error"
            card.issues.append(Issue("error", f"cannot render the digest: {redact(str(error))}"))
        left_out = [b.id for b in shown.briefs
                    if b.image and urlsplit(b.image).scheme not in ("https", "")]
        if left_out:
            more = f" and {len(left_out) - 10} more" if len(left_out) > 10 else ""
            card.issues.append(Issue("warning", "emails show https:// and local hero images "
                                     "only (a local one through `briefbot serve`); left out "
                                     f"for: {', '.join(left_out[:10])}{more}"))
        return card, f"{note} Sent through {', '.join(senders)}."

    def _email(self, prepared: PreparedEmail, title: str, issues: list[Issue],
               briefs: list[Brief]) -> EmailView:
        from bot.render.mime import Recipient

        email = self.settings.config.email
        base = email.base_url.rstrip("/")
        unsubscribe = f"{base}/unsubscribe/{TOKEN_PLACEHOLDER}"
        mailto = None
        if email.unsubscribe_mailto:
            mailto = (f"mailto:{email.unsubscribe_mailto.strip().removeprefix('mailto:')}"
                      f"?subject=unsubscribe%20{TOKEN_PLACEHOLDER}")
        domain = email.from_address.rpartition("@")[2].strip("> ") or "localhost"
        raw = prepared.personalise(Recipient(SAMPLE_RECIPIENT), message_id=f"<preview@{domain}>",
                                   unsubscribe_url=unsubscribe, unsubscribe_mailto=mailto,
                                   date=self.now)
        parsed = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        headers = [(name, " ".join(str(parsed[name]).split())) for name in EMAIL_HEADERS
                   if parsed[name] is not None]
        if prepared.html_bytes > GMAIL_CLIP_BYTES:
            issues.append(Issue("error", f"the HTML is {human_bytes(prepared.html_bytes)}, over "
                                f"Gmail's {human_bytes(GMAIL_CLIP_BYTES)}: Gmail clips it behind "
                                "[Message clipped]; shorten the briefs or lower "
                                "email.max_html_bytes"))
        elif prepared.html_bytes > email.max_html_bytes:
            issues.append(Issue("warning", f"the HTML is {human_bytes(prepared.html_bytes)}, over "
                                f"email.max_html_bytes ({human_bytes(email.max_html_bytes)})"))
        shown = self._email_images(prepared.html_for(unsubscribe), briefs, issues)
        return EmailView(title=title, subject=prepared.subject, headers=headers,
                         preheader=prepared.preheader, html=shown,
                         text=prepared.text_for(unsubscribe), html_bytes=prepared.html_bytes,
                         message_bytes=len(raw), max_html_bytes=email.max_html_bytes)

    def _email_images(self, source: str, briefs: list[Brief], issues: list[Issue]) -> str:
        """Remote images → the gallery's copies (or a placeholder): the page loads nothing."""
        by_url = {b.image: b for b in briefs if b.image}
        for brief in briefs:  # a local image is linked where `briefbot serve` answers for it
            if brief.image and not urlsplit(brief.image).scheme:
                published = publish_email_image(self.settings, brief)
                if published is not None:
                    by_url[published[0]] = brief

        def swap(match: re.Match[str]) -> str:
            url = html.unescape(match.group(2))
            if url.startswith(("data:", "images/")):
                return match.group(0)
            brief = by_url.get(url)
            if brief is None:
                issues.append(Issue("warning", f"image {url} is not a brief's hero image; the "
                                    "preview does not load it"))
                return match.group(1) + _UNAVAILABLE + match.group(3)
            try:
                picture = self._picture(self.memo.load(self.settings, brief))
            except ImageError as error:
                issues.append(Issue("warning", f"hero image of {brief.id} cannot be loaded, "
                                    f"readers will see a broken image: {redact(str(error))}"))
                return match.group(1) + _UNAVAILABLE + match.group(3)
            return match.group(1) + picture.src + match.group(3)

        return _IMG_SRC.sub(swap, source)
