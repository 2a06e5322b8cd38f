"""A digest to a million subscribers through providers' batch endpoints, against bare requests.

Two loopback responders, in a process of their own, answer like the providers' batch endpoints:
Mailgun's `POST /v3/<domain>/messages` (a template plus `recipient-variables`, 1,000 recipients a
call, one id back) and Postmark's `POST /email/batch` (a full message per recipient, 500 a
call, one result per message back). Through each:

(a) briefbot end to end: `bot.mailing.mail` with the sent-log on durable SQLite (WAL,
    synchronous=FULL) and on a throwaway PostgreSQL (tests/servers/pg.py: fsync off, as every
    PostgreSQL figure in this project): subscribers streamed from the database, each batch's
    rows and states read, the batch claimed in one statement, personalised (the unsubscribe
    token, the Message-ID; for Postmark each recipient's bodies by byte swap), sent, and its
    receipts recorded in one statement; `connections` batches in flight;
(b) baseline: the same adapter making the same calls for the same recipients (tokens and
    Message-IDs computed the same way), from a list in memory, with no sent-log and no
    subscriber database, as many threads.

The Mailgun side is the real adapter (`bot/channels/mailgun.py`). The Postmark side is a
minimal full-message channel here in the bench (the real Postmark adapter is another branch's
work), so its figure measures the batch path with a full body per recipient, not that adapter.
Peak memory is each end-to-end child's own (VmHWM). Filling the subscribers is a bulk insert.

Usage: python bench/providers.py [--subscribers N] [--no-postgres] [--only mailgun|postmark]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.digest import NOW, PERIOD, peak_rss_kb, write_briefs  # noqa: E402
from bot.channels.batch import BatchChannel, BatchItem  # noqa: E402
from bot.channels.options import BatchOptions  # noqa: E402

DOMAIN = "mg.example.org"
API_KEY = "key-bench-0123456789abcdef"
CONNECTIONS = {"mailgun": 4, "postmark": 2}  # Postmark's bodies are 500 whole messages a call
_TO = re.compile(rb'"To":"([^"]*)"')


# -- the responders ---------------------------------------------------------------------------


def serve(port_file: str) -> None:
    """Answer like Mailgun's messages endpoint and Postmark's batch endpoint, counting."""
    counts = {"mailgun": 0, "postmark": 0}
    ids = iter(range(1, 1 << 62))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            with lock:
                self._answer(200, counts)

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == f"/v3/{DOMAIN}/messages":
                recipients = body.count(b'name="to"')
                with lock:
                    counts["mailgun"] += recipients
                    number = next(ids)
                self._answer(200, {"id": f"<20261130.{number}@{DOMAIN}>",
                                   "message": "Queued. Thank you."})
            elif self.path == "/email/batch":
                now = datetime.now(UTC).isoformat()
                answers = [{"ErrorCode": 0, "Message": "OK", "MessageID": str(uuid.uuid4()),
                            "SubmittedAt": now, "To": to.decode()}
                           for to in _TO.findall(body)]
                with lock:
                    counts["postmark"] += len(answers)
                self._answer(200, answers)
            else:
                self._answer(404, {"message": "not found"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


@contextmanager
def responder(root: Path) -> Iterator[str]:
    port_file = root / "port"
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
    try:
        for _ in range(200):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text()}"
    finally:
        process.kill()
        process.wait(timeout=10)


def received(url: str) -> dict[str, int]:
    import requests

    return requests.get(url + "/count", timeout=10).json()


# -- a full-message batch channel, Postmark-shaped ----------------------------------------------


class BenchPostmarkOptions(BatchOptions):
    url: str


class PostmarkShaped(BatchChannel):
    """`POST /email/batch`, 500 messages a call, each with its own bodies (byte swap)."""

    type = "postmark-shaped"
    Options = BenchPostmarkOptions
    max_batch = 500

    def __init__(self, name, config, settings):
        from bot.channels.http import HttpClient

        super().__init__(name, config, settings)
        self.url = self.options["url"].rstrip("/") + "/email/batch"
        self.http = HttpClient("Postmark-shaped", timeout=60)

    def send_batch(self, prepared, items: Sequence[BatchItem]) -> list:
        """The body is built as bytes around the unsubscribe URL, JSON-escaped once per call
        (a byte swap, as `PreparedEmail.personalise` does for MIME)."""
        from bot.channels.base import PermanentError, Receipt

        def pieces(text: str) -> list[bytes]:
            return [json.dumps(part)[1:-1].encode() for part in text.split(prepared.token)]

        def quoted(text: str) -> bytes:
            return json.dumps(text).encode()

        html, text = pieces(prepared.html), pieces(prepared.text)
        head = (b'{"From":' + quoted(prepared.headers["From"]) + b',"Subject":'
                + quoted(prepared.subject) + b',"MessageStream":"broadcast","To":')
        messages = []
        for item in items:
            url = item.unsubscribe_url
            inner = json.dumps(url)[1:-1].encode()
            inner_html = json.dumps(url.replace("&", "&amp;"))[1:-1].encode()
            messages.append(
                head + quoted(item.address) + b',"HtmlBody":"' + inner_html.join(html)
                + b'","TextBody":"' + inner.join(text) + b'","Headers":[{"Name":"Message-ID",'
                b'"Value":' + quoted(item.message_id) + b'},{"Name":"List-Unsubscribe",'
                b'"Value":"<' + inner + b'>"},{"Name":"List-Unsubscribe-Post","Value":'
                b'"List-Unsubscribe=One-Click"}]}')
        body = b"[" + b",".join(messages) + b"]"
        del messages
        response = self.http.call("POST", self.url, doing="sending a batch", data=body,
                                  headers={"Content-Type": "application/json"})
        return [Receipt(remote_id=a["MessageID"]) if a.get("ErrorCode") == 0
                else PermanentError(a.get("Message", "refused")) for a in response.json()]


# -- the project ------------------------------------------------------------------------------


def write_config(root: Path, api: str) -> Path:
    config = root / "config.toml"
    config.write_text(
        'timezone = "UTC"\n[briefs]\nfolders = ["briefs"]\n[state]\ndir = "state"\n'
        '[email]\nfrom_address = "Weekly <digest@example.org>"\n'
        'base_url = "https://news.example.org"\n'
        f'[channels.mailgun]\ntype = "mailgun"\ndomain = "{DOMAIN}"\napi_base = "{api}"\n'
        f'api_key_env = "BENCH_MAILGUN_KEY"\nconnections = {CONNECTIONS["mailgun"]}\n'
        f'[channels.postmark]\ntype = "postmark-shaped"\nenabled = false\nurl = "{api}"\n'
        f'connections = {CONNECTIONS["postmark"]}\n', encoding="utf-8")
    return config


def address(n: int) -> str:
    return f"reader{n:07d}@example.net"


def fill_subscribers(url: str, count: int) -> float:
    """`count` active subscribers in one bulk insert; returns the seconds it took."""
    from bot.ledger import Ledger
    from bot.subscribers import Subscribers

    ledger = Ledger(url)
    Subscribers(ledger)  # creates the table
    ledger.close()
    now = datetime.now(UTC)
    started = time.perf_counter()
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1].split("?")[0], isolation_level=None)
        stamp = now.replace(tzinfo=None).isoformat(" ", "microseconds")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO subscribers (email, name, state, created_at, updated_at, "
            "confirmed_at, hard_bounces, soft_bounces) VALUES (?, ?, 'active', ?, ?, ?, 0, 0)",
            ((address(n), f"Reader {n}" if n % 3 == 0 else None, stamp, stamp, stamp)
             for n in range(count)))
        conn.execute("COMMIT")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            with conn.cursor().copy(
                    "COPY subscribers (email, name, state, created_at, updated_at, "
                    "confirmed_at, hard_bounces, soft_bounces) FROM STDIN") as copy:
                for n in range(count):
                    copy.write_row((address(n), f"Reader {n}" if n % 3 == 0 else None,
                                    "active", now, now, now, 0, 0))
            conn.execute("ANALYZE subscribers")
    return time.perf_counter() - started


# -- the two sides, each in a fresh process ------------------------------------------------------


def open_channel(settings, kind: str):
    from bot.channels import open_channel as open_configured

    config = settings.config.channels[kind]
    if kind == "postmark":
        return PostmarkShaped(kind, config, settings)
    return open_configured(kind, config, settings)


def prepared_digest(settings):
    from bot.digest import period_briefs
    from bot.render.email import prepare_digest
    from bot.timing import parse_period

    period = parse_period(PERIOD)
    return prepare_digest(settings, period_briefs(settings, period, NOW), period_label=PERIOD,
                          now=NOW)


def end_to_end_child(config: str, kind: str) -> None:
    from bot.config import load_settings
    from bot.mailing import DigestReport, mail

    settings = load_settings(config)
    channel = open_channel(settings, kind)
    prepared = prepared_digest(settings)
    report = DigestReport(period=None, now=NOW, briefs=["bench"])
    started = time.perf_counter()
    mail(settings, [channel], f"digest:{PERIOD}", prepared, report, progress=False)
    seconds = time.perf_counter() - started
    print(json.dumps({"sent": report.counts["sent"], "rate": report.counts["sent"] / seconds,
                      "failed": report.failed, "counts": dict(report.counts),
                      "peak_kb": peak_rss_kb()}))


def baseline_child(config: str, kind: str, count: int) -> None:
    """The same calls for the same recipients, from memory, without any database."""
    from bot import tokens
    from bot.config import load_settings
    from bot.mailing import domain
    from bot.message import DeliveryKey, Receipt
    from bot.render.email import message_id_for
    from bot.render.mime import Recipient, format_recipient

    settings = load_settings(config)
    channel = open_channel(settings, kind)
    prepared = prepared_digest(settings)
    size, sent, lock = channel.batch_size, [0], threading.Lock()
    chunks = iter(range(0, count, size))
    sender = domain(settings)

    def work() -> None:
        while True:
            with lock:
                start = next(chunks, None)
            if start is None:
                return
            items = []
            for n in range(start, min(count, start + size)):
                email = address(n)
                key = DeliveryKey(f"digest:{PERIOD}", kind, email)
                name = f"Reader {n}" if n % 3 == 0 else None
                format_recipient(Recipient(email, name))
                items.append(BatchItem(
                    key=key, address=email, name=name,
                    message_id=message_id_for(key, sender),
                    unsubscribe_url=tokens.unsubscribe_url(settings, email),
                    unsubscribe_mailto=tokens.unsubscribe_mailto(settings, email)))
            answers = channel.send_batch(prepared, items)
            with lock:
                sent[0] += sum(isinstance(a, Receipt) for a in answers)

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(channel.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"sent": sent[0], "rate": sent[0] / (time.perf_counter() - started),
                      "peak_kb": peak_rss_kb()}))


def child(args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         env=env, timeout=7200)
    if out.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--only", choices=["mailgun", "postmark"])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--end-to-end", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.end_to_end:
        return end_to_end_child(*args.end_to_end)
    if args.baseline:
        return baseline_child(args.baseline[0], args.baseline[1], int(args.baseline[2]))

    from tests.servers import pg

    count = args.subscribers
    kinds = [args.only] if args.only else ["mailgun", "postmark"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIEFBOT_")}
    env.update(BENCH_MAILGUN_KEY=API_KEY, BRIEFBOT_TOKEN_SECRET="bench-secret-" + "x" * 32,
               PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory(prefix="briefbot-providers-") as folder:
        root = Path(folder)
        write_briefs(root / "briefs", 7)
        (root / "state").mkdir()
        template = root / "subscribers.sqlite3"
        filled = fill_subscribers(f"sqlite:///{template}", count)
        print(f"{count:,} subscribers filled into SQLite in {filled:.1f} s "
              f"({count / filled:,.0f} rows/s); batches in flight: {CONNECTIONS}; "
              f"{os.cpu_count()} CPUs")
        with responder(root) as api:
            config = str(write_config(root, api))
            databases = [("SQLite (WAL, synchronous=FULL)", None)]
            pg_server = None
            if not args.no_postgres and pg.available():
                pg_server = pg.server()
                databases.append(("PostgreSQL", pg_server.__enter__()))
            try:
                for kind in kinds:
                    base = child(["--baseline", config, kind, str(count)], env)
                    print(f"\n{kind}: (b) baseline, bare batch calls, no sent-log "
                          f"{base['rate']:9,.0f} msg/s")
                    for title, server in databases:
                        if server is None:
                            copy = root / f"ledger-{kind}.sqlite3"
                            shutil.copy(template, copy)
                            url = f"sqlite:///{copy}?synchronous=full"
                        else:
                            url = pg.fresh_database(server)
                            filled = fill_subscribers(url, count)
                        before = received(api)[kind]
                        got = child(["--end-to-end", config, kind],
                                    {**env, "BRIEFBOT_DATABASE_URL": url})
                        arrived = received(api)[kind] - before
                        assert got["sent"] == count == arrived and not got["failed"], got
                        print(f"  (a) {title:31} {got['rate']:9,.0f} msg/s   "
                              f"(a)/(b) {got['rate'] / base['rate']:5.0%}   "
                              f"peak RSS {got['peak_kb'] / 1024:5.0f} MB")
                        if server is not None:
                            print(f"      (PostgreSQL fill: {filled:.1f} s)")
            finally:
                if pg_server is not None:
                    pg_server.__exit__(None, None, None)


if __name__ == "__main__":
    main()
