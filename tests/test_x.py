"""The X adapter against the fake X API v2: what arrives there, and how failures map."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot.channels import PermanentError, TransientError, UnknownOutcome, load_channel_class
from bot.channels.x import IMAGES
from bot.config import load_settings
from bot.ledger import DeliveryKey, Ledger
from tests.briefs_factory import write_brief
from tests.conftest import ROOT
from tests.contract import key_for, make_brief, make_settings
from tests.fakes.x_api import FakeX
from tests.harness_x import ENV, credentials

ALT = "A noisy test pattern standing in for a chart"
X_MAX_BYTES = IMAGES.max_bytes  # as the X channel declares it


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = credentials()
    for env, arg in ENV.items():
        monkeypatch.setenv(env, values[arg])
    return values


@pytest.fixture
def fake(creds: dict[str, str]):
    with FakeX(**creds) as api:
        yield api


def x_channel(tmp_path: Path, fake: FakeX, **options):
    settings = make_settings(tmp_path, {"x": {"type": "x", "api_base": fake.url, **options}})
    return load_channel_class("x")("x", settings.config.channels["x"], settings)


def hero_brief(tmp_path: Path, big_png: Path, number: int = 1):
    folder = tmp_path / "briefs"
    folder.mkdir(exist_ok=True)
    (folder / "hero.png").write_bytes(big_png.read_bytes())
    return make_brief(folder, number, image="hero.png", image_alt=ALT)


def test_post_carries_fitted_image_alt_text_and_signed_auth(tmp_path, fake, creds, big_png):
    channel = x_channel(tmp_path, fake)
    brief = hero_brief(tmp_path, big_png)
    message = channel.render(brief, key_for(brief, channel))
    receipt = channel.send(message)

    upload, = fake.seen("POST", "/2/media/upload")
    auth = upload.header("authorization") or ""
    assert auth.startswith("OAuth ") and f'oauth_consumer_key="{creds["consumer_key"]}"' in auth
    form = upload.form()
    assert form["media_category"].text == "tweet_image"
    sent = form["media"].data
    assert big_png.stat().st_size > X_MAX_BYTES >= len(sent)
    with Image.open(io.BytesIO(sent)) as im:
        assert im.format in ("JPEG", "PNG") and im.width > 100
    media_id, = fake.media
    metadata, = fake.seen("POST", "/2/media/metadata")
    assert metadata.json() == {"id": media_id, "metadata": {"alt_text": {"text": ALT}}}
    assert fake.media[media_id].alt_text == ALT

    tweet, = fake.tweets
    assert tweet.media_ids == [media_id]
    assert tweet.text == message.text and brief.source_url in tweet.text.split()
    assert receipt.remote_id == tweet.id
    assert receipt.url == f"https://x.com/i/web/status/{tweet.id}"


def test_rate_limit_becomes_a_retry_time_not_a_sleep(tmp_path, fake, big_png):
    channel = x_channel(tmp_path, fake)
    brief = hero_brief(tmp_path, big_png)
    message = channel.render(brief, key_for(brief, channel))
    fake.rate_limit_next(900, path="/2/tweets")
    with pytest.raises(TransientError) as caught:
        channel.send(message)
    assert caught.value.retry_after is not None and 890 <= caught.value.retry_after <= 900
    assert fake.tweets == []
    assert len(fake.seen("POST", "/2/tweets")) == 1  # asked once, did not wait and retry


def test_wrong_secret_is_permanent_and_names_variables_only(tmp_path, fake, creds,
                                                            monkeypatch):
    wrong = "not-the-real-secret-0123456789"
    monkeypatch.setenv("X_API_SECRET", wrong)
    channel = x_channel(tmp_path, fake)
    brief = make_brief(tmp_path / "briefs", 1)
    with pytest.raises(PermanentError) as caught:
        channel.send(channel.render(brief, key_for(brief, channel)))
    text = str(caught.value)
    assert "401" in text
    for name in ENV:
        assert name in text
    for value in [wrong, *creds.values()]:
        assert value not in text
    assert fake.tweets == []


def test_missing_variable_is_named(tmp_path, fake, monkeypatch):
    monkeypatch.delenv("X_ACCESS_TOKEN")
    channel = x_channel(tmp_path, fake, access_token_env="X_ACCESS_TOKEN")
    brief = make_brief(tmp_path / "briefs", 1)
    with pytest.raises(PermanentError, match="X_ACCESS_TOKEN is not set"):
        channel.send(channel.render(brief, key_for(brief, channel)))
    assert fake.requests == []


def test_duplicate_refusal_is_reconciled_not_resent(tmp_path, fake):
    brief = make_brief(tmp_path / "briefs", 1)
    first = x_channel(tmp_path, fake)
    message = first.render(brief, key_for(brief, first))
    sent = first.send(message)
    again = x_channel(tmp_path, fake).send(message)  # a retry after a lost answer
    assert again.remote_id == sent.remote_id and "already posted" in (again.note or "")
    assert len(fake.tweets) == 1
    assert len(fake.seen("POST", "/2/tweets")) == 2  # the second was refused as a duplicate
    timeline, = fake.seen("GET", r"/2/users/\d+/tweets")
    assert "entities" in timeline.query["tweet.fields"][0]


def test_reconcile_matches_the_exact_link_not_a_prefix(tmp_path, fake):
    channel = x_channel(tmp_path, fake)
    folder = tmp_path / "briefs"
    one = make_brief(folder, 1)
    ten = make_brief(folder, 10)  # its link starts with brief 1's link
    channel.send(channel.render(ten, key_for(ten, channel)))
    assert channel.reconcile(channel.render(one, key_for(one, channel))) is None


def test_broken_image_posts_text_alone_with_a_note(tmp_path, fake):
    channel = x_channel(tmp_path, fake)
    brief = make_brief(tmp_path / "briefs", 1, image="missing.png")
    message = channel.render(brief, key_for(brief, channel))
    assert message.fitted_image is None
    assert any("missing.png" in note.text and "hero image left out" in note.text
               for note in message.notes)
    receipt = channel.send(message)
    assert fake.seen("POST", "/2/media/upload") == []
    assert fake.tweets[0].media_ids == []
    assert "missing.png" in (receipt.note or "")


def test_help_and_import_do_not_load_tweepy():
    code = (
        "import sys\n"
        "import bot.channels.x\n"
        "from bot.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED' if 'tweepy' in sys.modules else 'CLEAN')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60, check=True)
    assert result.stdout.strip().splitlines()[-1] == "CLEAN"


def test_refused_credentials_end_dead_in_the_ledger_after_one_request(project, fake):
    write_brief(project.briefs, "one.md", title="A brief for X")
    project.write_config(channels=f'[channels.x]\ntype = "x"\napi_base = "{fake.url}"\n')
    env = {name: "wrong-credential-value-123" for name in ENV}
    result = project.cli("run", "--once", "--now", "2026-11-28T12:00:00Z", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "dead" in result.stdout and "X_API_KEY" in result.stdout
    assert "wrong-credential-value-123" not in result.stdout + result.stderr
    settings = load_settings(project.config)
    ledger = Ledger(settings.database_url, readonly=True)
    try:
        row = ledger.get(DeliveryKey("brief:one", "x"))
    finally:
        ledger.close()
    assert row is not None and row.state == "dead"
    assert len(fake.requests) == 1 and fake.tweets == []
    again = project.cli("run", "--once", "--now", "2026-11-28T12:30:00Z", env=env)
    assert "dead" not in again.stdout  # dead stays dead until `briefbot retry`
    assert len(fake.requests) == 1


def test_lost_answer_then_next_run_records_the_post_once(project, fake, creds):
    """The post went out but its answer was lost: the outcome is unknown (never a blind
    retry), and the next run reconciles it from the timeline: one tweet, recorded as sent."""
    write_brief(project.briefs, "one.md", title="A brief whose answer gets lost")
    project.write_config(channels=f'[channels.x]\ntype = "x"\napi_base = "{fake.url}"\n')
    env = {name: creds[arg] for name, arg in ENV.items()}
    fake.lose_next("POST", "/2/tweets")
    first = project.cli("run", "--once", "--now", "2026-11-28T12:00:00Z", env=env)
    assert "unknown" in first.stdout, first.stdout + first.stderr
    assert len(fake.tweets) == 1
    second = project.cli("run", "--once", "--now", "2026-11-28T14:00:00Z", env=env)
    assert "sent" in second.stdout, second.stdout + second.stderr
    assert len(fake.tweets) == 1
    ledger = Ledger(load_settings(project.config).database_url, readonly=True)
    try:
        row = ledger.get(DeliveryKey("brief:one", "x"))
    finally:
        ledger.close()
    assert row is not None and row.state == "sent" and row.remote_id == fake.tweets[0].id


@pytest.mark.parametrize("status", [400, 503])
def test_alt_text_failure_posts_the_image_without_it_and_says_so(tmp_path, fake, big_png,
                                                                  status):
    channel = x_channel(tmp_path, fake)
    brief = hero_brief(tmp_path, big_png)
    fake.fail_next(status, path="/2/media/metadata",
                   body={"title": "Error", "detail": "metadata refused", "status": status})
    receipt = channel.send(channel.render(brief, key_for(brief, channel)))
    tweet, = fake.tweets
    assert len(tweet.media_ids) == 1
    assert "without alt text" in (receipt.note or "")


def test_very_wide_image_is_capped_at_8192_px_a_side(tmp_path, fake):
    folder = tmp_path / "briefs"
    folder.mkdir()
    Image.new("RGB", (12000, 300), (20, 90, 160)).save(folder / "wide.png")
    brief = make_brief(folder, 1, image="wide.png", image_alt=ALT)
    channel = x_channel(tmp_path, fake)
    message = channel.render(brief, key_for(brief, channel))
    image = message.fitted_image
    assert (image.width, image.height) == (8192, 204)
    channel.send(message)
    assert fake.tweets[0].media_ids


def test_lost_answer_settled_by_reconcile_after_xs_duplicate_window(project, fake, creds):
    """Past X's duplicate window a resend would be a second tweet: the next run must find the
    first on the timeline instead (the engine reconciles an unknown outcome before resending)."""
    write_brief(project.briefs, "one.md", title="A brief whose answer gets lost for long")
    project.write_config(channels=f'[channels.x]\ntype = "x"\napi_base = "{fake.url}"\n')
    env = {name: creds[arg] for name, arg in ENV.items()}
    fake.lose_next("POST", "/2/tweets")
    first = project.cli("run", "--once", "--now", "2026-11-28T12:00:00Z", env=env)
    assert "unknown" in first.stdout, first.stdout + first.stderr
    fake.clock.advance(fake.duplicate_window + 60)
    second = project.cli("run", "--once", "--now", "2026-11-30T12:00:00Z", env=env)
    assert "sent" in second.stdout, second.stdout + second.stderr
    assert len(fake.tweets) == 1 and len(fake.seen("POST", "/2/tweets")) == 1


def test_duplicate_text_is_taken_again_after_the_window(tmp_path, fake):
    brief = make_brief(tmp_path / "briefs", 1)
    channel = x_channel(tmp_path, fake)
    message = channel.render(brief, key_for(brief, channel))
    channel.send(message)
    fake.clock.advance(fake.duplicate_window + 1)
    x_channel(tmp_path, fake).send(message)
    assert len(fake.tweets) == 2  # why reconcile, not X, must settle a late retry


@pytest.mark.parametrize(("status", "kind"), [(500, UnknownOutcome), (502, UnknownOutcome),
                                              (503, TransientError)])
def test_server_errors_after_the_post_map_through_the_http_base(tmp_path, fake, status, kind):
    """One mapping for every web API: a 5xx after the write may have posted (503 says not)."""
    channel = x_channel(tmp_path, fake)
    brief = make_brief(tmp_path / "briefs", 1)
    fake.fail_next(status, path="/2/tweets",
                   body={"title": "Error", "type": "about:blank", "status": status})
    with pytest.raises(kind) as caught:
        channel.send(channel.render(brief, key_for(brief, channel)))
    assert type(caught.value) is kind and str(status) in str(caught.value)


def test_media_outage_is_a_plain_retry_not_an_unknown_outcome(tmp_path, fake, big_png):
    channel = x_channel(tmp_path, fake)
    brief = hero_brief(tmp_path, big_png)
    fake.fail_next(500, path="/2/media/upload", body={"title": "Error", "status": 500})
    with pytest.raises(TransientError) as caught:
        channel.send(channel.render(brief, key_for(brief, channel)))
    assert not isinstance(caught.value, UnknownOutcome)
    assert fake.seen("POST", "/2/tweets") == []
