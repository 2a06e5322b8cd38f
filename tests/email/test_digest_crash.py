"""`briefbot digest send` killed with SIGKILL at random points and restarted, again and again.

The ledger's claim comes before every send, so a restarted run resumes at the next unsent
recipient. Only the message in flight at a kill can be in doubt: with `unknown_policy = "resend"`
it is sent again (same Message-ID), so at most one duplicate per kill; with `"skip"` it is never
sent twice and stays listed as unknown in `status`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.email.digest_setup import (
    NOW,
    PERIOD,
    add_subscribers,
    ledger_rows,
    smtp_project,
    subscriber_list,
    write_week_briefs,
)
from tests.killing import kill_at
from tests.servers.smtp_server import smtp_server

LEASE = 1.0  # seconds: a killed worker's claim turns unknown this soon


def _start(project) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(project.config), "digest", "send",
         "--period", PERIOD, "--now", NOW, "--json"],
        cwd=project.root, env=project.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize(("policy", "subscribers", "kills"), [
    ("resend", 2000, 10),
    ("skip", 600, 4),
])
def test_killed_and_restarted_sends_reach_everyone_once(project, policy, subscribers, kills):
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    context = f"seed {seed}"
    write_week_briefs(project)
    with smtp_server() as server:
        mailbox = server.mailbox
        smtp_project(project, server, unknown_policy=policy, publish=f'lease = "{LEASE}s"')
        emails = add_subscribers(project, subscribers)
        targets = sorted(rng.sample(range(20, subscribers - 20), kills))
        unsubscribed: set[str] = set()
        killed_mid_send = 0
        for target in targets:
            run = _start(project)
            killed_mid_send += kill_at(run, mailbox.count, target, within=60)
            run.communicate(timeout=30)
            # A few who have not had it yet leave between restarts.
            waiting = sorted(set(emails) - set(mailbox.per_recipient()) - unsubscribed)
            leaving = rng.sample(waiting, min(2, len(waiting)))
            with subscriber_list(project) as subscriber_list_:
                for email in leaving:
                    assert subscriber_list_.unsubscribe(email)
            unsubscribed.update(leaving)
        assert killed_mid_send == kills, context

        # Run to the end; once the last killed claim's lease is over, once more to settle it.
        reports = []
        for _ in range(3):
            run = _start(project)
            out, err = run.communicate(timeout=120)
            reports.append(json.loads(out))
            if not any(reports[-1]["counts"].get(s) for s in ("busy", "failed", "left")):
                break
            time.sleep(LEASE + 0.2)
        received = mailbox.received()

    counts = Counter(r for m in received for r in m.rcpt_tos)
    active = set(emails) - unsubscribed
    assert not unsubscribed & set(counts), context  # nobody who left got it
    rows = {r.key.recipient: r for r in ledger_rows(project)}
    unknown = {email for email, row in rows.items() if row.state == "unknown"}
    duplicates = {email: n for email, n in counts.items() if n > 1}
    if policy == "resend":
        assert set(counts) == active, context
        assert sum(n - 1 for n in duplicates.values()) <= kills, (context, duplicates)
        for email in duplicates:  # a resend is recognisably the same message
            ids = {m.parse()["Message-ID"] for m in received if m.rcpt_tos == (email,)}
            assert len(ids) == 1, (context, email, ids)
        assert {rows[e].state for e in active} == {"sent"}, context
        assert reports[-1]["pending"] == 0, (context, reports[-1])
    else:
        assert not duplicates, context
        missing = {e: rows[e].state if e in rows else None
                   for e in active - set(counts) - unknown}
        assert not missing, (context, missing, reports)  # had it, or listed as in doubt
        assert len(unknown) <= kills, context
        assert {rows[e].state for e in active - unknown} == {"sent"}, context
        status = json.loads(project.cli("status", "--json").stdout)
        listed = {row["recipient"] for row in status["attention"] if row["state"] == "unknown"}
        assert listed == unknown, context


def test_sigterm_stops_a_digest_send_cleanly_and_the_next_run_finishes(project):
    """`systemctl stop` or `timeout` mid-send: the message in flight is finished and recorded,
    the summary printed, exit 1 (something left), nobody claimed; the next run completes."""
    from tests.servers.smtp_server import Mailbox

    write_week_briefs(project)
    with smtp_server(Mailbox(reply_delay=0.02)) as server:
        smtp_project(project, server)
        emails = add_subscribers(project, 300)
        run = _start(project)
        deadline = time.monotonic() + 60
        while server.mailbox.count() < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)
        assert run.returncode == 1, err
        report = json.loads(out)
        assert "interrupted" in report["stopped"]
        assert 0 < report["counts"]["sent"] < 300
        rows = ledger_rows(project)
        assert not [r for r in rows if r.state in ("claimed", "unknown")]
        assert len([r for r in rows if r.state == "sent"]) == server.mailbox.count()

        final = _start(project)
        out, err = final.communicate(timeout=120)
        assert final.returncode == 0, err
        counts = server.mailbox.per_recipient()
    assert set(counts) == set(emails) and set(counts.values()) == {1}
