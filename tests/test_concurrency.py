"""Four processes publish at the same moment on one ledger: zero duplicates, nothing missed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.briefs_factory import write_brief

BRIEFS = 120
WORKERS = 4

SCRIPT = """
import sys, time
from datetime import datetime, UTC
from bot.config import load_settings
from bot.publish import publish_due
settings = load_settings(sys.argv[1])
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
report = publish_due(settings, datetime(2026, 11, 28, 12, tzinfo=UTC))
print(report.count("sent"))
"""


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_four_processes_share_the_work_without_duplicates(project, database, request):
    env = dict(project.env)
    if database == "postgresql":
        env["BRIEFBOT_DATABASE_URL"] = request.getfixturevalue("pg_url")
    project.write_config(
        publish='backfill = "all"\nmax_per_run = 1000',
        channels='[channels.outbox]\ntype = "outbox"\n[channels.flaky]\ntype = "flaky"\n'
                 'delay = 0.002\n',
    )
    for i in range(BRIEFS):
        write_brief(project.briefs, f"c{i:03}.md")
    start = time.time() + 3  # every process imports first, then all start together
    children = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, str(project.config), str(start)],
                         cwd=project.root, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(WORKERS)
    ]
    results = [child.communicate(timeout=300) for child in children]
    for child, (_, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
    sent_by_worker = [int(out.strip().splitlines()[-1]) for out, _ in results]
    assert sum(sent_by_worker) == 2 * BRIEFS
    outbox = Counter(json.loads(f.read_text())["campaign"] for f in project.outbox())
    flaky = Counter(json.loads(line)["key"].split("|")[0]
                    for line in (project.root / "flaky-sent.jsonl").read_text().splitlines())
    expected = {f"brief:c{i:03}" for i in range(BRIEFS)}
    for counter in (outbox, flaky):
        assert set(counter) == expected
        assert max(counter.values()) == 1
