"""`briefbot run`, the daemon: as a child process against aiosmtpd and the outbox, with an
explicit clock for missed digests, and three instances sharing one PostgreSQL database."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from bot.config import load_settings
from bot.ledger import Ledger
from bot.schedule import Daemon
from bot.timing import period_for
from tests.briefs_factory import write_brief, write_week
from tests.digest_setup import add_subscribers, smtp_project
from tests.smtp_server import smtp_server

FAST = 'publish = "1s"\ndigest = "*/3 * * * * *"\n'


def wait_until(condition, timeout: float = 60, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def start_daemon(project, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(project.config), "run"],
        cwd=project.root, env={**project.env, **(env or {})}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def stop(child: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 90) -> tuple[int, str]:
    child.send_signal(sig)
    out, _ = child.communicate(timeout=timeout)
    return child.returncode, out


def last_week_briefs(project, count: int = 2) -> None:
    period = period_for(datetime.now(UTC), UTC, 7)
    write_week(project.briefs, count, week_start=period.start + timedelta(days=1),
               name="lastweek-{n}.md", title=lambda n: f"Last week's story {n}")


def rows(project, env_url: str | None = None):
    url = env_url or load_settings(project.config).database_url
    ledger = Ledger(url, readonly=True)
    try:
        return list(ledger.deliveries())
    finally:
        ledger.close()


def test_daemon_publishes_new_briefs_once_and_the_digest_once_then_stops_cleanly(project):
    with smtp_server() as server:
        smtp_project(project, server, extra_channel='[channels.outbox]\ntype = "outbox"\n'
                     "digest = false\n")
        with open(project.config, "a", encoding="utf-8") as config:
            config.write(f"[schedule]\n{FAST}")
        last_week_briefs(project)
        emails = add_subscribers(project, 20)
        child = start_daemon(project)
        try:
            assert wait_until(lambda: len(project.outbox()) == 2), "the due briefs were posted"
            now = datetime.now(UTC) - timedelta(minutes=1)
            for n in range(3):  # dropped in while it runs
                write_brief(project.briefs, f"fresh-{n}.md", title=f"Fresh {n}",
                            published_at=now.isoformat())
            assert wait_until(lambda: len(project.outbox()) == 5)
            assert wait_until(lambda: server.mailbox.count() >= len(emails))
            time.sleep(7)  # two more digest firings, one more publish round or more
        finally:
            code, output = stop(child)
    assert code == 0, output
    campaigns = [json.loads(f.read_text())["campaign"] for f in project.outbox()]
    assert sorted(campaigns) == sorted(set(campaigns)) and len(campaigns) == 5
    assert sorted(server.mailbox.per_recipient().values()) == [1] * len(emails)
    assert not [r for r in rows(project) if r.state == "claimed"]
    status = json.loads(project.cli("status", "--json", check=True).stdout)
    assert status["daemon"]["running"] is False
    assert "digest" in status["daemon"]["jobs"] and "publish" in status["daemon"]["jobs"]
    assert "finishing the delivery in flight" in output


def test_sigterm_during_a_digest_stops_claiming_and_exits_zero(project):
    with smtp_server() as server:
        smtp_project(project, server)
        with open(project.config, "a", encoding="utf-8") as config:
            config.write(f"[schedule]\n{FAST}")
        last_week_briefs(project)
        add_subscribers(project, 3000)
        child = start_daemon(project)
        try:
            assert wait_until(lambda: server.mailbox.count() >= 50)
        finally:
            code, output = stop(child)
        received = server.mailbox.count()
    assert code == 0, output
    sent = [r for r in rows(project) if r.key.recipient and r.state == "sent"]
    assert not [r for r in rows(project) if r.state == "claimed"]
    assert len(sent) == received < 3000  # stopped early, and every send was recorded


def explicit_clock(start: datetime):
    moment = [start]
    return moment, lambda: moment[0]


def daemon_project(project, subscribers: int = 5):
    project.write_config(extra='[schedule]\ndigest = "mon 08:00"\ndigest_grace = "12h"\n',
                         channels='[channels.outbox]\ntype = "outbox"\n')
    for day in (16, 18):  # week 2026-W47
        write_brief(project.briefs, f"w47-{day}.md", published_at=f"2026-11-{day}T10:00:00Z")
    add_subscribers(project, subscribers)


def digest_files(project):
    folder = project.root / "outbox" / "outbox"
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def test_down_across_the_digest_time_and_back_within_the_grace_sends_once(project):
    daemon_project(project)
    moment, clock = explicit_clock(datetime(2026, 11, 16, 7, 0, tzinfo=UTC))
    daemon = Daemon(load_settings(project.config), clock=clock)
    try:
        assert "first start" in daemon.digest()
        moment[0] = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)  # back 90 minutes late
        outcome = daemon.digest()
        assert "2026-W47" in outcome and len(digest_files(project)) == 5
        moment[0] += timedelta(minutes=5)
        assert daemon.digest() == "no digest due"
        # A second instance firing for the same time (or a DST fold) sends nothing more.
        assert "already sent" in daemon.send_period(datetime(2026, 11, 23, 8, tzinfo=UTC),
                                                    moment[0])
        assert len(digest_files(project)) == 5
    finally:
        daemon.close()


def test_back_after_the_grace_records_missed_and_sends_nothing(project):
    daemon_project(project)
    moment, clock = explicit_clock(datetime(2026, 11, 16, 7, 0, tzinfo=UTC))
    daemon = Daemon(load_settings(project.config), clock=clock)
    try:
        daemon.digest()
        moment[0] = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 25 hours late
        outcome = daemon.digest()
    finally:
        daemon.close()
    assert "missed" in outcome and digest_files(project) == []
    status = json.loads(project.cli("status", "--json", check=True).stdout)
    missed = [s for s in status["skipped"] if s["campaign"] == "digest:2026-W47"]
    assert missed and "missed" in missed[0]["last_error"]
    assert "briefbot digest send --period 2026-W47" in missed[0]["last_error"]


def test_three_instances_on_postgresql_share_a_digest_and_survive_a_kill(project, pg_url,
                                                                         monkeypatch):
    monkeypatch.setenv("BRIEFBOT_DATABASE_URL", pg_url)  # for the subscribers added here
    project.env["BRIEFBOT_DATABASE_URL"] = pg_url
    with smtp_server() as server:
        smtp_project(project, server, publish='lease = "3s"', unknown_policy="resend")
        with open(project.config, "a", encoding="utf-8") as config:
            config.write(f"[schedule]\n{FAST}")
        last_week_briefs(project)
        emails = add_subscribers(project, 2000)
        children = [start_daemon(project) for _ in range(3)]
        served = False
        try:
            assert wait_until(lambda: server.mailbox.count() >= 300, timeout=120)
            children[0].send_signal(signal.SIGKILL)  # midway
            children[0].wait(timeout=30)
            served = wait_until(lambda: len(server.mailbox.per_recipient()) >= len(emails),
                                timeout=300)
            time.sleep(4)  # let the survivors settle what the killed one left
        finally:
            outputs = [stop(child) for child in children[1:]]
    if not served:
        states = Counter(r.state for r in rows(project, pg_url) if r.key.recipient)
        logs = "\n".join(output[-3000:] for _, output in outputs)
        raise AssertionError(f"{len(server.mailbox.per_recipient())} of {len(emails)} served; "
                             f"deliveries by state: {dict(states)}; the survivors said:\n{logs}")
    for code, output in outputs:
        assert code == 0, output
    received = server.mailbox.per_recipient()
    assert set(received) == set(emails)
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= 1  # resend policy: at most one per kill
    workers = {r.worker.rsplit(":", 1)[0] for r in rows(project, pg_url)
               if r.key.recipient and r.worker}
    assert len(workers) > 1, "more than one process took part"


def test_two_quick_ctrl_c_stop_the_daemon_without_a_traceback(project):
    write_brief(project.briefs, "a.md")
    child = start_daemon(project)
    try:
        assert wait_until(lambda: len(project.outbox()) == 1), "the daemon started"
        child.send_signal(signal.SIGINT)
        code, out = stop(child, signal.SIGINT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert code == 0, out
    assert "Traceback" not in out and "SchedulerNotRunning" not in out
    assert "stopped" in out
