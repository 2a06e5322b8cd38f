"""The mail commands of `briefbot`: the digest, the subscriber list, the web archive, bounce
reports and the sent-log's high-water mark. Thin, like the rest of the command line."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.terminal import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    parse_now,
    print_json,
    stopping_on_signals,
    table,
)
from bot.words import counted


def cmd_sent_log(args: argparse.Namespace, settings: Settings) -> int:
    raise UsageError("sent-log: give an action: accept (briefbot sent-log --help)")


def cmd_sent_log_accept(args: argparse.Namespace, settings: Settings) -> int:
    from bot import watermark
    from bot.ledger import open_ledger

    ledger = open_ledger(settings)
    try:
        old, new = watermark.accept(settings, ledger)
    finally:
        ledger.close()
    if new < old:
        print(f"accepted the sent-log as it is: deliveries after #{new} (up to #{old}) are "
              "forgotten, so briefs and digests sent since may go out again on the next run")
    else:
        print(f"the sent-log is up to date (#{new}); nothing to accept")
    return EXIT_OK


def cmd_digest(args: argparse.Namespace, settings: Settings) -> int:
    raise UsageError("digest: give an action: send (briefbot digest --help)")


def cmd_digest_send(args: argparse.Namespace, settings: Settings) -> int:
    from bot.digest import send_digest
    from bot.timing import parse_period, period_for

    now = parse_now(args.now)
    if args.dry_run and args.to:
        raise UsageError("--dry-run sends nothing and --to sends one copy: give one of them")
    if args.period:
        try:
            period = parse_period(args.period, settings.tz)
        except ValueError as error:
            raise UsageError(f"--period: {error}") from None
    else:
        period = period_for(now, settings.tz, settings.config.email.period_days)
    with stopping_on_signals() as stop:
        report = send_digest(settings, period, now=now, dry_run=args.dry_run, to=args.to,
                             channel=args.channel, progress=not args.json,
                             should_stop=stop.is_set)
    if stop.is_set() and not report.stopped:
        report.stopped = (f"interrupted; {counted(report.pending, 'recipient')} left for the "
                          "next run, which resumes where this one stopped")
    if args.json:
        print_json(report.as_dict())
        return EXIT_FAILED if report.failed else EXIT_OK
    for error in report.errors:
        print(f"{error.get('state', 'failed'):>8}  {error['recipient']}: {error['error']}",
              file=sys.stderr)
    if report.subject and (args.dry_run or args.to):
        print(f"subject: {report.subject}")
        print(f"briefs:  {len(report.briefs)} ({', '.join(report.briefs)})")
        print(f"size:    {report.size:,} bytes per message ({report.html_bytes:,} bytes of "
              f"HTML); channels: {', '.join(report.channels)}")
    print(report.summary())
    return EXIT_FAILED if report.failed else EXIT_OK



@contextmanager
def _subscriber_list(settings: Settings, *, readonly: bool = False) -> Iterator[Any]:
    from bot.ledger import Ledger
    from bot.subscribers import Subscribers

    ledger = Ledger(settings.database_url, lease=settings.config.publish.lease, readonly=readonly)
    try:
        yield Subscribers(ledger)
    finally:
        ledger.close()


def cmd_subscribers(args: argparse.Namespace, settings: Settings) -> int:
    raise UsageError("subscribers: give an action: add, remove, import, export or list "
                     "(briefbot subscribers --help)")


def cmd_subscribers_add(args: argparse.Namespace, settings: Settings) -> int:
    with _subscriber_list(settings) as subscribers:
        try:
            subscriber = subscribers.add(args.email, args.name, force=args.force,
                                         state="pending" if args.pending else "active")
        except ValueError as error:
            raise UsageError(str(error)) from None
    print(f"{subscriber.address}: {subscriber.state}")
    return EXIT_OK


def cmd_subscribers_remove(args: argparse.Namespace, settings: Settings) -> int:
    with _subscriber_list(settings) as subscribers:
        known = subscribers.remove(args.email, purge=args.purge)
    if not known:
        print(f"{args.email.strip()}: not on the list; nothing changed", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.email.strip()}: {'deleted' if args.purge else 'unsubscribed'}")
    return EXIT_OK


def cmd_subscribers_import(args: argparse.Namespace, settings: Settings) -> int:
    from bot.subscriber_csv import import_csv

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; give a CSV with columns email[,name][,state]")
    with _subscriber_list(settings) as subscribers:
        report = import_csv(subscribers, path)
    for row in report.rejected:
        print(f"{path}:{row.line}: {row.reason}", file=sys.stderr)
    print(report.summary(), file=sys.stderr if report.rejected else sys.stdout)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_subscribers_export(args: argparse.Namespace, settings: Settings) -> int:
    from bot.subscriber_csv import export_csv

    with _subscriber_list(settings, readonly=True) as subscribers:
        if not args.file or args.file == "-":
            export_csv(subscribers, sys.stdout)
            return EXIT_OK
        with open(args.file, "w", encoding="utf-8", newline="") as out:
            rows = export_csv(subscribers, out)
    print(f"{counted(rows, 'subscriber')} written to {args.file}", file=sys.stderr)
    return EXIT_OK


def cmd_subscribers_list(args: argparse.Namespace, settings: Settings) -> int:
    with _subscriber_list(settings, readonly=True) as subscribers:
        try:
            found = subscribers.iter_all(args.state)
        except ValueError as error:
            raise UsageError(f"--state: {error}") from None
        if args.json:
            print_json([s.as_dict() for s in found])
            return EXIT_OK
        rows = [(s.address, s.name, s.state, s.created_at.isoformat()[:16],
                 s.updated_at.isoformat()[:16], s.reason) for s in found]
    if any(r[5] for r in rows):  # why addresses left (a bounce's status, a complaint), and when
        table(None, ["email", "state", "changed", "reason"],
               [(r[0], r[2], r[4], r[5]) for r in rows], whole=["email", "changed"])
    else:
        table(None, ["email", "name", "state", "added", "changed"], [r[:5] for r in rows],
               whole=["email", "added", "changed"])
    counts = ", ".join(f"{n} {state}" for state, n in Counter(r[2] for r in rows).items())
    print(counted(len(rows), "subscriber") + (f": {counts}" if counts else ""), file=sys.stderr)
    return EXIT_OK


def cmd_archive(args: argparse.Namespace, settings: Settings) -> int:
    raise UsageError("archive: give an action: export DIR (briefbot archive --help)")


def cmd_archive_export(args: argparse.Namespace, settings: Settings) -> int:
    from bot.archive import Archive
    from bot.ledger import open_ledger

    ledger = open_ledger(settings, readonly=True)
    try:
        archive = Archive(settings, ledger)
    finally:
        ledger.close()
    folder = Path(args.dir)
    try:
        written = archive.export(folder)
    except OSError as error:
        raise UsageError(f"{folder}: cannot write the archive there ({error.strerror}); give "
                         "a folder you can write to") from None
    print(f"{counted(len(archive.issues), 'digest')} and {counted(len(written), 'file')} "
          f"written to {folder} (publish it as {settings.config.email.base_url.rstrip('/')}"
          "/archive/)")
    return EXIT_OK


def cmd_bounces(args: argparse.Namespace, settings: Settings) -> int:
    raise UsageError("bounces: give an action: fetch (briefbot bounces --help)")


def cmd_bounces_fetch(args: argparse.Namespace, settings: Settings) -> int:
    from bot.bounces import MailboxError, fetch

    try:
        report = fetch(settings)
    except MailboxError as error:
        print(f"briefbot: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_json(report.as_dict())
    else:
        for line in report.lines():
            print(line)
        print(report.summary(), file=sys.stderr if report.left else sys.stdout)
    return EXIT_OK if report.ok else EXIT_FAILED
