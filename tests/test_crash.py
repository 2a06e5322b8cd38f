"""Kill a publishing run with SIGKILL at many points: nothing is lost, nothing is doubled.

The outbox can settle an unknown outcome by looking for its file, so it never duplicates. The
test plugin cannot, so its policy decides: `skip` leaves each unresolved delivery listed by
`status`, `resend` sends it again (a duplicate only where the kill fell between send and record).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.briefs_factory import write_brief

BRIEFS = 200
KILLS = 20


def sent_per_key(project) -> tuple[Counter, Counter]:
    outbox = Counter(json.loads(f.read_text())["campaign"] for f in project.outbox())
    flaky = Counter()
    log = project.root / "flaky-sent.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                flaky[json.loads(line)["key"].split("|")[0]] += 1
            except json.JSONDecodeError:
                pass  # a line torn by the kill; the send it belongs to is counted below
    return outbox, flaky


def progress(project) -> int:
    """Sends so far: outbox files plus lines in the plugin's log."""
    outbox = project.root / "outbox" / "outbox"
    files = sum(1 for _ in outbox.glob("*.json")) if outbox.exists() else 0
    log = project.root / "flaky-sent.jsonl"
    return files + (log.read_bytes().count(b"\n") if log.exists() else 0)


@pytest.mark.parametrize("policy", ["skip", "resend"])
def test_sigkill_at_twenty_points_loses_nothing(project, policy):
    project.write_config(
        publish='backfill = "all"\nmax_per_run = 1000\nlease = "300ms"',
        channels=(
            '[channels.outbox]\ntype = "outbox"\n'
            f'[channels.flaky]\ntype = "flaky"\ndelay = 0.01\nunknown_policy = "{policy}"\n'
        ),
    )
    for i in range(BRIEFS):
        write_brief(project.briefs, f"b{i:03}.md", published_at="2026-11-20T09:00:00Z")
    rng = random.Random(f"crash-{policy}")
    argv = [sys.executable, "-m", "bot", "--config", str(project.config), "run", "--once",
            "--now", "2026-11-28T12:00:00Z"]
    kills = 0
    for _ in range(KILLS):
        # Kill after a random number of new sends, so every kill lands mid-run, at a
        # different point, often between a send and its record.
        target = progress(project) + rng.randint(1, 12)
        child = subprocess.Popen(argv, cwd=project.root, env=project.env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while child.poll() is None and progress(project) < target and (
            time.monotonic() < deadline
        ):
            time.sleep(0.002)
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait(timeout=30)
        time.sleep(0.35)  # let the dead run's leases expire
    for _ in range(5):  # finish without interruption
        if "nothing to send" in project.cli("run", "--once", "--now",
                                            "2026-11-28T12:00:00Z").stdout:
            break
    assert kills == KILLS, "a run finished before its kill point"

    outbox, flaky = sent_per_key(project)
    campaigns = {f"brief:b{i:03}" for i in range(BRIEFS)}
    assert set(outbox) == campaigns and max(outbox.values()) == 1

    status = json.loads(project.cli("status", "--json", check=True).stdout)
    unknown = {a["campaign"] for a in status["attention"] if a["state"] == "unknown"}
    assert not any(a["state"] == "claimed" for a in status["attention"])
    if policy == "skip":
        assert max(flaky.values()) == 1
        # Every flaky delivery was sent or is listed for an operator: none is lost.
        assert set(flaky) | unknown == campaigns
        assert len(unknown) <= kills
    else:
        assert set(flaky) == campaigns and not unknown
        duplicates = sum(n - 1 for n in flaky.values())
        assert duplicates <= kills


def test_a_sent_log_restored_from_an_old_backup_refuses_to_send_again(project):
    import shutil

    from bot.config import load_settings
    from tests.briefs_factory import write_brief

    write_brief(project.briefs, "first.md")
    assert project.cli("run", "--once").returncode == 0
    database = load_settings(project.config).state_dir / "ledger.sqlite3"
    backup = project.root / "backup.sqlite3"
    shutil.copy(database, backup)  # a backup with the first brief in it
    write_brief(project.briefs, "second.md", published_at="2026-11-21T09:00:00Z")
    write_brief(project.briefs, "third.md", published_at="2026-11-22T09:00:00Z")
    assert project.cli("run", "--once").returncode == 0
    assert len(project.outbox()) == 3

    for suffix in ("-wal", "-shm"):
        (database.parent / f"{database.name}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, database)  # the disk died; last night's copy comes back
    refused = project.cli("run", "--once")
    assert refused.returncode == 2
    assert "restored from a backup or truncated" in refused.stderr
    assert "briefbot sent-log accept" in refused.stderr
    assert len(project.outbox()) == 3  # nothing posted a second time

    assert project.cli("sent-log", "accept").returncode == 0
    assert project.cli("run", "--once").returncode == 0  # the operator chose to go on


def test_an_unusable_sent_log_is_one_clear_line_and_nothing_is_sent(project):
    from bot.config import load_settings
    from tests.briefs_factory import write_brief

    write_brief(project.briefs, "a.md")
    database = load_settings(project.config).state_dir / "ledger.sqlite3"
    database.parent.mkdir(parents=True, exist_ok=True)
    cases = {
        b"": "is empty (0 bytes): it was truncated",  # never taken for a fresh start
        b"this is not a database, just text\n" * 200: "is damaged",
    }
    for content, says in cases.items():
        database.write_bytes(content)
        for command in (["run", "--once"], ["status"], ["subscribers", "add", "a@example.org"]):
            result = project.cli(*command)
            assert result.returncode == 1, (command, result.stderr)
            assert says in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert project.outbox() == []

    url = "postgresql+psycopg://briefbot:hunter2secret@127.0.0.1:9/briefbot"
    result = project.cli("run", "--once", env={"BRIEFBOT_DATABASE_URL": url})
    assert result.returncode == 1
    assert "cannot use the PostgreSQL sent-log at" in result.stderr
    assert "hunter2secret" not in result.stderr and "Traceback" not in result.stderr
