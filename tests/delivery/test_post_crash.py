"""`briefbot run --once` killed with SIGKILL again and again while it posts 200 briefs to a
counting webhook receiver, then run until everything is settled, per unknown policy.

The claim comes before every post, so only the post in flight at a kill can be in doubt. A
webhook cannot be asked what it received: with `resend` the post in doubt is sent again (at
most one duplicate per kill, nothing missing); with `skip` it is never sent twice and stays
listed as unknown for an operator (nothing silently missing).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter

import pytest

from bot.config import load_settings
from bot.ledger import Ledger
from tests.briefs_factory import write_brief
from tests.fakes.server import Reply, Request, route
from tests.fakes.webhook_api import FakeWebhook
from tests.killing import kill_at

BRIEFS = 200
KILLS = 20


class SlowCountingReceiver(FakeWebhook):
    """Takes a few milliseconds per post, so kills land while posts are in flight."""

    @route("POST", r"/hook/.+")
    def generic(self, request: Request) -> Reply:
        time.sleep(0.01)
        return super().generic(request)


def _run(project) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(project.config), "run", "--once",
         "--now", "2026-11-28T12:00:00Z"],
        cwd=project.root, env=project.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("policy", ["resend", "skip"])
def test_killed_runs_post_every_brief_once_or_say_which_are_in_doubt(project, policy):
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    with SlowCountingReceiver() as receiver:
        project.write_config(
            publish='backfill = "all"\nmax_per_run = 1000',
            channels=f'[channels.hook]\ntype = "webhook"\nurl = "{receiver.url}/hook/x"\n'
                     f'unknown_policy = "{policy}"\ntimeout = 10\n')
        for n in range(BRIEFS):
            write_brief(project.briefs, f"b{n:03d}.md", title=f"Brief number {n}",
                        published_at=f"2026-11-2{n % 7}T{n % 24:02d}:00:00Z")
        targets = sorted(rng.sample(range(5, BRIEFS - 5), KILLS))
        killed_mid_send = 0
        for target in targets:
            run = _run(project)
            killed_mid_send += kill_at(run, lambda: len(receiver.deliveries), target, within=60,
                                       poll=0.001)
            run.wait(timeout=30)
        for _ in range(3):  # the runs that settle what the kills left
            _run(project).wait(timeout=120)
        received = Counter(d.payload["brief"] for d in receiver.deliveries)

    context = f"seed {seed}"
    assert killed_mid_send >= KILLS - 2, context  # (a kill may land between two runs' ends)
    ledger = Ledger(load_settings(project.config).database_url, readonly=True)
    try:
        rows = {r.key.campaign.removeprefix("brief:"): r.state for r in ledger.deliveries()}
    finally:
        ledger.close()
    everyone = {f"b{n:03d}" for n in range(BRIEFS)}
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    unknown = {b for b, state in rows.items() if state == "unknown"}
    missing = everyone - set(received) - unknown
    assert not missing, (context, sorted(missing))  # sent, or listed as in doubt
    assert duplicates <= KILLS, (context, duplicates)
    if policy == "resend":
        assert set(received) == everyone and not unknown, context
        assert set(rows.values()) == {"sent"}, context
    else:
        assert duplicates == 0, context
        assert len(unknown) <= KILLS, context
        assert {rows[b] for b in everyone - unknown} == {"sent"}, context
    print(f"\n{policy}: {killed_mid_send} kills, {duplicates} duplicates, "
          f"{len(unknown)} unknown for an operator, {len(missing)} missing")
