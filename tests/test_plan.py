"""One plan, four views: `status`, `list`, `run --dry-run` and the preview agree, brief by
brief and channel by channel, on what goes out where and why not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from bot.config import load_settings
from bot.ledger import Ledger
from bot.message import DeliveryKey
from bot.preview import build_gallery
from tests.briefs_factory import write_brief

NOW = "2026-11-28T12:00:00Z"
MOMENT = datetime(2026, 11, 28, 12, tzinfo=UTC)
CHANNELS = (
    '[channels.outbox]\ntype = "outbox"\nfolder = "outbox"\ndigest = false\n'
    '[channels.mail]\ntype = "smtp"\nhost = "127.0.0.1"\nport = 9\nsecurity = "none"\n'
    '[channels.bsky]\ntype = "bluesky"\nhandle = "plan.example.org"\n'
    'service = "http://127.0.0.1:9"\nmax_per_run = 1\n'
)


def _setup(project):
    project.write_config(channels=CHANNELS, publish='backfill = "3d"')
    write_brief(project.briefs, "due-a.md", published_at="2026-11-26T09:00:00Z")
    write_brief(project.briefs, "due-b.md", published_at="2026-11-27T09:00:00Z")
    write_brief(project.briefs, "sent.md", published_at="2026-11-26T10:00:00Z")
    write_brief(project.briefs, "retrying.md", published_at="2026-11-26T11:00:00Z")
    write_brief(project.briefs, "old.md", published_at="2026-11-01T09:00:00Z")
    write_brief(project.briefs, "later.md", published_at="2030-01-01T09:00:00Z")
    write_brief(project.briefs, "draft.md", status="draft")
    settings = load_settings(project.config)
    ledger = Ledger(settings.database_url)
    try:
        sent = DeliveryKey("brief:sent", "outbox")
        ledger.claim(sent)
        ledger.record_sent(sent, remote_id="x")
        retrying = DeliveryKey("brief:retrying", "bsky")
        ledger.claim(retrying)
        ledger.record_failure(retrying, "503 from the server",
                              retry_at=datetime.now(UTC) + timedelta(days=3650))
    finally:
        ledger.close()
    return settings


def test_status_list_dry_run_and_preview_agree(project):
    settings = _setup(project)
    status = json.loads(project.cli("status", "--json", "--now", NOW, check=True).stdout)
    by_status = {(s["brief"], s["channel"]): s["state"] for s in status["plan"]}
    listed = json.loads(project.cli("list", "--json", "--now", NOW, check=True).stdout)
    by_list = {(row["id"], name): cell["state"] for row in listed
               for name, cell in row["channels"].items()}
    dry = project.cli("run", "--once", "--dry-run", "--json", "--now", NOW)
    assert dry.returncode == 0, dry.stderr
    by_run = {(o["brief"], o["channel"]): o["state"] for o in json.loads(dry.stdout)["outcomes"]}
    gallery = build_gallery(settings, now=MOMENT, include_drafts=True)
    by_preview = {(entry.brief.id, card.channel): card.state.name
                  for entry in gallery.entries for card in entry.cards}

    assert by_status == by_list
    expected = {
        ("due-a", "outbox"): "due", ("due-b", "outbox"): "due",
        # bsky has max_per_run = 1: the oldest goes, the others wait for the next run
        ("due-a", "bsky"): "due", ("due-b", "bsky"): "queued",
        ("sent", "outbox"): "sent", ("sent", "bsky"): "queued",
        ("retrying", "outbox"): "due", ("retrying", "bsky"): "queued",
        ("old", "outbox"): "skipped", ("old", "bsky"): "skipped",
        ("later", "outbox"): "scheduled", ("later", "bsky"): "scheduled",
        ("draft", "outbox"): "draft", ("draft", "bsky"): "draft",
    }
    # The SMTP channel sends only the digest: no per-brief message, in every view.
    assert {k: v for k, v in by_status.items() if k[1] != "mail"} == expected
    assert {v for k, v in by_status.items() if k[1] == "mail"} == {"not-posted"}
    assert not any(channel == "mail" for _, channel in by_preview)

    goes_out = {k for k, v in by_status.items() if v == "due"}
    assert {k for k, v in by_run.items() if v == "would-send"} == goes_out
    assert {k for k, v in by_preview.items() if v == "due"} == goes_out
    for state in ("queued", "skipped"):
        wanted = {k for k, v in by_status.items() if v == state}
        assert {k for k, v in by_run.items() if v == state} == wanted
        assert {k for k, v in by_preview.items() if v == state} == wanted
    assert {k: v for k, v in by_preview.items() if v in ("sent", "scheduled", "draft")} == {
        k: v for k, v in expected.items() if v in ("sent", "scheduled", "draft")}


def test_a_real_run_does_what_the_plan_said(project):
    _setup(project)
    before = json.loads(project.cli("status", "--json", "--now", NOW, check=True).stdout)
    planned = {(s["brief"], s["channel"]) for s in before["plan"]
               if s["state"] == "due" and s["channel"] == "outbox"}
    refused = project.cli("run", "--once", "--now", NOW)  # no Bluesky password: no start
    assert refused.returncode == 2
    assert "`channels.bsky.password_env`: environment variable BLUESKY_APP_PASSWORD is not " \
        "set" in refused.stderr
    assert project.outbox() == []
    # bsky's server is down: only the outbox sends
    project.cli("run", "--once", "--now", NOW, env={"BLUESKY_APP_PASSWORD": "app-password"})
    after = json.loads(project.cli("status", "--json", "--now", NOW, check=True).stdout)
    now_sent = {(s["brief"], s["channel"]) for s in after["plan"]
                if s["state"] == "sent" and s["channel"] == "outbox"}
    assert now_sent == planned | {("sent", "outbox")}
    # The backfill skip is now recorded in the sent-log, for every channel that posts.
    assert {s["key"] for s in after["skipped"]} == {"brief:old|outbox", "brief:old|bsky"}
    assert {s["action"] for s in after["plan"] if s["brief"] == "old"} == {None}


def test_status_shows_a_digest_as_sent_or_partial(project):
    settings = _setup(project)
    ledger = Ledger(settings.database_url)
    try:
        campaign = "digest:2026-W47"  # the week before NOW's, which closed on 23 Nov
        for number in range(3):
            key = DeliveryKey(campaign, "mail", f"reader{number}@example.org")
            ledger.claim(key)
            if number:
                ledger.record_sent(key)
    finally:
        ledger.close()
    status = json.loads(project.cli("status", "--json", "--now", "2026-11-24T12:00:00Z",
                                    check=True).stdout)
    collecting, closed = status["digest"]
    assert collecting["period"] == "2026-W48" and collecting["state"] == "collecting"
    assert closed["period"] == "2026-W47" and closed["state"] == "partial"
    assert closed["recipients"] == {"claimed": 1, "sent": 2}

    ledger = Ledger(settings.database_url)
    try:
        ledger.open_campaign(DeliveryKey(campaign, "*"))
        ledger.finish_campaign(DeliveryKey(campaign, "*"))
    finally:
        ledger.close()
    status = json.loads(project.cli("status", "--json", "--now", "2026-11-24T12:00:00Z",
                                    check=True).stdout)
    assert status["digest"][1]["state"] == "sent"
    assert "sent to 2 subscribers" in status["digest"][1]["reason"]


def test_a_renamed_brief_is_held_not_posted_again(project):
    first = write_brief(project.briefs, "pilot.md", url="https://example.org/story")
    assert project.cli("run", "--once", "--now", NOW).returncode == 0
    assert len(project.outbox()) == 1
    first.rename(project.briefs / "pilot-renamed.md")  # the id comes from the file name

    run = project.cli("run", "--once", "--now", NOW)
    assert len(project.outbox()) == 1  # not posted a second time
    listed = {row["id"]: row for row in
              json.loads(project.cli("list", "--json", "--now", NOW).stdout)}
    held = listed["pilot-renamed"]
    assert held["state"] == "held"
    assert "already went out as brief 'pilot'" in held["reason"]
    assert "id: pilot" in held["reason"] and "repost: true" in held["reason"]
    assert run.returncode == 0

    # A new item that really shares the link says so, and goes out.
    write_brief(project.briefs, "follow-up.md", url="https://example.org/story",
                extra="repost: true\n")
    assert project.cli("run", "--once", "--now", NOW).returncode == 0
    assert len(project.outbox()) == 2


def test_a_sent_post_shows_the_text_it_went_out_with(project):
    path = write_brief(project.briefs, "edited.md", title="The first <title>")
    assert project.cli("run", "--once", "--now", NOW).returncode == 0
    path.write_text(path.read_text().replace("The first <title>", "A later edit"))
    gallery = build_gallery(load_settings(project.config), now=MOMENT)
    (card,) = gallery.entries[0].cards
    assert card.kind == "receipt" and card.state.name == "changed"
    assert "The first <title>" in card.sent_text
    assert "The first &lt;title&gt;" in gallery.html()  # shown as text, escaped


def test_the_preview_banners_a_source_url_linked_only_in_part(project):
    write_brief(project.briefs, "dot.md", url="https://example.org/story.")
    gallery = build_gallery(load_settings(project.config), now=MOMENT)
    texts = [issue.text for entry in gallery.entries for issue in entry.issues]
    assert any("would link only 'https://example.org/story'" in text for text in texts), texts
