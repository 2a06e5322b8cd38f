"""A batched digest send (the Mailgun adapter, against the fake messages API) killed with
SIGKILL ten times and restarted: counted at the receiver, nobody is missing after the settling
run, and every duplicate was in a batch in flight at a kill (claimed, not yet recorded).

The claim of a whole batch comes before its call and its receipts are recorded after, so a
kill can only leave the batches in flight without an outcome; the next run finds their claims'
process gone, takes them as unknown and, under the email policy `resend`, sends them again.

Recipients: $BRIEFBOT_KILL_TEST_SUBSCRIBERS, default 20,000 (the README's figure is a run of
this test with 100,000).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter

from bot.config import load_settings
from bot.ledger import Ledger
from tests.email.digest_setup import NOW, PERIOD, add_subscribers, ledger_rows, write_week_briefs
from tests.fakes.mailgun_api import FakeMailgun
from tests.killing import kill_at

KEY = "key-test-0123456789abcdef0123456789"
DOMAIN = "mg.example.org"
KILLS = 10
BATCH = 500
CONNECTIONS = 2


def _start(project) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(project.config), "digest", "send",
         "--period", PERIOD, "--now", NOW, "--json"],
        cwd=project.root, env=project.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _in_flight(project) -> set[str]:
    """The recipients claimed and not recorded: the batches in flight when the process died."""
    ledger = Ledger(load_settings(project.config).database_url, readonly=True)
    try:
        return {r.key.recipient for r in ledger.deliveries(states=["claimed"])
                if r.key.recipient}
    finally:
        ledger.close()


def test_ten_kills_during_a_batched_send_lose_nobody(project):
    count = int(os.environ.get("BRIEFBOT_KILL_TEST_SUBSCRIBERS", "20000"))
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    context = f"seed {seed}, {count} subscribers"
    write_week_briefs(project)
    with FakeMailgun(KEY, DOMAIN, keep_messages=False) as fake:
        project.write_config(
            extra=('[email]\nfrom_address = "Weekly <digest@example.org>"\n'
                   'base_url = "https://news.example.org"\n'),
            channels=(f'[channels.mg]\ntype = "mailgun"\ndomain = "{DOMAIN}"\n'
                      f'api_base = "{fake.url}"\napi_key_env = "MAILGUN_TEST_KEY"\n'
                      f"batch_size = {BATCH}\nconnections = {CONNECTIONS}\ntimeout = 30\n"))
        project.env["MAILGUN_TEST_KEY"] = KEY
        emails = add_subscribers(project, count)
        targets = sorted(rng.sample(range(BATCH, count - 2 * BATCH), KILLS))
        in_flight: Counter[str] = Counter()  # recipient → kills it was in flight at
        killed_mid_send = 0
        reached: set[str] = set()
        read = 0

        def distinct() -> int:
            """Recipients reached at least once. Resends at a run's start are no progress, so
            each kill lands later in the send than the one before; killing run after run at
            its start would only exhaust the bound on resends."""
            nonlocal read
            fresh = fake.received[read:]
            read += len(fresh)
            reached.update(address for _, address in fresh)
            return len(reached)

        for target in targets:
            run = _start(project)
            killed_mid_send += kill_at(run, distinct, target, within=120, poll=0.001)
            run.communicate(timeout=30)
            in_flight.update(_in_flight(project))
        assert killed_mid_send == KILLS, context

        reports = []
        for _ in range(3):  # to the end; once more if anything was still left
            run = _start(project)
            out, err = run.communicate(timeout=600)
            reports.append(json.loads(out))
            if not reports[-1]["pending"]:
                break
        received = Counter(address for _, address in fake.received)

    missing = set(emails) - set(received)
    duplicates = {email: n for email, n in received.items() if n > 1}
    assert not missing, (context, len(missing), reports[-1])
    outside = set(duplicates) - set(in_flight)
    assert not outside, (context, sorted(outside)[:5])
    # resent once per kill it was in flight at, never more
    assert all(n <= 1 + in_flight[e] for e, n in duplicates.items()), context
    assert sum(in_flight.values()) <= KILLS * CONNECTIONS * BATCH, context
    rows = {r.key.recipient: r for r in ledger_rows(project)}
    assert {rows[e].state for e in emails} == {"sent"}, context
    assert reports[-1]["pending"] == 0 and not reports[-1]["counts"].get("failed"), context
    print(f"\n{context}: {KILLS} kills, {sum(received.values())} messages received for "
          f"{count} subscribers, 0 missing, {sum(n - 1 for n in duplicates.values())} "
          f"duplicates, all within the {sum(in_flight.values())} recipients of the batches "
          "in flight at the kills")
