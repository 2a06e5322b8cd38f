"""What a mailing did: the run's report (`DigestReport`) and each sending thread's tally.

Kept apart from `bot.mailing` (which re-exports these names) so the report's wording and
counting stay in one small module.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.timing import Period

SETTLED = ("sent", "dead", "skipped")
MAX_ERRORS = 50  # per report; the counts stay exact


@dataclass
class DigestReport:
    """What a digest run did; `counts` keys are the outcomes listed in `ORDER`."""

    ORDER = ("would-send", "sent", "already", "elsewhere", "unsubscribed", "queued", "failed",
             "dead", "unknown", "busy", "left")

    period: Period | None  # None for a single-brief mailing
    now: datetime
    dry_run: bool = False
    test_to: str | None = None
    channels: list[str] = field(default_factory=list)
    briefs: list[str] = field(default_factory=list)
    subject: str | None = None
    size: int = 0  # bytes of one complete message
    html_bytes: int = 0
    recipients: int = 0  # active subscribers when the run started
    counts: Counter[str] = field(default_factory=Counter)
    bounced: int = 0  # addresses this run marked bounced
    errors: list[dict[str, str]] = field(default_factory=list)
    stopped: str | None = None
    seconds: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)  # the channel's own (connections...)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def empty(self) -> bool:
        return not self.briefs

    @property
    def retryable(self) -> int:
        """Recipients a later run may still reach: retries, leftovers, and those another
        process claimed during this run (it may die before sending, so only a run that finds
        them settled may call the mailing done)."""
        return sum(self.counts[s] for s in ("queued", "failed", "busy", "elsewhere", "left"))

    @property
    def pending(self) -> int:
        """Recipients not yet known to be reached: the retryable ones and the unknown ones."""
        return self.retryable + self.counts["unknown"]

    @property
    def failed(self) -> bool:
        """Something did not go out. `busy` is not: it is another live worker's share (the
        claims of a dead one became unknown when this run started)."""
        return bool(self.stopped) or any(self.counts[s] for s in ("failed", "dead", "unknown"))

    @property
    def rate(self) -> float:
        return self.counts["sent"] / self.seconds if self.seconds > 0 else 0.0

    def add(self, counts: Counter[str], errors: list[dict[str, str]], bounced: int) -> None:
        with self._lock:
            self.counts.update(counts)
            self.bounced += bounced
            self.errors.extend(errors[: max(0, MAX_ERRORS - len(self.errors))])

    def summary(self) -> str:
        where = self.period.describe() if self.period else ", ".join(self.briefs)
        if self.empty:
            return f"no publishable briefs in {where}: nothing to send"
        if self.test_to:
            state = "sent" if self.counts["sent"] else "not sent"
            return f"test copy of the {where} digest {state} to {self.test_to}"
        parts = [f"{self.counts[s]} {s}" for s in self.ORDER if self.counts[s]]
        head = (f"dry run: digest {where}" if self.dry_run else f"digest {where}")
        briefs = f"{len(self.briefs)} brief" + ("s" if len(self.briefs) != 1 else "")
        text = (f"{head}: {briefs}, {self.size:,} bytes, {self.recipients} active "
                "subscribers: " + (", ".join(parts) or "nothing to do"))
        if self.bounced:
            text += f"; {self.bounced} addresses now bounced"
        if self.counts["sent"] and self.seconds:
            text += f" ({self.rate:,.0f} messages/s)"
        if self.stopped:
            text += f"; stopped: {self.stopped}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period and self.period.label,
            "start": self.period and self.period.start.isoformat(),
            "end": self.period and self.period.end.isoformat(), "now": self.now.isoformat(),
            "dry_run": self.dry_run, "test_to": self.test_to, "channels": self.channels,
            "briefs": self.briefs, "subject": self.subject, "size": self.size,
            "html_bytes": self.html_bytes, "recipients": self.recipients,
            "counts": {s: self.counts[s] for s in self.ORDER if self.counts[s]},
            "pending": self.pending, "bounced": self.bounced, "errors": self.errors,
            "stopped": self.stopped, "seconds": round(self.seconds, 3),
            "messages_per_second": round(self.rate, 1), "stats": self.stats,
            "summary": self.summary(),
        }


@dataclass
class Tally:
    """One worker's counts, merged into the report when it finishes."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, str]] = field(default_factory=list)
    bounced: int = 0

    def fail(self, state: str, recipient: str, error: str) -> None:
        self.counts[state] += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"recipient": recipient, "state": state, "error": error})
