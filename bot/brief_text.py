"""The text of a brief file: front matter and Markdown, before any of it means a `Brief`.

Owns the lint finding (`Problem`), the front-matter reader (every leading `---` block merged,
camelCase and snake_case keys normalised, YAML read without aliases or huge numbers), dates,
`##` sections, HERO_IMAGE comments, the summary and the clean one-line display text.
`bot.briefs` turns these into `Brief` objects and re-exports the public names.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ALIASES = {
    "date": "published_at",
    "published": "published_at",
    "pub_date": "published_at",
    "url": "source_url",
    "link": "source_url",
    "hero_image": "image",
    "alt": "image_alt",
    "keywords": "tags",
    "lang": "language",
}
# `_..placeholder.._` within one line. The lookahead finds the closing `_` first, so each `_`
# scans only up to the next one: linear, where `_[^_\n]*placeholder[^_\n]*_` was quadratic on a
# long line with no closing `_`. It matches exactly the same spans.
PLACEHOLDER = re.compile(
    r"_(?=[^_\n]*_)[^_\n]*?placeholder[^_\n]*_|\bTODO\b|\bTBD\b|\blorem ipsum\b",
    re.IGNORECASE,
)
# The head of a `<!-- HERO_IMAGE: ... -->` comment; its end is found with str.find (see
# `_hero_comments`), as a lazy `(.*?)-->` rescans the rest of the text from every unclosed head.
HERO_HEAD = re.compile(r"<!--\s*HERO_IMAGE\s*:?")
# A Markdown link `[text](url)`, the url with at most one level of parentheses. Neither part can
# run into the next link's brackets, so every attempt scans its own stretch of text only.
LINK = re.compile(r"\[([^\[\]]*)\]\([^()\s]*(?:\([^()\s]*\)[^()\s]*)*\)")
LIST_MARK = re.compile(r"^[^\S\n]*(?:[-*+]|\d+\.)\s+", re.MULTILINE)
# Control characters, and the bidi overrides and isolates and the BOM, which can make a
# subject or a post read backwards (mark-up tricks in "From" lines and titles).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u2028\u2029\u202a-\u202e"
                     r"\u2066-\u2069\ufeff]")
RUN_ON = re.compile(r"([a-z]{2}[.!?])([A-Z][a-z])")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"“'‘(\[A-Z0-9])")
IMAGE_SUFFIX = re.compile(r"\.(jpe?g|png|gif|webp|avif)$", re.IGNORECASE)
SUMMARY_LIMIT = 300
# A publish time must fall in these years (in UTC): far enough from datetime's limits that
# converting it to any timezone, or adding a digest period to it, cannot overflow.
MIN_YEAR, MAX_YEAR = 1900, 8999


# libyaml's loader when PyYAML was built with it: the same safe subset, several times faster.
class YAML_LOADER(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # noqa: N801
    """A timestamp YAML cannot build (`2026-02-30`, year 0) stays text, so the reader reports
    it as a `bad-date` of its field rather than refusing the whole front matter."""


def _timestamp(loader: Any, node: yaml.Node) -> Any:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError):
        return loader.construct_scalar(node)


def _short_number(construct: Callable[[Any, yaml.Node], Any]) -> Callable[[Any, yaml.Node], Any]:
    """A number written in more than 64 characters stays text: YAML 1.1 reads `1:2:3:...` as
    base 60, quadratic to build, and an int over 4,300 digits cannot even be printed."""
    def number(loader: Any, node: yaml.Node) -> Any:
        return loader.construct_scalar(node) if len(node.value) > 64 else construct(loader, node)
    return number


YAML_LOADER.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)
for _tag, _construct in (("int", yaml.constructor.SafeConstructor.construct_yaml_int),
                         ("float", yaml.constructor.SafeConstructor.construct_yaml_float)):
    YAML_LOADER.add_constructor(f"tag:yaml.org,2002:{_tag}", _short_number(_construct))


@dataclass(frozen=True)
class Problem:
    """One lint finding; `message` says what to do about it."""

    path: str
    severity: str  # "error" or "warning"
    code: str
    message: str
    field: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def normalise_key(key: str) -> str:
    """`sourceUrl`, `source-url` and `source_url` are one key."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(key).strip()).replace("-", "_").lower()
    return ALIASES.get(snake, snake)


def _problem(path: Path | str, code: str, message: str, *, severity: str = "error",
             field: str | None = None, line: int | None = None) -> Problem:
    return Problem(str(path), severity, code, message, field, line)


def _read_front_matter(
    path: Path, lines: list[str], tz: tzinfo
) -> tuple[dict[str, Any] | None, dict[str, int], int, list[Problem]]:
    """Merge every leading `---` block; a later block wins, a disagreement is a warning."""
    meta: dict[str, Any] = {}
    lines_of: dict[str, int] = {}
    problems: list[Problem] = []
    i = 0
    while True:
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines) or lines[i].rstrip() != "---":
            return meta, lines_of, i, problems
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() in ("---", "...")),
                   None)
        if end is None:
            problems.append(_problem(path, "front-matter-unclosed", "front matter opened with "
                                     "`---` is never closed; add a closing `---` line",
                                     line=i + 1))
            return None, lines_of, i, problems
        block = "\n".join(lines[i + 1 : end])
        try:
            loaded, key_lines, alias = _load_yaml(block) if block.strip() else ({}, {}, None)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = i + 2 + mark.line if mark else i + 1
            problems.append(_problem(path, "yaml-invalid", f"front matter is not valid YAML "
                                     f"({getattr(error, 'problem', None) or error}); fix the "
                                     "syntax (quote values containing `:`)", line=where))
            return None, lines_of, end + 1, problems
        except (ValueError, TypeError, OverflowError) as error:
            problems.append(_problem(path, "yaml-invalid", f"front matter has a bad value "
                                     f"({error}); quote it", line=i + 1))
            return None, lines_of, end + 1, problems
        if alias is not None:
            key, where = alias
            problems.append(_problem(
                path, "yaml-alias", "front matter uses a YAML alias (`*name`, or a `<<` merge "
                "of one); write the value out in full: aliases are refused because a few "
                "lines of them can expand into billions of values",
                field=key, line=i + 2 + where))
            return None, lines_of, end + 1, problems
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            problems.append(_problem(path, "front-matter-not-mapping", "front matter must be "
                                     "`key: value` lines", line=i + 1))
            return None, lines_of, end + 1, problems
        for raw_key, value in loaded.items():
            key = normalise_key(raw_key)
            line = key_lines.get(str(raw_key))
            line = None if line is None else i + 2 + line
            if key in meta and not _same(key, meta[key], value, tz):
                problems.append(_problem(
                    path, "front-matter-conflict",
                    f"{key!r} is {_show(meta[key])} in one front-matter block and "
                    f"{_show(value)} in a later one; the later value wins: make them agree",
                    severity="warning", field=key, line=line))
            meta[key] = value
            lines_of[key] = line
        i = end + 1


def _load_yaml(block: str) -> tuple[Any, dict[str, int], tuple[str | None, int] | None]:
    """One YAML document → (value, line in the block of each top-level key, alias).

    `alias` is (key, line) of the first top-level entry that uses an alias, and then nothing
    is built: the composed node graph is walked once, each node visited once, so a billion
    laughs costs its size in lines, never its expansion."""
    loader = YAML_LOADER(block)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, None
        key_lines: dict[str, int] = {}
        seen: set[int] = set()
        entries: list[tuple[yaml.Node | None, yaml.Node]] = [(None, node)]
        if isinstance(node, yaml.MappingNode):
            seen.add(id(node))
            entries = list(node.value)
            for key_node, _ in entries:
                if isinstance(key_node, yaml.ScalarNode):
                    key_lines.setdefault(str(key_node.value), key_node.start_mark.line)
        for key_node, value_node in entries:
            stack = [value_node] if key_node is None else [key_node, value_node]
            while stack:
                current = stack.pop()
                if id(current) in seen:
                    key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                    where = (key_node or current).start_mark.line
                    return None, key_lines, (normalise_key(key) if key else None, where)
                seen.add(id(current))
                if isinstance(current, yaml.SequenceNode):
                    stack.extend(current.value)
                elif isinstance(current, yaml.MappingNode):
                    for pair in current.value:
                        stack.extend(pair)
        return loader.construct_document(node), key_lines, None
    finally:
        loader.dispose()


def _same(key: str, a: Any, b: Any, tz: tzinfo) -> bool:
    if key == "published_at":
        try:
            return to_datetime(a, tz) == to_datetime(b, tz)
        except ValueError:
            pass
    if isinstance(a, str | int | float) and isinstance(b, str | int | float):
        return str(a).strip() == str(b).strip()
    return a == b


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def to_datetime(value: Any, tz: tzinfo) -> datetime:
    """An aware UTC datetime from ISO 8601 text, a YAML timestamp or a date; naive → `tz`."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time())
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{_show(value)} is not a valid date and time") from None
    else:
        raise ValueError(f"{_show(value)} is not a date and time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    try:
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        moment = None
    if moment is None or not MIN_YEAR <= moment.year <= MAX_YEAR:
        shown = repr(value.isoformat()) if isinstance(value, date) else _show(value)
        raise ValueError(f"{shown} is out of range: a publish time must fall in the "
                         f"years {MIN_YEAR} to {MAX_YEAR} (UTC)")
    return moment


def _sections(lines: list[str], start: int) -> tuple[dict[str, str], dict[str, int]]:
    sections: dict[str, list[str]] = {}
    section_lines: dict[str, int] = {}
    current = None
    for number, line in enumerate(lines[start:], start=start + 1):
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
            section_lines[current] = number
        elif line.startswith("# "):
            current = None
        elif current is not None:
            sections[current].append(line)
    text = {name: "\n".join(body).strip() for name, body in sections.items()}
    return text, section_lines


def _section_finder(section_lines: dict[str, int]) -> Callable[[int], str | None]:
    """line → the section it is in: a bisection, not a pass over every heading per line."""
    starts = sorted((start, name) for name, start in section_lines.items())
    numbers = [start for start, _ in starts]

    def section_at(line: int) -> str | None:
        index = bisect.bisect_left(numbers, line)
        return starts[index - 1][1] if index else None

    return section_at


def _hero_comments(text: str) -> Iterable[tuple[int, str]]:
    """(offset, contents) of each `<!-- HERO_IMAGE: ... -->`, in one pass over the text."""
    position = 0
    while (start := text.find("<!--", position)) != -1:
        head = HERO_HEAD.match(text, start)
        if head is None:
            position = start + 4
            continue
        end = text.find("-->", head.end())
        if end == -1:
            return  # nothing after this is closed either
        yield start, text[head.end() : end]
        position = end + 3


def _strip_comments(text: str) -> str:
    """`<!-- ... -->` comments replaced by a space, in one pass (no lazy regex rescans)."""
    parts, position = [], 0
    while (start := text.find("<!--", position)) != -1:
        end = text.find("-->", start + 4)
        if end == -1:
            break
        parts += [text[position:start], " "]
        position = end + 3
    parts.append(text[position:])
    return "".join(parts)


def summarise(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """The first sentence or two, with run-ons such as `everyone.The` split."""
    plain = PLACEHOLDER.sub(" ", _strip_comments(text))
    plain = LIST_MARK.sub("", plain)
    plain = re.sub(r"[*_`]+", "", plain)
    plain = LINK.sub(r"\1", plain)
    plain = clean_text(RUN_ON.sub(r"\1 \2", plain))
    if not plain:
        return ""
    summary = ""
    for sentence in SENTENCE_END.split(plain)[:2]:
        candidate = f"{summary} {sentence}".strip()
        if summary and len(candidate) > limit:
            break
        summary = candidate
    if len(summary) > limit:
        summary = summary[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return summary


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and " " not in value


def _looks_like_image_ref(value: str) -> bool:
    if not value or any(ch.isspace() for ch in value):
        return False
    return _is_http_url(value) or bool(IMAGE_SUFFIX.search(value))


def clean_text(value: str) -> str:
    """Text safe for a header or a post: no control characters, normalised Unicode."""
    return " ".join(CONTROL.sub(" ", unicodedata.normalize("NFC", value)).split())
