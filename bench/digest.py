"""Digest sending speed: briefbot end to end, against a naive sender and a raw ceiling.

All three send the same ~25 KB digest to the same SMTP server on loopback, in the same run:

(a) briefbot: `send_digest` with the ledger (SQLite WAL) and personalisation: per recipient an
    `is_active` check, a claim, a byte swap, the SMTP transaction and a record;
(b) naive: an `EmailMessage` built per recipient and one SMTP connection per message;
(c) ceiling: one pre-built message pushed over one persistent `smtplib` connection.

Two servers: aiosmtpd (parses every message, as the tests use it) and a minimal asyncio sink
that only answers, so the client's own cost shows. Each server runs in its own process. Then
TLS handshakes per 100 messages (STARTTLS on aiosmtpd) and the peak memory of a send to 100,000
subscribers (in a fresh process, `ru_maxrss`).

Usage: python bench/digest.py [--quick] [--subscribers N] [--memory-subscribers N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PERIOD = "2026-W48"
NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SENDER = "digest@example.org"
CATEGORIES = ("Energy", "Transport", "Research", "Health")
SENTENCE = ("The pilot, which started on Monday, is the largest of its kind in the region and "
            "will run until the end of next year, when the operator decides whether to expand it.")


# -- servers, each in its own process ---------------------------------------------------------


async def _sink(port: int, pipelining: bool) -> None:
    """Answers 250 to everything and reads DATA up to the final dot, parsing nothing."""
    ehlo = b"250-sink\r\n250-8BITMIME\r\n" + (b"250 PIPELINING\r\n" if pipelining
                                                 else b"250 HELP\r\n")

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await reader.readuntil(b"\r\n.\r\n")
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb in (b"EHLO", b"HELO"):
                writer.write(ehlo)
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port, limit=1 << 22)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def _aiosmtpd(port: int, tls_folder: str | None) -> None:
    from aiosmtpd.controller import Controller

    class Count:
        async def handle_DATA(self, server, session, envelope):
            return "250 2.0.0 queued"

    kwargs = {}
    if tls_folder:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Path(tls_folder) / "server.pem", Path(tls_folder) / "server.key")
        kwargs.update(tls_context=context, require_starttls=True)
    controller = Controller(Count(), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()  # until the bench closes our stdin
    finally:
        controller.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(kind: str, tls_folder: Path | None = None) -> Iterator[int]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    if tls_folder:
        command += ["--tls", str(tls_folder)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if process.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {kind} server did not start")
        yield port
    finally:
        process.kill()
        process.wait(timeout=10)


# -- the project --------------------------------------------------------------------------


def write_briefs(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        day = 23 + n % 7
        (folder / f"brief-{n:02d}.md").write_text(
            f"---\ntitle: 'Brief {n}: a city utility starts a 40 MWh grid storage pilot'\n"
            f"status: published\npublished_at: 2026-11-{day}T{8 + n % 10:02d}:00:00Z\n"
            f"source: Example Wire\nsource_url: https://example.com/news/{n}\n"
            f"category: {CATEGORIES[n % len(CATEGORIES)]}\n"
            f"image: https://images.example.com/hero/{n}.jpg\nimage_alt: A picture\n---\n\n"
            f"## WHAT HAPPENED\n{SENTENCE} {SENTENCE}\n\n## WHY IT MATTERS\n{SENTENCE}\n",
            encoding="utf-8",
        )


def write_config(root: Path, state: str, port: int, *, connections: int = 1,
                 security: str = "none", ca_file: Path | None = None) -> Path:
    config = root / "config.toml"
    ca = f'ca_file = "{ca_file}"\n' if ca_file else ""
    config.write_text(
        f'timezone = "UTC"\n[briefs]\nfolders = ["briefs"]\n[state]\ndir = "{state}"\n'
        f'[email]\nfrom_address = "Weekly <{SENDER}>"\n'
        f'base_url = "https://news.example.org"\n'
        f'[channels.email]\ntype = "smtp"\nhost = "127.0.0.1"\nport = {port}\n'
        f'security = "{security}"\nconnections = {connections}\n{ca}',
        encoding="utf-8",
    )
    return config


def make_subscribers(root: Path, count: int) -> Path:
    """A ledger database holding `count` active subscribers, to copy per run."""
    from bot.config import load_settings
    from bot.ledger import Ledger
    from bot.subscriber_csv import import_csv
    from bot.subscribers import Subscribers

    folder = root / f"subscribers-{count}"
    config = write_config(root, folder.name, 1)
    csv_path = root / f"subscribers-{count}.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name"])
        for n in range(count):
            writer.writerow([f"reader{n:06d}@example.net", f"Reader {n}" if n % 2 else ""])
    ledger = Ledger(load_settings(config).database_url)
    try:
        report = import_csv(Subscribers(ledger), csv_path)
        assert report.added == count, report.summary()
    finally:
        ledger.close()
    return folder / "ledger.sqlite3"


def fresh_state(root: Path, database: Path) -> str:
    """A new state folder with a copy of the subscriber database and no deliveries."""
    name = f"state-{time.monotonic_ns()}"
    (root / name).mkdir()
    shutil.copy(database, root / name / "ledger.sqlite3")
    token = database.parent / "token-secret"
    if token.exists():
        shutil.copy(token, root / name / "token-secret")
    return name


# -- the three senders --------------------------------------------------------------------


def briefbot(root: Path, database: Path, port: int, *, connections: int = 1,
             security: str = "none", ca_file: Path | None = None) -> dict:
    from bot.config import load_settings
    from bot.digest import send_digest

    config = write_config(root, fresh_state(root, database), port, connections=connections,
                          security=security, ca_file=ca_file)
    report = send_digest(load_settings(config), PERIOD, now=NOW, progress=False)
    assert not report.failed, report.summary()
    return {"rate": report.rate, "sent": report.counts["sent"], "size": report.size,
            "stats": report.stats}


def sample_message(root: Path, database: Path) -> tuple[bytes, object]:
    from bot.config import load_settings
    from bot.digest import period_briefs
    from bot.ledger import DeliveryKey
    from bot.mailing import personalise
    from bot.render.email import Recipient, prepare_digest
    from bot.timing import parse_period

    settings = load_settings(write_config(root, fresh_state(root, database), 1))
    period = parse_period(PERIOD)
    prepared = prepare_digest(settings, period_briefs(settings, period, NOW),
                              period_label=PERIOD, now=NOW)
    key = DeliveryKey(f"digest:{PERIOD}", "email", "reader000001@example.net")
    return personalise(settings, prepared, key, Recipient(key.recipient), NOW)[1], prepared


def ceiling(port: int, data: bytes, count: int) -> float:
    smtp = smtplib.SMTP("127.0.0.1", port)
    smtp.ehlo()
    start = time.perf_counter()
    for n in range(count):
        smtp.sendmail(SENDER, [f"reader{n:06d}@example.net"], data)
    elapsed = time.perf_counter() - start
    smtp.quit()
    return count / elapsed


def naive(port: int, prepared, count: int) -> float:
    start = time.perf_counter()
    for n in range(count):
        to = f"reader{n:06d}@example.net"
        url = f"https://news.example.org/unsubscribe/{n}"
        message = EmailMessage()
        message["Subject"] = prepared.subject
        message["From"] = f"Weekly <{SENDER}>"
        message["To"] = to
        message["Date"] = format_datetime(NOW)
        message["Message-ID"] = make_msgid(domain="example.org")
        message["List-Unsubscribe"] = f"<{url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(prepared.text_for(url))
        message.add_alternative(prepared.html_for(url), subtype="html")
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.send_message(message)
    return count / (time.perf_counter() - start)


# -- memory ---------------------------------------------------------------------------------


def peak_rss_kb() -> int:
    """This process's peak resident memory. Linux's VmHWM belongs to the process image alone;
    `ru_maxrss` would carry over the parent's peak across fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(config: str) -> None:
    """Runs in a fresh process: send the digest, print the peak resident memory."""
    from bot.config import load_settings
    from bot.digest import send_digest

    settings = load_settings(config)
    before = peak_rss_kb()
    report = send_digest(settings, PERIOD, now=NOW, progress=False)
    peak = peak_rss_kb()
    print(json.dumps({"before_kb": before, "peak_kb": peak, "sent": report.counts["sent"],
                      "rate": report.rate, "failed": report.failed}))


def memory(root: Path, count: int, connections: int) -> dict:
    database = make_subscribers(root, count)
    with server("sink-pipelining") as port:
        config = write_config(root, fresh_state(root, database), port, connections=connections)
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(config)],
                             capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the run --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer subscribers, for a smoke run")
    parser.add_argument("--subscribers", type=int, help="default 10000 (--quick: 2000)")
    parser.add_argument("--memory-subscribers", type=int,
                        help="default 100000 (--quick: 20000)")
    parser.add_argument("--briefs", type=int, default=7,
                        help="briefs in the digest (7 make a ~25 KB message)")
    parser.add_argument("--reps", type=int, default=3,
                        help="repetitions of each measurement, interleaved; medians are shown")
    parser.add_argument("--serve", choices=["sink", "sink-pipelining", "aiosmtpd"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tls", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve in ("sink", "sink-pipelining"):
        asyncio.run(_sink(args.port, pipelining=args.serve == "sink-pipelining"))
        return
    if args.serve == "aiosmtpd":
        _aiosmtpd(args.port, args.tls)
        return
    if args.memory_child:
        memory_child(args.memory_child)
        return

    count = args.subscribers or (2000 if args.quick else 10_000)
    memory_count = args.memory_subscribers or (20_000 if args.quick else 100_000)
    naive_count = max(200, count // 10)
    parallel = 2
    os.environ.pop("BRIEFBOT_DATABASE_URL", None)
    os.environ.setdefault("BRIEFBOT_TOKEN_SECRET", "bench-secret-" + "x" * 32)
    with tempfile.TemporaryDirectory(prefix="briefbot-bench-") as folder:
        root = Path(folder)
        write_briefs(root / "briefs", args.briefs)
        database = make_subscribers(root, count)
        data, prepared = sample_message(root, database)
        print(f"digest: {args.briefs} briefs, {len(data):,} bytes per message; {count:,} "
              f"subscribers (naive: {naive_count:,}); {os.cpu_count()} CPUs")
        servers = {
            "aiosmtpd (parses every message; no PIPELINING offered)": "aiosmtpd",
            "minimal sink, no PIPELINING offered": "sink",
            "minimal sink, PIPELINING offered (briefbot uses it; smtplib does not)":
                "sink-pipelining",
        }
        for title, kind in servers.items():
            rates: dict[str, list[float]] = {"c": [], "b": [], "a1": [], "an": []}
            with server(kind) as port:
                for _ in range(args.reps):
                    rates["c"].append(ceiling(port, data, count))
                    rates["a1"].append(briefbot(root, database, port)["rate"])
                    rates["an"].append(briefbot(root, database, port,
                                                connections=parallel)["rate"])
                rates["b"].append(naive(port, prepared, naive_count))
            c, b, a1, an = (statistics.median(rates[k]) for k in ("c", "b", "a1", "an"))
            print(f"\n{title}:")
            print(f"  (c) ceiling, pre-built bytes, 1 connection  {c:8,.0f} msg/s")
            print(f"  (b) naive, EmailMessage + connection each   {b:8,.0f} msg/s")
            print(f"  (a) briefbot, ledger + personalise, 1 conn  {a1:8,.0f} msg/s   "
                  f"(a)/(c) {a1 / c:5.0%}   (a)/(b) {a1 / b:5.1f}x")
            print(f"  (a) briefbot, {parallel} connections              {an:8,.0f} msg/s   "
                  f"(a)/(c) {an / c:5.0%}   (a)/(b) {an / b:5.1f}x")

        try:
            from tests.smtp_server import TestCertificates
        except ImportError:  # the test extra (cryptography) is not installed
            TestCertificates = None  # noqa: N806
        if TestCertificates is not None:
            certificates = TestCertificates.create(root / "tls")
            with server("aiosmtpd", certificates.folder) as port:
                tls = briefbot(root, database, port, security="starttls",
                               ca_file=certificates.ca_file)
            stats = tls["stats"]
            per_100 = 100 * stats["tls_handshakes"] / max(1, stats["messages"])
            print(f"\nSTARTTLS on aiosmtpd: {tls['rate']:,.0f} msg/s, {stats['tls_handshakes']} "
                  f"TLS handshakes for {stats['messages']:,} messages = {per_100:.3f} per 100")
        else:
            print("\nSTARTTLS: skipped (install the test extra for `cryptography`)")

        peak = memory(root, memory_count, 1)
        print(f"\nmemory, {memory_count:,} subscribers to the sink (1 connection, "
              f"{peak['rate']:,.0f} msg/s): peak RSS {peak['peak_kb'] / 1024:,.0f} MB "
              f"(after imports {peak['before_kb'] / 1024:,.0f} MB)")


if __name__ == "__main__":
    main()
