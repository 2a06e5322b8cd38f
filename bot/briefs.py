"""Briefs: Markdown files with YAML front matter, read into frozen `Brief` objects.

Files in the wild carry several front-matter blocks with camelCase and snake_case spellings of
the same keys, draft placeholders and unfilled hero-image comments. The reader merges the
blocks, normalises the keys and reports every oddity as a `Problem` instead of raising, so one
bad file never hides the others.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import os
import re
import stat as stat_mode
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

if TYPE_CHECKING:
    from bot.config import Settings

BRIEF_SUFFIXES = {".md", ".markdown", ".txt"}
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


@dataclass(frozen=True)
class Brief:
    """One brief as read. Its display text (title, category, source, image_alt, summary) is
    clean: one line, NFC-normalised, no control characters, so renderers use it as it is."""

    id: str
    path: Path
    title: str | None
    category: str | None
    source: str | None
    source_url: str | None
    published_at: datetime | None
    status: str | None
    image: str | None
    image_alt: str | None
    sections: Mapping[str, str]
    summary: str
    tags: tuple[str, ...]
    content_hash: str
    body: str = ""
    problems: tuple[Problem, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    def section(self, name: str) -> str | None:
        wanted = name.strip().casefold()
        return next((v for k, v in self.sections.items() if k.casefold() == wanted), None)

    def blockers(self, published_statuses: Iterable[str]) -> list[str]:
        """Why this brief may not be published; empty when it is publishable."""
        statuses = [s.lower() for s in published_statuses]
        reasons = []
        if (self.status or "").lower() not in statuses:
            reasons.append(f"status is {self.status or 'missing'!r}, not {' or '.join(statuses)}")
        if not self.title:
            reasons.append("no title")
        if not self.published_at:
            reasons.append("no publish time")
        if not self.source_url:
            reasons.append("no source URL")
        for problem in self.problems:
            if problem.code in PLACEHOLDER_CODES:
                reasons.append(problem.message.split(";")[0])
            elif problem.severity == "error" and problem.code not in FIELD_CODES | SENDS_ANYWAY:
                reasons.append(f"{problem.code}: {problem.message.split(';')[0]}")
        return list(dict.fromkeys(reasons))

    def is_publishable(self, published_statuses: Iterable[str]) -> bool:
        return not self.blockers(published_statuses)


PLACEHOLDER_CODES = {"placeholder", "hero-image-placeholder", "empty-section", "missing-section"}
FIELD_CODES = {"missing-title", "missing-published-at", "missing-source-url"}
# Errors `check` reports that do not hold a brief back: its post goes out without the image.
SENDS_ANYWAY = {"missing-image"}


def normalise_key(key: str) -> str:
    """`sourceUrl`, `source-url` and `source_url` are one key."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(key).strip()).replace("-", "_").lower()
    return ALIASES.get(snake, snake)


class BriefReader:
    """Reads brief files, remembering unchanged ones by size, mtime and content hash."""

    def __init__(
        self,
        tz: tzinfo = UTC,
        max_bytes: int = 1_048_576,
        required_sections: Iterable[str] = (),
        published_statuses: Iterable[str] = ("published",),
    ):
        self.tz = tz
        self.max_bytes = max_bytes
        self.required_sections = tuple(required_sections)
        self.published_statuses = tuple(s.lower() for s in published_statuses)
        self._by_stat: dict[str, tuple[int, int, tuple[Brief | None, list[Problem]]]] = {}
        self._by_hash: dict[str, tuple[Brief | None, list[Problem]]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> BriefReader:
        cfg = settings.config.briefs
        return cls(tz=settings.tz, max_bytes=cfg.max_file_bytes,
                   required_sections=cfg.required_sections,
                   published_statuses=cfg.published_statuses)

    def read(self, path: Path | str) -> tuple[Brief | None, list[Problem]]:
        """One file → a `Brief` (or None if unreadable) and its problems. Never raises."""
        try:
            stat = os.stat(path)
        except OSError as error:
            return None, [_problem(path, "unreadable", f"cannot read the file ({error.strerror})")]
        return self._read(str(path), stat)

    def _read(self, name: str, stat: os.stat_result) -> tuple[Brief | None, list[Problem]]:
        cached = self._by_stat.get(name)
        if cached and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return cached[2]
        path = Path(name)
        if stat.st_size > self.max_bytes:
            result: tuple[Brief | None, list[Problem]] = None, [
                _problem(
                    path,
                    "too-large",
                    f"file is {stat.st_size:,} bytes, over the {self.max_bytes:,}-byte cap; "
                    "a brief is short text: move large content elsewhere or raise "
                    "briefs.max_file_bytes",
                )
            ]
        else:
            try:
                data = read_regular_file(name, self.max_bytes)
            except OSError as error:
                return None, [_problem(path, "unreadable", f"cannot read ({error.strerror})")]
            if data is None:
                return None, [_not_regular(path)]
            if len(data) > self.max_bytes:  # grew after the stat: read again on the next scan
                return None, [_problem(path, "too-large", f"file is over the "
                                       f"{self.max_bytes:,}-byte cap; a brief is short text: "
                                       "move large content elsewhere or raise "
                                       "briefs.max_file_bytes")]
            digest = hashlib.sha256(data).hexdigest()
            key = f"{name}\0{digest}"
            result = self._by_hash.get(key) or self.parse(path, data, digest)
            self._by_hash[key] = result
        self._by_stat[name] = (stat.st_size, stat.st_mtime_ns, result)
        return result

    def parse(
        self, path: Path, data: bytes, digest: str | None = None
    ) -> tuple[Brief | None, list[Problem]]:
        try:
            return _parse(self, path, data, digest or hashlib.sha256(data).hexdigest())
        except RecursionError:
            return None, [_problem(path, "yaml-invalid", "front matter nests too deeply")]

    def scan(self, paths: Iterable[Path]) -> Scan:
        """Read every brief under `paths` (files or folders), then check ids across files."""
        briefs: list[Brief] = []
        problems: list[Problem] = []
        for name, stat in brief_files(paths, problems):
            brief, found = self._read(name, stat)
            problems.extend(found)
            if brief:
                briefs.append(brief)
        return _flag_duplicates(briefs, problems)


@dataclass(frozen=True)
class Scan:
    briefs: list[Brief]
    problems: list[Problem]

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)


def read_regular_file(name: str, limit: int) -> bytes | None:
    """At most `limit + 1` bytes of a regular file; None, without reading, for anything else.
    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever."""
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat_mode.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read(limit + 1)
    finally:
        os.close(fd)


def _not_regular(path: Path | str, why: str = "not a regular file") -> Problem:
    return _problem(path, "not-regular-file", f"{why}; skipped without opening it: a brief "
                    "must be a plain file inside a briefs folder, so replace it with one or "
                    "remove it")


def brief_files(paths: Iterable[Path], problems: list[Problem]) -> list[tuple[str, os.stat_result]]:
    """Brief files under `paths` with their stat, sorted; plain strings keep rescans cheap.

    Only regular files are listed: a FIFO, a device, a socket, or a symlink to one of them or
    to anywhere outside the folder being listed is a `not-regular-file` problem instead."""
    files: list[tuple[str, os.stat_result]] = []

    def listing(folder: str) -> Iterator[os.DirEntry[str]]:
        try:
            return iter(sorted(os.scandir(folder), key=lambda e: e.name))
        except OSError as error:
            problems.append(_problem(folder, "unreadable", f"cannot list ({error.strerror})"))
            return iter(())

    def walk(folder: str, root: str) -> None:
        stack = [listing(folder)]  # depth first, in name order; no recursion: any depth works
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):  # no symlink loops
                stack.append(listing(entry.path))
            elif os.path.splitext(entry.name)[1].lower() in BRIEF_SUFFIXES:
                try:
                    found = entry.stat()
                except OSError:
                    continue
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if os.path.commonpath([root, target]) != root:
                        problems.append(_not_regular(entry.path, "a symlink to outside the "
                                                     "briefs folder"))
                        continue
                if not stat_mode.S_ISREG(found.st_mode):
                    problems.append(_not_regular(entry.path))
                    continue
                files.append((entry.path, found))

    for path in paths:
        if path.is_dir():
            walk(str(path), os.path.realpath(path))
        elif path.is_file():
            files.append((str(path), path.stat()))
        elif path.exists():
            problems.append(_not_regular(path))
        else:
            problems.append(
                _problem(path, "not-found", "no such file or folder; check the path or "
                         "briefs.folders in the configuration")
            )
    return files


def _flag_duplicates(briefs: list[Brief], problems: list[Problem]) -> Scan:
    by_id: dict[str, list[Brief]] = {}
    for brief in briefs:
        by_id.setdefault(brief.id, []).append(brief)
    result = []
    for brief in briefs:
        group = by_id[brief.id]
        if len(group) > 1:  # name a few of the others: 10,000 copies must not make 10**8 names
            others = [str(b.path) for b in group[:4] if b is not brief][:3]
            more = len(group) - 1 - len(others)
            problem = _problem(
                brief.path,
                "duplicate-id",
                f"id {_show(brief.id)} is also used by {', '.join(others)}"
                f"{f' and {more} more' if more else ''}; "
                "give each brief a unique `id` (or file name)",
                field="id",
            )
            problems.append(problem)
            brief = dataclasses.replace(brief, problems=(*brief.problems, problem))
        result.append(brief)
    return Scan(result, problems)


def _problem(path: Path | str, code: str, message: str, *, severity: str = "error",
             field: str | None = None, line: int | None = None) -> Problem:
    return Problem(str(path), severity, code, message, field, line)


def _parse(
    reader: BriefReader, path: Path, data: bytes, digest: str
) -> tuple[Brief | None, list[Problem]]:
    if not data.strip():
        return None, [_problem(path, "empty", "file is empty; write a brief or delete the file")]
    if b"\0" in data:
        return None, [_problem(path, "binary", "file is binary, not a Markdown brief; remove it")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return None, [
            _problem(path, "encoding", f"not UTF-8 (byte {error.start}); save the file as UTF-8")
        ]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    meta, lines_of, body_start, problems = _read_front_matter(path, lines, reader.tz)
    if meta is None:
        return None, problems
    body = "\n".join(lines[body_start:])
    sections, section_lines = _sections(lines, body_start)

    def line_of(key: str) -> int | None:
        return lines_of.get(key)

    def text_field(key: str) -> str | None:
        value = meta.get(key)
        if value is None or isinstance(value, dict | list):
            return None
        return str(value).strip() or None

    def display_field(key: str) -> str | None:
        """Text shown to readers, cleaned here once so no renderer has to."""
        value = text_field(key)
        return (clean_text(value) or None) if value else None

    title = text_field("title")
    if title is None:
        heading = next((i for i, ln in enumerate(lines[body_start:]) if ln.startswith("# ")), None)
        if heading is not None:
            title = lines[body_start + heading][2:].strip() or None
            lines_of.setdefault("title", body_start + heading + 1)
    if title and CONTROL.search(title):
        problems.append(
            _problem(path, "title-control-chars", "title contains control or invisible "
                     "characters; retype it as plain text", field="title", line=line_of("title"))
        )
    if title:
        title = clean_text(title) or None

    status = (text_field("status") or "").lower() or None
    claims_published = status in reader.published_statuses
    soft = "error" if claims_published else "warning"

    published_at = None
    if "published_at" in meta:
        try:
            published_at = to_datetime(meta["published_at"], reader.tz)
        except ValueError as error:
            problems.append(
                _problem(path, "bad-date", f"{error}; write ISO 8601 such as "
                         "2026-11-28T09:00:00Z", field="published_at",
                         line=line_of("published_at"))
            )
    source_url = text_field("source_url")
    if source_url and not _is_http_url(source_url):
        problems.append(
            _problem(path, "bad-source-url", f"source URL {source_url!r} is not an http(s) URL; "
                     "write the full https:// address", field="source_url",
                     line=line_of("source_url"))
        )
        source_url = None

    for key, code, what in (
        ("title", "missing-title", "a title (front-matter `title` or a `# ` heading)"),
        ("published_at", "missing-published-at", "a publish time (`published_at`)"),
        ("source_url", "missing-source-url", "a source URL (`source_url`)"),
    ):
        present = {"title": title, "published_at": published_at, "source_url": source_url}[key]
        if not present and not any(p.field == key for p in problems):
            problems.append(_problem(path, code, f"no {what}; add one", severity=soft, field=key))

    image = text_field("image")
    line, counted = 1, 0
    for start, value in _hero_comments(text):
        value = value.strip()
        line += text.count("\n", counted, start)  # from the previous comment on: linear
        counted = start
        if _looks_like_image_ref(value):
            image = image or value
        else:
            problems.append(
                _problem(path, "hero-image-placeholder", "unfilled HERO_IMAGE comment; put an "
                         "image URL or path in it, or delete it", severity=soft, field="image",
                         line=line)
            )

    if image and not urlsplit(image).scheme:
        local = (path.parent / Path(image).expanduser())
        if not local.exists():
            problems.append(_problem(
                path, "missing-image", f"hero image {image!r} does not exist (looked for "
                f"{local}); fix the path, or remove `image` to post without one",
                severity=soft, field="image", line=line_of("image")))

    section_at = _section_finder(section_lines)
    for number, line_text in enumerate(lines, start=1):
        for match in PLACEHOLDER.finditer(line_text):
            section = section_at(number)
            problems.append(
                _problem(path, "placeholder", f"placeholder {match.group(0)!r} in "
                         f"{section or 'the text'}; replace it with real text", severity=soft,
                         field=section, line=number)
            )
    for name, content in sections.items():
        if not content.strip():
            problems.append(
                _problem(path, "empty-section", f"section {name!r} is empty; fill it or remove "
                         "the heading", severity=soft, field=name, line=section_lines[name])
            )
    for name in reader.required_sections:
        if not any(k.casefold() == name.casefold() for k in sections):
            problems.append(
                _problem(path, "missing-section", f"required section {name!r} is missing; add "
                         f"`## {name}`", severity=soft, field=name)
            )

    tags = meta.get("tags") or ()
    if isinstance(tags, str):
        tags = [t for t in re.split(r"[,\s]+", tags) if t]
    if not isinstance(tags, list | tuple):
        tags = ()
    brief_id = text_field("id") or path.stem
    if CONTROL.search(brief_id):  # it names ledger rows and shows in every table
        problems.append(
            _problem(path, "id-control-chars", "id (or file name) contains control or "
                     "invisible characters; give the brief a plain `id`", field="id",
                     line=line_of("id"))
        )
    first_section = next(iter(sections.values()), "")
    brief = Brief(
        id=brief_id,
        path=path,
        title=title,
        category=display_field("category"),
        source=display_field("source"),
        source_url=source_url,
        published_at=published_at,
        status=status,
        image=image,
        image_alt=display_field("image_alt") or title,
        sections=sections,
        summary=summarise(first_section),
        tags=tuple(str(t).lstrip("#") for t in tags if str(t).strip()),
        content_hash=digest,
        body=body,
        problems=tuple(problems),
        extra={k: v for k, v in meta.items() if k not in KNOWN_KEYS},
    )
    return brief, problems


KNOWN_KEYS = {
    "id", "title", "category", "source", "source_url", "published_at", "status", "image",
    "image_alt", "tags",
}


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
