"""`briefbot` command line: thin commands over the functions of the other modules.

Exit codes: 0 all went well, 1 something failed (a brief with errors, a delivery that failed),
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.channels import check_channels
from bot.config import ConfigError, Settings, load_settings
from bot.mail_commands import (
    cmd_archive,
    cmd_archive_export,
    cmd_bounces,
    cmd_bounces_fetch,
    cmd_digest,
    cmd_digest_send,
    cmd_sent_log,
    cmd_sent_log_accept,
    cmd_subscribers,
    cmd_subscribers_add,
    cmd_subscribers_export,
    cmd_subscribers_import,
    cmd_subscribers_list,
    cmd_subscribers_remove,
)
from bot.terminal import (  # noqa: F401  (parse_now is part of the command line's API)
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    config_option,
    parse_now,
    plain,
    port_number,
    print_json,
    stopping_on_signals,
    table,
)
from bot.words import counted

DESCRIPTION = """\
briefbot turns a folder of Markdown briefs into social posts and a weekly digest email,
never sending anything twice.

Start here:
  briefbot check              lint the briefs in the configured folders
  briefbot list               what would be published, and why not
  briefbot run --once --dry-run   show what would go out now, send nothing
  briefbot run --once         publish what is due (default: to ./outbox)
  briefbot status             what was sent, what is queued, what needs attention
"""



# -- commands -------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    paths = [Path(p) for p in args.paths] or settings.brief_folders
    from bot.briefs import BriefReader
    from bot.render.post import link_problem

    scan = BriefReader.from_settings(settings).scan(paths)
    scan.problems.extend(p for b in scan.briefs if (p := link_problem(b)) is not None)
    statuses = settings.config.briefs.published_statuses
    if args.json:
        print_json([p.as_dict() for p in scan.problems])
        return EXIT_FAILED if scan.has_errors else EXIT_OK
    for problem in scan.problems:
        where = problem.path + (f":{problem.line}" if problem.line else "")
        field = f" [{problem.field}]" if problem.field else ""
        print(plain(f"{where}: {problem.severity}: {problem.code}{field}: {problem.message}"))
    for brief in scan.briefs:
        blockers = brief.blockers(statuses)
        verdict = "publishable" if not blockers else "not publishable: " + "; ".join(blockers)
        print(plain(f"{brief.path}: {verdict}"))
    errors = sum(1 for p in scan.problems if p.severity == "error")
    warnings = len(scan.problems) - errors
    print(f"{counted(len(scan.briefs), 'brief')} read, {counted(errors, 'error')}, "
          f"{counted(warnings, 'warning')}", file=sys.stderr)
    return EXIT_FAILED if scan.has_errors else EXIT_OK


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from bot.plan import read_plan

    plan, channel_issues = read_plan(settings, parse_now(args.now))
    statuses = settings.config.briefs.published_statuses
    rows = []
    for brief in plan.briefs:
        blockers = brief.blockers(statuses)
        state, reason = plan.brief_state(brief)
        rows.append({
            "id": brief.id, "title": brief.title, "status": brief.status,
            "published_at": brief.published_at.isoformat() if brief.published_at else None,
            "publishable": not blockers, "why_not": blockers, "state": state, "reason": reason,
            "channels": {s.channel: {"state": s.state, "reason": s.reason}
                         for s in plan.for_brief(brief.id)},
            "path": str(brief.path),
        })
    for issue in channel_issues:
        print(f"briefbot: {issue}", file=sys.stderr)
    if args.json:
        print_json(rows)
        return EXIT_OK
    tz = settings.tz
    table(None, ["id", "title", "published", *plan.channels],
           [(brief.id, brief.title, _local(brief.published_at, tz),
             *(_cell(step.state, step.reason) for step in plan.for_brief(brief.id)))
            for brief in plan.briefs], whole=["id", "published"])
    if not plan.briefs:
        folders = ", ".join(map(str, settings.brief_folders))
        print(f"no briefs in {folders}", file=sys.stderr)
    return EXIT_OK


def _local(moment: datetime | None, tz: Any) -> str:
    return f"{moment.astimezone(tz):%Y-%m-%d %H:%M%z}" if moment else ""


def _cell(state: str, reason: str) -> str:
    """A plan state for a table cell: the state, and for the ones that wait, why."""
    waits = ("queued", "blocked", "held", "unknown", "dead")
    return f"{state}: {reason}" if state in waits else state


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    data = settings.redacted()
    data["_source"] = str(settings.path) if settings.path else "built-in defaults"
    print_json(data)
    return EXIT_OK


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.once and not args.dry_run:  # a dry run is always one pass: no daemon sends
        from bot.schedule import run_daemon

        return run_daemon(settings)
    from bot.publish import publish_due

    with stopping_on_signals() as stop:
        report = publish_due(settings, parse_now(args.now), dry_run=args.dry_run,
                             should_stop=stop.is_set)
    if args.json:
        print_json({"summary": report.summary(), "outcomes": [o.as_dict() for o in
                     report.outcomes], "problems": [p.as_dict() for p in report.problems]})
    else:
        for problem in report.problems:
            print(plain(f"{problem.path}: {problem.code}: {problem.message}"), file=sys.stderr)
        for outcome in report.outcomes:
            if args.dry_run and outcome.message is not None:
                m = outcome.message
                print(plain(f"── {outcome.brief_id} → {outcome.channel} ({m.length}/{m.limit})"))
                print(plain(m.text))
                for note in m.notes:
                    print(plain(f"   note: {note}"))
            else:
                line = f"{outcome.state:>10}  {outcome.brief_id} → {outcome.channel}"
                detail = outcome.url or outcome.detail
                print(plain(f"{line}  {detail}" if detail else line))
        prefix = "dry run: " if args.dry_run else ""
        print(prefix + report.summary())
    interrupted = stop.is_set() and report.count("queued")  # left for the next run
    return EXIT_FAILED if report.failed or interrupted else EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from bot.status import collect_status, print_status

    status = collect_status(settings, parse_now(args.now))
    if args.json:
        print_json(status)
    else:
        print_status(status)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from bot.ledger import open_ledger
    from bot.message import DeliveryKey

    states = [s for s, flag in (("dead", args.dead), ("unknown", args.unknown)) if flag]
    if bool(args.key) == bool(states):
        raise UsageError("give either a delivery KEY or --dead and/or --unknown")
    ledger = open_ledger(settings)
    try:
        if args.key:
            count = ledger.requeue(DeliveryKey.parse(args.key),
                                   states=["dead", "unknown", "failed", "skipped"])
        else:
            count = ledger.requeue(states=states)
    except ValueError as error:
        raise UsageError(str(error)) from None
    finally:
        ledger.close()
    print(f"{counted(count, 'delivery', 'deliveries')} queued to be sent on the next run")
    if count and (args.unknown or args.key):
        print("an unknown outcome may have gone out already: where the channel can ask the "
              "service (Bluesky, Mastodon, X, webhooks with an id), the next run checks first; "
              "an email is sent again with the same Message-ID, so a mail client shows one "
              "copy even if the first one arrived", file=sys.stderr)
    return EXIT_OK if count or not args.key else EXIT_FAILED


def cmd_skip(args: argparse.Namespace, settings: Settings) -> int:
    from bot.ledger import open_ledger
    from bot.message import DeliveryKey

    if "|" in args.key:
        keys = [DeliveryKey.parse(args.key)]
    else:
        campaign = args.key if ":" in args.key else f"brief:{args.key}"
        keys = [DeliveryKey(campaign, name) for name in settings.config.channels]
    ledger = open_ledger(settings)
    try:
        marked = [k for k in keys if ledger.mark_skipped(k, "skipped by an operator",
                                                         replace=True)]
    finally:
        ledger.close()
    for key in marked:
        print(f"skipped {key}")
    if not marked:
        print(f"nothing to skip for {args.key!r} (already sent, or in flight)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from bot.web import serve

    return serve(settings, args.host, args.port)


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    from bot.preview import build_gallery, write_gallery

    gallery = build_gallery(settings, now=parse_now(args.now), include_drafts=args.include_drafts)
    out = Path(args.out) if args.out else settings.state_dir / "preview"
    try:
        index = write_gallery(gallery, out)
    except OSError as error:
        raise UsageError(f"--out {out}: cannot write the gallery there ({error.strerror}); "
                         "give a folder you can write to") from None
    for issue in gallery.channel_issues:
        print(f"briefbot: {issue.text}", file=sys.stderr)
    print(gallery.summary())
    print(index)
    if args.open:
        import webbrowser

        webbrowser.open(index.resolve().as_uri())
    return EXIT_FAILED if gallery.failed else EXIT_OK

def _sent_log_failure(error: BaseException, settings: Settings | None) -> str | None:
    """A sent-log that cannot be used (damaged, empty, unreachable): one line, no traceback."""
    if "bot.ledger" not in sys.modules or settings is None:
        return None
    from bot.ledger import LedgerError, describe_database_error

    if isinstance(error, LedgerError):
        return str(error)
    return describe_database_error(error, settings.database_url)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("briefbot")
    except PackageNotFoundError:
        return "(not installed)"


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="briefbot", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Configuration: --config PATH, else $BRIEFBOT_CONFIG, else ./config.toml. "
               "Secrets come only from environment variables named in the configuration.",
    )
    parser.add_argument("--config", metavar="PATH", help="configuration file (TOML)")
    parser.add_argument("--version", action="version", version=f"briefbot {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Callable[..., int], help_text: str,
                example: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=f"Example:\n  {example}" if example else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(handler=handler)
        config_option(p)
        return p

    p = command("check", cmd_check, "Lint briefs: every problem with file, line, field and fix.",
                "briefbot check seeds/ --json")
    p.add_argument("paths", nargs="*", help="files or folders (default: the configured folders)")
    p.add_argument("--json", action="store_true", help="print a JSON list of problems")

    p = command("list", cmd_list, "One row per brief: status, publish time, publishable or why "
                "not.", "briefbot list --now 2026-12-01T09:00:00Z")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--now", metavar="ISO", help="pretend it is this time (default: now)")

    command("config", cmd_config, "Print the effective configuration, secrets redacted.",
            "briefbot config --config /srv/briefbot/config.toml")

    p = command("run", cmd_run, "Publish what is due. Without --once, run the scheduler "
                "(publish every few minutes, the digest weekly) until stopped.",
                "briefbot run --once --dry-run")
    p.add_argument("--once", action="store_true", help="one publishing run, then exit")
    p.add_argument("--now", metavar="ISO", help="pretend it is this time (with --once)")
    p.add_argument("--dry-run", action="store_true",
                   help="render and show what would be sent; touch no ledger and no channel")
    p.add_argument("--json", action="store_true", help="print the run report as JSON")

    p = command("status", cmd_status, "What was sent, what is queued, and what needs attention "
                "(unknown and dead deliveries first).", "briefbot status --json")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--now", metavar="ISO", help="pretend it is this time")

    p = command("retry", cmd_retry, "Queue dead or unknown deliveries to be sent again.",
                "briefbot retry --dead\n  briefbot retry 'brief:my-brief|outbox'")
    p.add_argument("key", nargs="?", help="a delivery key as `status` prints it")
    p.add_argument("--dead", action="store_true", help="every dead delivery")
    p.add_argument("--unknown", action="store_true", help="every delivery with unknown outcome")

    p = command("skip", cmd_skip, "Mark a brief (all channels) or one delivery as never to be "
                "sent.", "briefbot skip my-brief-id\n  briefbot skip 'brief:my-brief|outbox'")
    p.add_argument("key", help="a brief id, or a delivery key")

    p = command("sent-log", cmd_sent_log, "The sent-log itself: after restoring it from a "
                "backup, accept it as it is.", "briefbot sent-log accept")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    q = actions.add_parser("accept", help="Take a restored or truncated sent-log as it is "
                           "(what was sent after the backup may go out again).",
                           description="Runs refuse to send from a sent-log that holds less "
                           "than it once did. Accept it as it is now.",
                           epilog="Example:\n  briefbot sent-log accept",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    q.set_defaults(handler=cmd_sent_log_accept)
    config_option(q)

    p = command("digest", cmd_digest, "The weekly digest email.",
                "briefbot digest send --dry-run\n  briefbot digest send --period 2026-W48")
    digest = p.add_subparsers(dest="action", metavar="ACTION")
    q = digest.add_parser("send", help="Send a period's digest to every active subscriber "
                          "(resumes where a stopped run left off; never mails anyone twice).",
                          description="Send a period's digest to every active subscriber. A run "
                          "that stopped resumes at the next unsent recipient.",
                          epilog="Examples:\n  briefbot digest send --dry-run\n"
                          "  briefbot digest send --to me@example.org\n"
                          "  briefbot digest send --period 2026-W48",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    q.set_defaults(handler=cmd_digest_send)
    config_option(q)
    q.add_argument("--period", metavar="LABEL", help="an ISO week such as 2026-W48 (default: "
                   "the period that has just closed)")
    q.add_argument("--dry-run", action="store_true",
                   help="render and report counts, subject and size; send nothing, write no "
                   "ledger")
    q.add_argument("--to", metavar="ADDRESS",
                   help="send one test copy to ADDRESS only; the ledger is not touched")
    q.add_argument("--channel", metavar="NAME", help="only this channel (default: every "
                   "enabled channel that sends the digest)")
    q.add_argument("--now", metavar="ISO", help="pretend it is this time")
    q.add_argument("--json", action="store_true", help="print the report as JSON")

    p = command("subscribers", cmd_subscribers, "Manage the digest's mailing list.",
                "briefbot subscribers add ann@example.org --name Ann\n"
                "  briefbot subscribers import list.csv\n"
                "  briefbot subscribers list --state active")
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    def action(name: str, handler: Callable[..., int], help_text: str,
               example: str) -> argparse.ArgumentParser:
        q = actions.add_parser(name, help=help_text, description=help_text,
                               epilog=f"Example:\n  {example}",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        q.set_defaults(handler=handler)
        config_option(q)
        return q

    q = action("add", cmd_subscribers_add, "Add an address (one that left only with --force).",
               "briefbot subscribers add ann@example.org --name Ann")
    q.add_argument("email")
    q.add_argument("--name", help="how to greet them")
    q.add_argument("--pending", action="store_true", help="add as pending (not yet confirmed)")
    q.add_argument("--force", action="store_true", help="re-add an address that unsubscribed "
                   "or bounced (only if they asked you themselves)")
    q = action("remove", cmd_subscribers_remove, "Unsubscribe an address; the row stays, so "
               "no import re-adds it.", "briefbot subscribers remove ann@example.org")
    q.add_argument("email")
    q.add_argument("--purge", action="store_true",
                   help="delete the row instead (a later import may add the address again)")
    q = action("import", cmd_subscribers_import, "Import a CSV (email[,name][,state], header "
               "optional): every row, or none if any row is rejected.",
               "briefbot subscribers import list.csv")
    q.add_argument("file", metavar="FILE.csv")
    q = action("export", cmd_subscribers_export, "Write every subscriber, any state, as CSV.",
               "briefbot subscribers export backup.csv")
    q.add_argument("file", nargs="?", metavar="FILE", help="default: standard output")
    q = action("list", cmd_subscribers_list, "One row per subscriber.",
               "briefbot subscribers list --state active --json")
    q.add_argument("--state", help="only this state: pending, active, unsubscribed or bounced")
    q.add_argument("--json", action="store_true", help="print JSON")

    p = command("bounces", cmd_bounces, "Bounce reports, complaints and unsubscribe mail.",
                "briefbot bounces fetch")
    q = p.add_subparsers(dest="action", metavar="ACTION").add_parser(
        "fetch", help="Read the [bounces] IMAP mailbox: hard bounces mark addresses bounced, "
        "soft ones are counted, complaints and unsubscribe mail unsubscribe; each message is "
        "applied once and moved to bounces.processed_folder, the rest left and listed.",
        description="Read the [bounces] IMAP mailbox and apply each bounce report (RFC 3464 and "
        "non-standard), feedback report (ARF) and unsubscribe request once. Exit 1 when some "
        "message was not understood (it is left in the folder and listed).",
        epilog="Example:\n  BRIEFBOT_BOUNCES_PASSWORD=... briefbot bounces fetch --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.set_defaults(handler=cmd_bounces_fetch)
    config_option(q)
    q.add_argument("--json", action="store_true", help="print the report as JSON")

    p = command("preview", cmd_preview, "Write an HTML gallery of every message that would go "
                "out (posts per channel, the digest email), with problems flagged; sends "
                "nothing.", "briefbot preview --include-drafts --open")
    p.add_argument("--out", metavar="DIR", help="folder for index.html and images/ (default: "
                   "<state dir>/preview)")
    p.add_argument("--now", metavar="ISO", help="pretend it is this time (default: now)")
    p.add_argument("--include-drafts", action="store_true", help="show drafts too, marked")
    p.add_argument("--open", action="store_true", help="open the gallery in a web browser")

    p = command("archive", cmd_archive, "The web archive of digests that went out.",
                "briefbot archive export site/archive")
    archive = p.add_subparsers(dest="action", metavar="ACTION")
    q = archive.add_parser("export", help="Write the archive (index.html, feed.atom, one "
                           "PERIOD/index.html per digest sent) as static files.",
                           description="Write the web archive as static files: DIR/index.html, "
                           "DIR/feed.atom and DIR/PERIOD/index.html for every digest that went "
                           "out, the same pages `briefbot serve` shows under /archive/. Publish "
                           "DIR as email.base_url/archive/ on any web host.",
                           epilog="Example:\n  briefbot archive export site/archive\n"
                           "  rsync -a site/archive/ web:/var/www/news/archive/",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    q.set_defaults(handler=cmd_archive_export)
    config_option(q)
    q.add_argument("dir", metavar="DIR", help="the folder to write (created if missing)")

    p = command("serve", cmd_serve, "Serve the unsubscribe (one-click), subscribe and confirm "
                "pages, and the archive of digests at /archive/.",
                "briefbot serve --host 127.0.0.1 --port 8025")
    p.add_argument("--host", help="address to listen on (default: web.host)")
    p.add_argument("--port", type=port_number, help="port (default: web.port; 0 picks a free one)")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    settings: Settings | None = None
    try:
        settings = load_settings(args.config)
        check_channels(settings)
        return args.handler(args, settings)
    except UsageError as error:
        print(f"briefbot: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as error:
        print(f"briefbot: configuration error:\n{error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `briefbot config | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as error:
        message = _sent_log_failure(error, settings)
        if message is None:
            raise
        print(f"briefbot: {message}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
