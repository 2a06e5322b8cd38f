"""The sent-log's high-water mark, kept beside it in the state folder.

Rows of the sent-log only ever grow (deliveries are never deleted), so the highest row id it
has held only grows too. A sent-log restored from an old backup, or truncated, is behind the
mark: sending from it would post again everything sent since. A sending run checks the mark
before it starts and raises it as it goes; `briefbot sent-log accept` moves it back on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from bot.config import ConfigError, Settings
from bot.ledger import Ledger

MARK_FILE = "sent-log.mark"


class SentLogBehind(ConfigError):
    """The sent-log holds less than it once did: restored from a backup, or truncated."""


def _path(settings: Settings) -> Path:
    return settings.state_dir / MARK_FILE


def _database(settings: Settings) -> str:
    """Marks are per database (a state folder may be pointed at another one on purpose); the
    URL is hashed, as it may hold a password."""
    return hashlib.sha256(settings.database_url.encode()).hexdigest()[:16]


def _read(settings: Settings) -> dict[str, int]:
    try:
        data = json.loads(_path(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write(settings: Settings, marks: dict[str, int]) -> None:
    path = _path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(marks, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def guard(settings: Settings, ledger: Ledger) -> None:
    """Refuse to send from a sent-log behind its mark; otherwise raise the mark to it."""
    marks = _read(settings)
    database = _database(settings)
    highest = ledger.max_id()
    mark = marks.get(database, 0)
    if highest < mark:
        raise SentLogBehind(
            f"the sent-log holds less than it did: its highest delivery is #{highest}, but "
            f"#{mark} was recorded before (kept in {_path(settings)}). It was restored from a "
            "backup or truncated, and sending now would post and mail again everything sent "
            "since. Restore the latest copy, or, if this is intended, run `briefbot sent-log "
            "accept` and then send")
    if highest > mark:
        marks[database] = highest
        _write(settings, marks)


def accept(settings: Settings, ledger: Ledger) -> tuple[int, int]:
    """Take the sent-log as it is now: returns (the old mark, the new one)."""
    marks = _read(settings)
    database = _database(settings)
    old, new = marks.get(database, 0), ledger.max_id()
    marks[database] = new
    _write(settings, marks)
    return old, new
