"""Briefs: Markdown files with YAML front matter, read into frozen `Brief` objects.

Files in the wild carry several front-matter blocks with camelCase and snake_case spellings of
the same keys, draft placeholders and unfilled hero-image comments. The reader merges the
blocks, normalises the keys and reports every oddity as a `Problem` instead of raising, so one
bad file never hides the others.

This module owns the `Brief`, the `BriefReader` (its cache and scans), the listing of brief
files and what each field means; reading the text itself (front matter, dates, sections,
summaries) is `bot.brief_text`'s, whose public names are re-exported here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import stat as stat_mode
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bot.brief_text import (  # noqa: F401  (re-exported: callers import these from bot.briefs)
    ALIASES,
    CONTROL,
    HERO_HEAD,
    IMAGE_SUFFIX,
    LINK,
    LIST_MARK,
    MAX_YEAR,
    MIN_YEAR,
    PLACEHOLDER,
    RUN_ON,
    SENTENCE_END,
    SUMMARY_LIMIT,
    YAML_LOADER,
    Problem,
    _hero_comments,
    _is_http_url,
    _looks_like_image_ref,
    _problem,
    _read_front_matter,
    _section_finder,
    _sections,
    _show,
    clean_text,
    normalise_key,
    summarise,
    to_datetime,
)

if TYPE_CHECKING:
    from bot.config import Settings

BRIEF_SUFFIXES = {".md", ".markdown", ".txt"}


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
