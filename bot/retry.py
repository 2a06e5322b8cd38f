"""When a delivery that failed may be tried again: the one retry schedule for posts and mail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import PublishConfig


def backoff(attempts: int, base: timedelta, cap: timedelta, rng: Callable[[], float]) -> timedelta:
    """Exponential backoff with full jitter over the upper half, so workers spread out."""
    ceiling = min(cap, base * (2 ** max(attempts - 1, 0)))
    return ceiling * (0.5 + rng() / 2)


def next_attempt(attempts: int, error: Exception, now: datetime, publish: PublishConfig,
                 rng: Callable[[], float]) -> datetime | None:
    """When a delivery that failed transiently is tried again: at the error's retry-after, else
    after a backoff; None once `publish.max_attempts` are spent (the delivery is dead)."""
    if attempts >= publish.max_attempts:
        return None
    after = getattr(error, "retry_after", None)
    return now + (timedelta(seconds=after) if after is not None
                  else backoff(attempts, publish.retry_base, publish.retry_max, rng))
