"""Writing briefs for tests: one brief with its front matter as keyword arguments, or a week's.

Every test that needs a well-formed brief on disk writes it here, so the format the tests
exercise is in one place. Briefs that are malformed on purpose (tests/test_briefs.py,
tests/test_brief_hostile.py) are written as raw bytes where they are tested.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot.briefs import Brief, BriefReader

BODY = "## WHAT HAPPENED\nSomething happened. It matters.\n"
WEEK_START = "2026-11-23T09:00:00Z"  # Monday of 2026-W48, the seeds' week


def write_brief(folder: Path, name: str, *, title: str = "A title", status: str = "published",
                published_at: str = "2026-11-20T09:00:00Z", url: str | None = None,
                category: str = "Research", body: str = BODY, extra: str = "",
                **fields: Any) -> Path:
    """Write `folder/name` and return its path.

    The front matter holds title, status, published_at, source_url (`url`, by default
    https://example.org/<stem>) and category, then `fields` in order (`id`, `image`,
    `image_alt`, `tags`, `lang`, ...; a None value is left out), then `extra`, raw front-matter
    lines for what is unusual on purpose. `status`, `published_at` and `url` are written as
    given, unquoted, so a test can hand the reader an odd value.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    url = url or f"https://example.org/{path.stem}"
    more = "".join(f"{key}: {_yaml(value)}\n" for key, value in fields.items()
                   if value is not None)
    path.write_text(
        f"---\ntitle: {_yaml(title)}\nstatus: {status}\npublished_at: {published_at}\n"
        f"source_url: {url}\ncategory: {_yaml(category)}\n{more}{extra}---\n\n{body}",
        encoding="utf-8",
    )
    return path


def write_week(folder: Path, count: int, *, week_start: str | datetime = WEEK_START,
               name: str | Callable[[int], str] = "brief-{n:03d}.md",
               **fields: Any) -> list[Path]:
    """`count` briefs (publishable unless told otherwise) in the week that begins at
    `week_start`: brief n is published n hours after it, named `name.format(n=n)` (or
    `name(n)`), titled "Brief n of the week".

    Any keyword of `write_brief` may be given, as a value or as a function of n (for example
    `title=lambda n: f"Story {n}"`, or `published_at` to place each brief yourself).
    """
    start = _utc(week_start)
    paths = []
    for n in range(count):
        given = {key: value(n) if callable(value) else value for key, value in fields.items()}
        given.setdefault("title", f"Brief {n} of the week")
        given.setdefault("published_at",
                         f"{start + timedelta(hours=n % (7 * 24)):%Y-%m-%dT%H:%M:%SZ}")
        file_name = name(n) if callable(name) else name.format(n=n)
        paths.append(write_brief(folder, file_name, **given))
    return paths


def publishable(path: Path, *, tz: str | None = None) -> Brief:
    """The brief at `path`, read as briefbot reads it, checked to be publishable."""
    reader = BriefReader(tz=ZoneInfo(tz)) if tz else BriefReader()
    brief, problems = reader.read(path)
    assert brief is not None, problems
    assert brief.is_publishable(["published"]), (brief.blockers(["published"]), problems)
    return brief


def _yaml(value: Any) -> str:
    """A front-matter value: JSON is YAML, and says a string is a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _utc(moment: str | datetime) -> datetime:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.astimezone(UTC)
