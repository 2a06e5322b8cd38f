"""The publishing pipeline end to end: the main job, retries, pacing, backfill, unknown outcomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from bot.config import load_settings
from bot.ledger import DeliveryKey, Ledger
from bot.publish import publish_due
from tests.briefs_factory import write_brief
from tests.conftest import Project

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
FLAKY = '[channels.flaky]\ntype = "flaky"\n{}\n'


def settings_of(project):
    return load_settings(project.config)


def test_main_job_on_the_default_configuration(tmp_path):
    """What the README's first command does, on a copy of the repository's defaults."""
    project = Project(tmp_path, like_repository=True)
    first = project.cli("run", "--once", check=True)
    files = project.outbox()
    assert len(files) == 4, first.stdout
    posts = [json.loads(f.read_text()) for f in files]
    campaigns = {p["campaign"] for p in posts}
    assert campaigns == {"brief:open-weights-eval-suite", "brief:grid-storage-pilot",
                         "brief:2026-11-25-ocean-sensors", "brief:policy-roundtable"}
    assert not any("000_abc272253b24f11a" in c for c in campaigns)  # the draft sample
    for post in posts:
        assert post["link"] in post["text"]
        assert post["length"] <= post["limit"]
    assert "4 sent" in first.stdout
    second = project.cli("run", "--once", check=True)
    assert len(project.outbox()) == 4
    assert "nothing to send" in second.stdout


def test_dry_run_touches_neither_ledger_nor_channel(project):
    write_brief(project.briefs, "one.md", title="Dry run title")
    result = project.cli("run", "--once", "--dry-run", "--now", "2026-11-28T12:00:00Z",
                         check=True)
    assert "Dry run title" in result.stdout and "would-send" in result.stdout
    assert not (project.root / "state").exists()
    assert project.outbox() == []
    status = json.loads(project.cli("status", "--json", check=True).stdout)
    assert status["counts"]["sent"] == 0 and len(status["queued"]) == 1


def test_future_briefs_wait_for_their_time(project):
    write_brief(project.briefs, "later.md", published_at="2026-12-01T09:00:00Z")
    assert publish_due(settings_of(project), NOW).outcomes == []
    later = publish_due(settings_of(project), datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    assert [o.state for o in later.outcomes] == ["sent"]


def test_no_flood_on_first_start(project):
    project.write_config(publish='backfill = "2d"')
    write_brief(project.briefs, "old.md", published_at="2026-11-01T09:00:00Z")
    write_brief(project.briefs, "fresh.md", published_at="2026-11-27T09:00:00Z")
    report = publish_due(settings_of(project), NOW)
    assert {o.brief_id: o.state for o in report.outcomes} == {"old": "skipped",
                                                             "fresh": "sent"}
    status = json.loads(project.cli("status", "--json", check=True).stdout)
    assert [s["campaign"] for s in status["skipped"]] == ["brief:old"]
    assert "backfill" in status["skipped"][0]["last_error"]
    # Skipped stays skipped on later runs.
    assert publish_due(settings_of(project), NOW + timedelta(hours=1)).outcomes == []


def test_pacing_sends_oldest_first_and_queues_the_rest(project):
    project.write_config(publish='backfill = "all"\nmax_per_run = 2')
    for day in (25, 23, 24, 26):
        write_brief(project.briefs, f"b{day}.md", published_at=f"2026-11-{day}T09:00:00Z")
    report = publish_due(settings_of(project), NOW)
    assert [o.brief_id for o in report.outcomes if o.state == "sent"] == ["b23", "b24"]
    assert [o.brief_id for o in report.outcomes if o.state == "queued"] == ["b25", "b26"]
    report = publish_due(settings_of(project), NOW)
    assert [o.brief_id for o in report.outcomes if o.state == "sent"] == ["b25", "b26"]


def test_min_gap_between_posts(project):
    project.write_config(publish='backfill = "all"\nmin_gap = "1h"')
    write_brief(project.briefs, "a.md", published_at="2026-11-25T09:00:00Z")
    write_brief(project.briefs, "b.md", published_at="2026-11-26T09:00:00Z")
    first = publish_due(settings_of(project), NOW)
    assert [(o.brief_id, o.state) for o in first.outcomes] == [("a", "sent"), ("b", "queued")]
    second = publish_due(settings_of(project), NOW)
    assert [(o.brief_id, o.state) for o in second.outcomes] == [("b", "queued")]


def test_edited_brief_is_not_reposted_and_status_says_so(project):
    path = write_brief(project.briefs, "edit-me.md", title="Before")
    publish_due(settings_of(project), NOW)
    path.write_text(path.read_text().replace("Before", "After"))
    assert publish_due(settings_of(project), NOW).outcomes == []
    assert len(project.outbox()) == 1
    status = json.loads(project.cli("status", "--json", check=True).stdout)
    assert [c["campaign"] for c in status["changed_since_sent"]] == ["brief:edit-me"]


def test_transient_failure_through_a_plugin_is_retried_and_succeeds(project):
    project.write_config(channels=FLAKY.format("transient_failures = 2\nretry_after = 30"))
    write_brief(project.briefs, "wobbly.md")
    first = project.cli("run", "--once", "--now", "2026-11-28T12:00:00Z")
    assert first.returncode == 1 and "503 Service Unavailable" in first.stdout
    status = json.loads(project.cli("status", "--json", check=True).stdout)
    assert status["queued"][0]["next_attempt_at"].startswith("2026-11-28T12:00:30")
    # Not yet due: the retry-after is honoured.
    assert "nothing to send" not in project.cli("run", "--once", "--now",
                                                "2026-11-28T12:00:10Z").stdout
    assert not (project.root / "flaky-sent.jsonl").exists()
    project.cli("run", "--once", "--now", "2026-11-28T12:00:31Z")
    third = project.cli("run", "--once", "--now", "2026-11-28T12:01:02Z", check=True)
    assert "sent" in third.stdout
    sent = (project.root / "flaky-sent.jsonl").read_text().splitlines()
    assert len(sent) == 1


def test_permanent_failure_is_recorded_and_others_still_go_out(project):
    project.write_config(channels=FLAKY.format('permanent = ["refused"]'))
    write_brief(project.briefs, "refused.md", published_at="2026-11-20T09:00:00Z")
    write_brief(project.briefs, "accepted.md", published_at="2026-11-21T09:00:00Z")
    result = project.cli("run", "--once", "--now", "2026-11-28T12:00:00Z")
    assert result.returncode == 1
    assert "content not allowed" in result.stdout
    status = json.loads(project.cli("status", "--json", check=True).stdout)
    dead = [a for a in status["attention"] if a["state"] == "dead"]
    assert [d["campaign"] for d in dead] == ["brief:refused"]
    assert "content not allowed" in dead[0]["last_error"]
    assert status["counts"]["sent"] == 1
    # An operator fixes things and retries it.
    project.write_config(channels=FLAKY.format("permanent = []"))
    assert project.cli("retry", "--dead", check=True).returncode == 0
    project.cli("run", "--once", "--now", "2026-11-28T12:05:00Z", check=True)
    assert len((project.root / "flaky-sent.jsonl").read_text().splitlines()) == 2


def test_max_attempts_marks_dead(project):
    project.write_config(publish='backfill = "all"\nmax_attempts = 2\nretry_base = "1s"',
                         channels=FLAKY.format("transient_failures = 5"))
    write_brief(project.briefs, "never.md")
    settings = settings_of(project)
    states = [publish_due(settings, NOW + timedelta(minutes=i)).outcomes[0].state
              for i in range(2)]
    assert states == ["failed", "dead"]
    assert publish_due(settings, NOW + timedelta(hours=1)).outcomes == []


def crash_mid_send(project, brief_id: str, channel: str) -> None:
    """Leave a claim behind as a process killed between claim and record would."""
    ledger = Ledger(load_settings(project.config).database_url, worker="dead-worker",
                    lease=timedelta(0))
    assert ledger.claim(DeliveryKey(f"brief:{brief_id}", channel))
    ledger.close()


def test_unknown_outcome_with_skip_policy_waits_for_an_operator(project):
    project.write_config(channels=FLAKY.format('unknown_policy = "skip"'))
    write_brief(project.briefs, "lost.md")
    crash_mid_send(project, "lost", "flaky")
    result = project.cli("run", "--once", "--now", "2026-11-28T12:00:00Z")
    assert result.returncode == 1 and "unknown" in result.stdout
    status = json.loads(project.cli("status", "--json", check=True).stdout)
    assert [(a["state"], a["key"]) for a in status["attention"]] == [
        ("unknown", "brief:lost|flaky")]
    assert not (project.root / "flaky-sent.jsonl").exists()
    project.cli("retry", "brief:lost|flaky", check=True)
    project.cli("run", "--once", "--now", "2026-11-28T12:01:00Z", check=True)
    assert len((project.root / "flaky-sent.jsonl").read_text().splitlines()) == 1


def test_unknown_outcome_with_resend_policy_sends_again(project):
    project.write_config(channels=FLAKY.format('unknown_policy = "resend"'))
    write_brief(project.briefs, "lost.md")
    crash_mid_send(project, "lost", "flaky")
    project.cli("run", "--once", "--now", "2026-11-28T12:00:00Z", check=True)
    assert len((project.root / "flaky-sent.jsonl").read_text().splitlines()) == 1


def test_outbox_reconciles_an_unknown_outcome_instead_of_resending(project):
    write_brief(project.briefs, "once.md")
    settings = settings_of(project)
    publish_due(settings, NOW)
    ledger = Ledger(settings.database_url)
    # Forget the receipt, as if the process died after writing the file.
    ledger.engine.dispose()
    from sqlalchemy import update

    from bot.ledger import deliveries

    with ledger.engine.begin() as conn:
        conn.execute(update(deliveries).values(state="unknown", remote_id=None))
    report = publish_due(settings, NOW)
    assert [(o.state, o.detail) for o in report.outcomes] == [
        ("sent", "reconciled: it had gone out")]
    assert len(project.outbox()) == 1


def test_skip_command_marks_a_brief_never_to_send(project):
    write_brief(project.briefs, "unwanted.md")
    project.cli("skip", "unwanted", check=True)
    assert publish_due(settings_of(project), NOW).outcomes == []
    assert project.outbox() == []


def test_one_broken_brief_does_not_stop_the_others(project):
    write_brief(project.briefs, "good.md")
    (project.briefs / "bad.md").write_text("---\ntitle: [\n---\n")
    result = project.cli("run", "--once", "--now", "2026-11-28T12:00:00Z")
    assert len(project.outbox()) == 1
    assert "bad.md" in result.stderr and "yaml-invalid" in result.stderr
