"""The one mapping of HTTP answers to delivery errors (bot/channels/http.py)."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from requests.structures import CaseInsensitiveDict

from bot.channels.http import HttpClient, error_for, retry_after
from bot.message import PermanentError, TransientError, UnknownOutcome


def test_retry_after_reads_every_form_the_services_use():
    in_a_minute = datetime.now(UTC) + timedelta(seconds=60)
    forms = [
        (CaseInsensitiveDict({"Retry-After": "45"}), None, 45),
        (CaseInsensitiveDict({"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}), None, None),
        (CaseInsensitiveDict({"x-rate-limit-reset": str(int(time.time()) + 120)}), None, 120),
        (CaseInsensitiveDict({"X-RateLimit-Reset": in_a_minute.isoformat()}), None, 60),
        (CaseInsensitiveDict({"ratelimit-reset": str(int(time.time()) + 90)}), None, 90),  # PDS
        (CaseInsensitiveDict(), {"retry_after": 3.5}, 3.5),  # Discord
        (CaseInsensitiveDict(), {"ok": False, "parameters": {"retry_after": 37}}, 37),  # Telegram
        (CaseInsensitiveDict(), {"error": "x"}, None),
    ]
    for headers, body, expected in forms:
        found = retry_after(headers, body)
        if expected is None and "Retry-After" in headers:
            assert found is not None and found > 10**6  # far in the future
        elif expected is None:
            assert found is None
        else:
            assert found == pytest.approx(expected, abs=3)


@pytest.mark.parametrize(("status", "method", "kind"), [
    (429, "POST", TransientError), (408, "POST", TransientError),
    (503, "POST", TransientError), (500, "GET", TransientError),
    (500, "POST", UnknownOutcome), (502, "POST", UnknownOutcome), (504, "PUT", UnknownOutcome),
    (401, "POST", PermanentError), (403, "POST", PermanentError), (422, "POST", PermanentError),
])
def test_each_answer_means_one_thing_for_every_network(status, method, kind):
    error = error_for(status, "text", where=f"it answered {status}", method=method,
                      credentials="check TOKEN", refused="check chat_id")
    assert type(error) is kind
    if status in (401, 403):
        assert "check TOKEN" in str(error)
    elif kind is PermanentError:
        assert "check chat_id" in str(error)


def test_a_repeatable_write_is_sent_again_after_a_5xx_or_a_lost_answer():
    """An idempotent write (Bluesky's putRecord under our record key) cannot land twice, so
    what would be an unknown outcome for a plain POST is a retry."""
    assert type(error_for(502, "bad gateway", where="w", method="POST")) is UnknownOutcome
    assert type(error_for(502, "bad gateway", where="w", method="POST",
                          repeatable=True)) is TransientError


def test_a_lost_answer_is_unknown_unless_the_request_is_repeatable():
    """A server that reads the request and closes without answering, on loopback."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def swallow() -> None:
        for _ in range(2):
            conn, _addr = listener.accept()
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    client = HttpClient("the far end", timeout=5)
    url = f"http://127.0.0.1:{port}/post"
    try:
        with pytest.raises(UnknownOutcome):
            client.call("POST", url, doing="posting", data=b"x")
        with pytest.raises(TransientError):
            client.call("POST", url, doing="posting", data=b"x", repeatable=True)
    finally:
        client.close()
        thread.join(timeout=5)
        listener.close()
