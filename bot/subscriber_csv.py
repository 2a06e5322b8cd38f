"""The list as a CSV file: `subscribers import` and `subscribers export`.

An import is all or nothing: every row is checked first, and one bad row (named by its line)
imports none. An export is also the do-not-mail list, so it holds every state; its cells are
written so that a spreadsheet shows them as text, never runs them as formulas.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bot.addresses import address_key, normalise_email
from bot.subscribers import Entry, Subscribers, check_state

IMPORT_COLUMNS = ("email", "name", "state")
EXPORT_COLUMNS = (*IMPORT_COLUMNS, "created_at", "confirmed_at", "unsubscribed_at", "bounced_at",
                  "reason")


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    """What an import did, or, when any row was rejected, why it did nothing."""

    path: str
    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_out: list[str] = field(default_factory=list)  # left the list before: not re-added
    rejected: list[RejectedRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        if self.rejected:
            return (f"{self.path}: {len(self.rejected)} of {self.rows} rows rejected; "
                    "nothing was imported. Fix the rows above and import the file again")
        return (f"{self.path}: {self.rows} rows: {self.added} added, {self.updated} updated, "
                f"{self.unchanged} unchanged ({len(self.kept_out)} had unsubscribed or bounced "
                "and were not re-added)")

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "added": self.added,
                "updated": self.updated, "unchanged": self.unchanged,
                "kept_out": self.kept_out,
                "rejected": [{"line": r.line, "reason": r.reason} for r in self.rejected]}


def export_csv(subscribers: Subscribers, out: TextIO) -> int:
    """Every subscriber, any state (the unsubscribed are the do-not-mail list); returns rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    rows = 0
    for sub in subscribers.iter_all():
        data = sub.as_dict()
        writer.writerow([_cell(data[c]) for c in EXPORT_COLUMNS])
        rows += 1
    return rows


def import_csv(subscribers: Subscribers, path: Path) -> ImportReport:
    """Import `email[,name][,state]` rows: all of them, or, if any is rejected, none.

    A header row naming the columns is optional. Addresses that unsubscribed or bounced
    are never re-added, and an import never demotes an active address to pending.
    """
    path = Path(path)
    report = ImportReport(path=str(path))
    entries = _read_rows(path, report)
    if report.rejected:
        return report
    merged = subscribers.merge(entries)
    report.added, report.updated, report.unchanged = (merged.added, merged.updated,
                                                      merged.unchanged)
    report.kept_out = merged.kept_out
    return report


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: a leading `'` before what it would run, which
    an import takes off again."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def _uncell(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:2] in _FORMULA_START else text


def _read_rows(path: Path, report: ImportReport) -> list[Entry]:
    """Parse and validate every row; problems go to `report.rejected` with their line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        report.rejected.append(RejectedRow(0, f"{path} is not UTF-8 text ({error.reason} at "
                                              f"byte {error.start}); save it as UTF-8 CSV"))
        return []
    reader = csv.reader(io.StringIO(text, newline=""))
    columns = list(IMPORT_COLUMNS)
    rows: list[Entry] = []
    seen: dict[str, int] = {}
    first, end_of_previous = True, 0
    for cells in reader:
        line, end_of_previous = end_of_previous + 1, reader.line_num
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue
        if first and cells[0].lower() == "email":
            first = False
            unknown = [c for c in cells if c.lower() not in EXPORT_COLUMNS]
            if unknown:
                report.rejected.append(RejectedRow(line, f"unknown column {unknown[0]!r}; "
                                                         "the columns are email, name, state"))
                return []
            columns = [c.lower() for c in cells]
            continue
        first = False
        report.rows += 1
        if len(cells) > len(columns):
            report.rejected.append(RejectedRow(
                line, f"{len(cells)} values, expected at most {len(columns)} "
                      f"({', '.join(columns)}); quote names that contain commas"))
            continue
        data = dict(zip(columns, cells, strict=False))
        try:
            display = normalise_email(data.get("email", ""))
            state = check_state(data.get("state") or "active")
        except ValueError as error:
            report.rejected.append(RejectedRow(line, str(error)))
            continue
        email = address_key(display)
        if email in seen:
            report.rejected.append(RejectedRow(
                line, f"{display} appears twice (first on line {seen[email]}); keep one row"))
            continue
        seen[email] = line
        rows.append(Entry(email, display, _uncell(data.get("name") or "") or None, state))
    return rows
