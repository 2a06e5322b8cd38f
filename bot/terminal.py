"""What the `briefbot` commands share: exit codes, usage errors, `--now`, JSON and tables
printed safely, and stopping cleanly on a signal."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# What a terminal would act on rather than show: a whole CSI sequence (`ESC [ ... m`), or any
# other C0/C1 control character (ESC, BEL, CR, ...) except newline and tab.
TERMINAL_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class UsageError(Exception):
    pass


def plain(text: Any) -> str:
    """Text from briefs (file names, ids, titles, post text) made safe to print: no terminal
    control sequences, so a brief cannot clear the screen or fake output."""
    return TERMINAL_CONTROL.sub("", str(text))


def parse_now(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(f"--now {value!r}: write ISO 8601, such as 2026-11-28T09:00:00Z") from None


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
           *, whole: Sequence[str] = ()) -> None:
    """A table; the `whole` columns (ids, times, addresses) are never split mid-word."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column in whole)
    for row in rows:  # cells are text, never markup: a title `[/]` or `[bold]` shows as written
        table.add_row(*("" if v is None else escape(plain(v)) for v in row))
    Console(soft_wrap=False, emoji=False).print(table)


@contextmanager
def stopping_on_signals() -> Iterator[threading.Event]:
    """SIGTERM (`systemctl stop`, `timeout`) or Ctrl-C: stop claiming, finish and record the
    message in flight, then report. A second Ctrl-C interrupts at once."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        print(f"briefbot: {signal.Signals(signum).name}: finishing the message in flight, "
              "then stopping", file=sys.stderr, flush=True)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def config_option(parser: argparse.ArgumentParser) -> None:
    """`--config` also after the command (`briefbot run --config x.toml`)."""
    parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="configuration file (TOML)")


def port_number(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port: give 0-65535 (0 picks a "
                                         "free one)")
    return port
