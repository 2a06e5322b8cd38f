"""The webhook adapter against a fake receiver: the three shapes, signing, failures."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from bot.channels import PermanentError, TransientError, load_channel_class
from bot.config import ConfigError
from tests.contract import key_for, make_brief, make_settings
from tests.fakes.webhook_api import FakeWebhook


@pytest.fixture
def fake():
    with FakeWebhook() as api:
        yield api


def hook(tmp_path: Path, **options):
    settings = make_settings(tmp_path, {"hook": {"type": "webhook", **options}})
    return load_channel_class("webhook")("hook", settings.config.channels["hook"], settings)


def send_one(channel, tmp_path: Path, number: int = 1, **brief_options):
    brief = make_brief(tmp_path / "briefs", number, **brief_options)
    message = channel.render(brief, key_for(brief, channel))
    return brief, message, channel.send(message)


def test_generic_payload_is_signed_and_keyed(tmp_path, fake, monkeypatch):
    signing = secrets.token_hex(20)
    monkeypatch.setenv("HOOK_SECRET", signing)
    channel = hook(tmp_path, url=f"{fake.url}/hook/briefs", secret_env="HOOK_SECRET")
    brief, message, receipt = send_one(channel, tmp_path,
                                       image="https://cdn.example.org/chart.png")
    delivery, = fake.deliveries
    assert delivery.signed_with(signing)
    assert not delivery.signed_with(signing + "x")
    assert delivery.idempotency_key == message.idempotency_key == receipt.remote_id
    assert delivery.payload == {
        "text": message.text, "link": brief.source_url, "title": brief.title,
        "summary": brief.summary, "image": "https://cdn.example.org/chart.png",
        "image_alt": brief.image_alt, "brief": brief.id,
        "idempotency_key": message.idempotency_key,
    }
    assert brief.source_url in message.text.split()


def test_local_hero_image_is_left_out_with_a_note(tmp_path, fake):
    channel = hook(tmp_path, url=f"{fake.url}/hook/briefs")
    _, message, _ = send_one(channel, tmp_path, image="hero.png")
    assert fake.deliveries[0].payload["image"] is None
    assert any("local file" in note.text for note in message.notes)


def test_slack_shape(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("SLACK_HOOK", f"{fake.url}/services/T000/B000/{secrets.token_hex(12)}")
    channel = hook(tmp_path, url_env="SLACK_HOOK", shape="slack")
    brief, message, receipt = send_one(channel, tmp_path,
                                       image="https://cdn.example.org/chart.png")
    payload = fake.deliveries[0].payload
    assert payload["text"] == message.text
    section, image = payload["blocks"]
    assert section["type"] == "section" and brief.source_url in section["text"]["text"]
    assert image == {"type": "image", "image_url": "https://cdn.example.org/chart.png",
                     "alt_text": brief.image_alt}
    assert receipt.remote_id == message.idempotency_key  # Slack answers a bare "ok"


def test_discord_shape_gets_the_message_id(tmp_path, fake):
    channel = hook(tmp_path, url=f"{fake.url}/api/webhooks/123/abc", shape="discord")
    brief, message, receipt = send_one(channel, tmp_path)
    delivery, = fake.deliveries
    assert delivery.request.query["wait"] == ["true"]
    assert delivery.payload["content"] == message.text
    embed, = delivery.payload["embeds"]
    assert embed["url"] == brief.source_url and embed["title"] == brief.title
    assert delivery.payload["allowed_mentions"] == {"parse": []}
    assert receipt.remote_id and receipt.remote_id != message.idempotency_key


def test_body_is_exactly_what_was_signed(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "a-signing-secret-value")
    channel = hook(tmp_path, url=f"{fake.url}/hook/x", secret_env="HOOK_SECRET")
    send_one(channel, tmp_path)
    body = fake.deliveries[0].request.body
    assert json.loads(body) == fake.deliveries[0].payload
    assert fake.deliveries[0].signed_with("a-signing-secret-value")


@pytest.mark.parametrize(("headers", "body", "expected"), [
    ({"Retry-After": "120"}, {"message": "slow down"}, 120.0),
    ({}, {"message": "You are being rate limited.", "retry_after": 2.5, "global": False}, 2.5),
])
def test_rate_limit_honours_retry_after(tmp_path, fake, headers, body, expected):
    channel = hook(tmp_path, url=f"{fake.url}/hook/x")
    fake.fail_next(429, headers=headers, body=body)
    with pytest.raises(TransientError) as caught:
        send_one(channel, tmp_path)
    assert caught.value.retry_after == pytest.approx(expected)
    assert fake.deliveries == []


def test_server_error_is_transient(tmp_path, fake):
    channel = hook(tmp_path, url=f"{fake.url}/hook/x")
    fake.fail_next(503, body="down for maintenance")
    with pytest.raises(TransientError, match="503"):
        send_one(channel, tmp_path)


def test_client_error_is_permanent_and_keeps_a_secret_url_out(tmp_path, fake, monkeypatch):
    token = secrets.token_hex(16)
    monkeypatch.setenv("TEAM_HOOK", f"{fake.url}/services/T1/B1/{token}")
    channel = hook(tmp_path, url_env="TEAM_HOOK", shape="slack")
    fake.fail_next(404, body="no_service")
    with pytest.raises(PermanentError) as caught:
        send_one(channel, tmp_path)
    text = str(caught.value)
    assert "404" in text and "no_service" in text and "TEAM_HOOK" in text
    assert token not in text


def test_unreachable_receiver_is_transient_without_the_url(tmp_path, fake, monkeypatch):
    token = secrets.token_hex(16)
    monkeypatch.setenv("TEAM_HOOK", f"{fake.url}/hook/{token}")
    channel = hook(tmp_path, url_env="TEAM_HOOK")
    fake.stop()
    with pytest.raises(TransientError) as caught:
        send_one(channel, tmp_path)
    assert "TEAM_HOOK" in str(caught.value) and token not in str(caught.value)


@pytest.mark.parametrize(("options", "message"), [
    ({}, "set either `url` or `url_env`"),
    ({"url": "http://127.0.0.1:9/x", "url_env": "X"}, "set either `url` or `url_env`"),
    ({"url": "http://127.0.0.1:9/x", "shape": "teams"}, r"channels\.hook\.shape"),
])
def test_configuration_errors_say_what_to_fix(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        hook(tmp_path, **options)
