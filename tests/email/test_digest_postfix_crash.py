"""`briefbot digest send` SIGKILLed again and again while it mails 2,000 subscribers through a
real Postfix on loopback (Debian's package, a throwaway instance: tests/servers/postfix.py), counted
per recipient in the Maildir where Postfix files a copy of everything it accepted.

With email's default `unknown_policy = "resend"`: nobody missing, at most one duplicate per
kill (the message in flight), the resend carrying the same Message-ID.
"""

from __future__ import annotations

import csv
import email
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from pathlib import Path

import pytest

from bot.subscriber_csv import import_csv
from tests.email.digest_setup import NOW, PERIOD, smtp_project, subscriber_list, write_week_briefs
from tests.killing import kill_at
from tests.servers import postfix

RECIPIENTS = 2000
KILLS = 10


def _start(project) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(project.config), "digest", "send",
         "--period", PERIOD, "--now", NOW, "--json"],
        cwd=project.root, env=project.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextmanager
def _removed(folder: Path) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _delivered(copies) -> Counter[str]:
    """Recipient → copies Postfix accepted (its `always_bcc` copy keeps the To header)."""
    found: Counter[str] = Counter()
    for path in copies.glob("*") if copies.is_dir() else ():
        with open(path, "rb") as handle:
            message = email.message_from_binary_file(handle, policy=policy.default)
        found[str(message["To"]).strip().lower()] += 1
    return found


def test_killed_digest_sends_through_postfix_reach_everyone_once(project):
    why = postfix.available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"Postfix is required in CI: {why}")
        pytest.skip(why)
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    # Outside pytest's private tmp folders: Postfix's virtual(8) delivers as nobody.
    base = Path(tempfile.mkdtemp(prefix="briefbot-maildir-"))
    os.chmod(base, 0o755)
    mail = base / "mail"
    mail.mkdir()
    os.chown(mail, 65534, 65534)
    with postfix.server(mail, "bounces", owner=(65534, 65534)) as relay, _removed(base):
        class Relay:
            host, port = relay.host, relay.port

        smtp_project(project, Relay, unknown_policy="resend")
        write_week_briefs(project)
        emails = [f"reader{n:05d}@ok.example.com" for n in range(RECIPIENTS)]
        path = project.root / "list.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([["email"], *([e] for e in emails)])
        with subscriber_list(project) as subscribers:
            assert import_csv(subscribers, path).ok

        def relay_copies() -> int:  # what Postfix accepted so far
            return sum(1 for _ in relay.copies.glob("*")) if relay.copies.is_dir() else 0

        targets = sorted(rng.sample(range(50, RECIPIENTS - 50), KILLS))
        mid_send = 0
        for target in targets:
            run = _start(project)
            mid_send += kill_at(run, relay_copies, target, within=120, poll=0.01)
            run.wait(timeout=30)
        for _ in range(3):  # the runs that settle what the kills left
            _start(project).wait(timeout=300)
        total = sum(1 for _ in relay.copies.glob("*"))
        postfix.wait_for_files(relay.copies, total)  # every accepted copy filed
        time.sleep(2)  # the last deliveries leave the queue
        counts = _delivered(relay.copies)

    context = f"seed {seed}"
    missing = set(emails) - set(counts)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    assert mid_send >= KILLS - 2, context  # the kills landed while it was mailing
    assert not missing, (context, len(missing), sorted(missing)[:5])
    assert duplicates <= KILLS, (context, duplicates)
    print(f"\npostfix, resend: {KILLS} kills over {RECIPIENTS} recipients: "
          f"{len(missing)} missing, {duplicates} duplicates")
