"""Keeps secret values out of log records.

HTTP and OAuth libraries log URLs and headers at DEBUG level: urllib3 logs request paths (a
Slack or Discord webhook URL is itself a secret), requests-oauthlib logs the signed
`Authorization` header. Filters on our own loggers cannot reach those records, so adapters
register the secret values they read and a log-record factory scrubs every record as it is made.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

MASK = "***"
# Shorter values would mask ordinary words; no real credential is this short.
_MIN_LENGTH = 6

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def register(*values: str | None) -> None:
    """Never let these values reach a log record from now on (for the life of the process)."""
    global _installed
    fresh = {v for v in values if v and len(v) >= _MIN_LENGTH}
    with _lock:
        _secrets.update(fresh)
        if fresh and not _installed:
            _install()
            _installed = True


def redact(text: str) -> str:
    """`text` with every registered secret masked; use it on error texts from libraries."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _install() -> None:
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken log call is the handler's to report
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
