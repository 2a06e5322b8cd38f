"""The Mastodon adapter against the fake Mastodon server: instance limits, media processing,
idempotency, and how failures map."""

from __future__ import annotations

import io
import secrets
from pathlib import Path

import pytest
from PIL import Image

from bot.channels import PermanentError, TransientError, load_channel_class
from bot.config import ConfigError, load_settings
from bot.ledger import DeliveryKey, Ledger
from tests.briefs_factory import write_brief
from tests.contract import key_for, make_brief, make_settings
from tests.fakes.mastodon_api import NOT_PROCESSED, FakeMastodon

ALT = "A noisy test pattern standing in for a chart"
IMAGE_LIMIT = 2_000_000


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    value = secrets.token_urlsafe(32)
    monkeypatch.setenv("MASTODON_TOKEN", value)
    return value


@pytest.fixture
def fake(token: str):
    with FakeMastodon(token=token, image_size_limit=IMAGE_LIMIT) as api:
        yield api


def masto(tmp_path: Path, fake: FakeMastodon, **options):
    settings = make_settings(tmp_path, {"masto": {
        "type": "mastodon", "instance": fake.url, "media_poll_interval": 0.01, **options}})
    return load_channel_class("mastodon")("masto", settings.config.channels["masto"], settings)


def hero_brief(tmp_path: Path, big_png: Path, number: int = 1):
    folder = tmp_path / "briefs"
    folder.mkdir(exist_ok=True)
    (folder / "hero.png").write_bytes(big_png.read_bytes())
    return make_brief(folder, number, image="hero.png", image_alt=ALT)


def test_instance_limits_drive_the_render_and_are_read_once(tmp_path, token):
    with FakeMastodon(token=token, max_characters=90) as fake:
        channel = masto(tmp_path, fake)
        folder = tmp_path / "briefs"
        messages = [channel.render(b, key_for(b, channel))
                    for b in (make_brief(folder, 1), make_brief(folder, 2))]
        assert len(fake.seen("GET", "/api/v2/instance")) == 1
        for message in messages:
            assert message.limit == 90 and message.length is not None
            assert fake.length(message.text) <= 90
        channel.send(messages[0])  # the fake enforces its own limit too
        assert len(fake.statuses) == 1


def test_status_carries_fitted_image_alt_text_and_idempotency_key(tmp_path, fake, token,
                                                                  big_png):
    channel = masto(tmp_path, fake, visibility="unlisted")
    brief = hero_brief(tmp_path, big_png)
    message = channel.render(brief, key_for(brief, channel))
    receipt = channel.send(message)

    upload, = fake.seen("POST", "/api/v2/media")
    assert upload.header("authorization") == f"Bearer {token}"
    form = upload.form()
    assert form["description"].text == ALT
    assert big_png.stat().st_size > IMAGE_LIMIT >= len(form["file"].data)
    with Image.open(io.BytesIO(form["file"].data)) as im:
        assert im.width > 100
    media_id, = fake.media
    post, = fake.seen("POST", "/api/v1/statuses")
    assert post.header("idempotency-key") == message.idempotency_key
    assert post.json()["media_ids"] == [media_id]
    status, = fake.statuses
    assert status.visibility == "unlisted" and status.text == message.text
    assert receipt.remote_id == status.id and receipt.url == f"{fake.url}/@briefbot/{status.id}"


def test_waits_for_asynchronous_media_processing(tmp_path, token):
    with FakeMastodon(token=token, media_polls=3) as fake:
        channel = masto(tmp_path, fake)
        brief = make_brief(tmp_path / "briefs", 1, image="hero.png")
        Image.new("RGB", (64, 48)).save(tmp_path / "briefs" / "hero.png")
        channel.send(channel.render(brief, key_for(brief, channel)))
        media_id, = fake.media
        assert len(fake.seen("GET", f"/api/v1/media/{media_id}")) == 3
        assert fake.statuses[0].media_ids == [media_id]


def test_unprocessed_media_refusal_is_retried_with_the_same_key(tmp_path, fake):
    channel = masto(tmp_path, fake)
    brief = make_brief(tmp_path / "briefs", 1)
    message = channel.render(brief, key_for(brief, channel))
    fake.fail_next(422, times=2, path="/api/v1/statuses", body={"error": NOT_PROCESSED})
    channel.send(message)
    posts = fake.seen("POST", "/api/v1/statuses")
    assert len(posts) == 3
    assert {p.header("idempotency-key") for p in posts} == {message.idempotency_key}
    assert len(fake.statuses) == 1


def test_unprocessed_media_is_never_dropped(tmp_path, fake):
    channel = masto(tmp_path, fake, media_wait=0.2)
    brief = make_brief(tmp_path / "briefs", 1)
    message = channel.render(brief, key_for(brief, channel))
    fake.fail_next(422, times=1000, path="/api/v1/statuses", body={"error": NOT_PROCESSED})
    with pytest.raises(TransientError, match="still processing"):
        channel.send(message)
    assert fake.statuses == []
    assert 2 <= len(fake.seen("POST", "/api/v1/statuses")) < 1000


def test_rate_limit_reset_becomes_the_retry_time(tmp_path, fake):
    channel = masto(tmp_path, fake)
    brief = make_brief(tmp_path / "briefs", 1)
    message = channel.render(brief, key_for(brief, channel))
    fake.rate_limit_next(600, path="/api/v1/statuses")
    with pytest.raises(TransientError) as caught:
        channel.send(message)
    assert caught.value.retry_after is not None and 590 <= caught.value.retry_after <= 600


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(tmp_path, fake, status):
    channel = masto(tmp_path, fake)
    brief = make_brief(tmp_path / "briefs", 1)
    message = channel.render(brief, key_for(brief, channel))
    fake.fail_next(status, path="/api/v1/statuses", body={"error": "oops"})
    with pytest.raises(TransientError, match=str(status)):
        channel.send(message)


def test_validation_refusal_is_permanent_with_the_servers_words(tmp_path, fake):
    channel = masto(tmp_path, fake)
    brief = make_brief(tmp_path / "briefs", 1)
    message = channel.render(brief, key_for(brief, channel))
    words = "Validation failed: Text character limit of 500 exceeded"
    fake.fail_next(422, path="/api/v1/statuses", body={"error": words})
    with pytest.raises(PermanentError, match=words):
        channel.send(message)


def test_unreachable_instance_renders_to_defaults_with_a_note(tmp_path, fake):
    channel = masto(tmp_path, fake)
    fake.stop()
    brief = make_brief(tmp_path / "briefs", 1)
    message = channel.render(brief, key_for(brief, channel))
    assert message.limit == 500
    assert any("could not read the limits" in note.text for note in message.notes)
    with pytest.raises(TransientError, match="did not answer"):
        channel.send(message)


def test_instance_option_is_required(tmp_path):
    settings = make_settings(tmp_path, {"masto": {"type": "mastodon"}})
    with pytest.raises(ConfigError, match=r"channels\.masto\.instance"):
        load_channel_class("mastodon")("masto", settings.config.channels["masto"], settings)


def test_refused_token_ends_dead_after_one_post(project, fake, token):
    write_brief(project.briefs, "one.md", title="A brief for Mastodon")
    project.write_config(channels=f'[channels.masto]\ntype = "mastodon"\n'
                                  f'instance = "{fake.url}"\ntoken_env = "MY_MASTO_TOKEN"\n')
    env = {"MY_MASTO_TOKEN": "revoked-token-value-123"}
    result = project.cli("run", "--once", "--now", "2026-11-28T12:00:00Z", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "dead" in result.stdout and "MY_MASTO_TOKEN" in result.stdout
    assert "revoked-token-value-123" not in result.stdout + result.stderr
    ledger = Ledger(load_settings(project.config).database_url, readonly=True)
    try:
        row = ledger.get(DeliveryKey("brief:one", "masto"))
    finally:
        ledger.close()
    assert row is not None and row.state == "dead"
    assert len(fake.writes()) == 1 and fake.statuses == []


def test_a_briefs_own_language_wins_over_the_channels(tmp_path, fake):
    """`lang:` in the front matter sets the status `language`; the channel's is the default."""
    from zoneinfo import ZoneInfo

    from bot.briefs import BriefReader

    path = make_brief(tmp_path / "briefs", 1).path
    path.write_text(path.read_text(encoding="utf-8").replace(
        "status: published\n", "status: published\nlang: hi\n"), encoding="utf-8")
    brief, _ = BriefReader(tz=ZoneInfo("UTC")).read(path)
    channel = masto(tmp_path, fake, language="en")
    channel.send(channel.render(brief, key_for(brief, channel)))
    posted, = fake.seen("POST", "/api/v1/statuses")
    assert posted.json()["language"] == "hi"


def small_hero_brief(tmp_path: Path):
    folder = tmp_path / "briefs"
    folder.mkdir(exist_ok=True)
    Image.new("RGB", (64, 48), (10, 80, 160)).save(folder / "hero.png")
    return make_brief(folder, 1, image="hero.png", image_alt=ALT)


def test_unprocessed_media_is_told_by_its_state_in_any_language(tmp_path, token):
    """Mastodon localises its 422 text; the adapter asks the media's state instead (206)."""
    with FakeMastodon(token=token, media_polls=1000, locale="fr") as fake:
        channel = masto(tmp_path, fake, media_wait=0.2)
        brief = small_hero_brief(tmp_path)
        with pytest.raises(TransientError, match="still processing"):
            channel.send(channel.render(brief, key_for(brief, channel)))
        assert fake.statuses == []
        assert fake.seen("POST", "/api/v1/statuses")  # refused in French, then asked again
        media_id, = fake.media
        assert len(fake.seen("GET", f"/api/v1/media/{media_id}")) >= 2


def test_refusal_with_processed_media_stays_permanent(tmp_path, fake):
    channel = masto(tmp_path, fake)
    brief = small_hero_brief(tmp_path)
    message = channel.render(brief, key_for(brief, channel))
    fake.fail_next(422, path="/api/v1/statuses", body={"error": "Validierung fehlgeschlagen"})
    with pytest.raises(PermanentError, match="Validierung fehlgeschlagen"):
        channel.send(message)
    media_id, = fake.media
    assert fake.seen("GET", f"/api/v1/media/{media_id}")  # it asked, the media was ready


def test_failed_media_processing_posts_without_the_image(tmp_path, token):
    """A 422 from `GET /api/v1/media/:id` means processing failed: post without the image."""
    with FakeMastodon(token=token, media_polls=1, fail_processing=True) as fake:
        channel = masto(tmp_path, fake)
        brief = small_hero_brief(tmp_path)
        receipt = channel.send(channel.render(brief, key_for(brief, channel)))
        status, = fake.statuses
        assert status.media_ids == []
        assert "posted without its image" in (receipt.note or "")
        assert "Error processing" in (receipt.note or "")


def test_idempotency_key_is_forgotten_after_an_hour_and_reconcile_finds_the_post(tmp_path,
                                                                                fake):
    channel = masto(tmp_path, fake)
    brief = make_brief(tmp_path / "briefs", 1)
    message = channel.render(brief, key_for(brief, channel))
    first = channel.send(message)
    fake.clock.advance(59 * 60)
    assert masto(tmp_path, fake).send(message).remote_id == first.remote_id
    fake.clock.advance(2 * 60)  # past Mastodon's hour
    assert masto(tmp_path, fake).reconcile(message).remote_id == first.remote_id
    assert len(fake.statuses) == 1
