"""Proves the local PDS helper works: account, session, post with an image, read back."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image

from tests.servers.pds import (
    PDS_SKIP_REASON,
    PdsServer,
    XrpcError,
    create_account,
    create_session,
    pds_available,
    start_pds,
    xrpc,
)

pytestmark = pytest.mark.skipif(not pds_available(), reason=PDS_SKIP_REASON)

POST = "app.bsky.feed.post"


@pytest.fixture(scope="module")
def pds() -> Iterator[PdsServer]:
    with start_pds() as server:
        yield server


def _now() -> str:
    """createdAt must carry a timezone: a naive ISO datetime is rejected by the lexicon."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


def test_post_with_image_round_trip(pds: PdsServer) -> None:
    account = create_account(pds.url, "alice.test", "correct-horse")
    assert account["handle"] == "alice.test"
    assert account["did"].startswith("did:plc:")

    session = create_session(pds.url, "alice.test", "correct-horse")
    token, did = session["accessJwt"], session["did"]
    assert did == account["did"]

    image = _jpeg()
    blob = xrpc(
        pds.url,
        "com.atproto.repo.uploadBlob",
        token=token,
        data=image,
        content_type="image/jpeg",
    )["blob"]
    assert blob["$type"] == "blob"
    assert blob["mimeType"] == "image/jpeg"
    assert blob["size"] == len(image)

    record = {
        "$type": POST,
        "text": "Hello from briefbot",
        "createdAt": _now(),
        "langs": ["en"],
        "embed": {
            "$type": "app.bsky.embed.images",
            "images": [
                {
                    "alt": "A blue rectangle",
                    "image": blob,
                    "aspectRatio": {"width": 64, "height": 48},
                }
            ],
        },
    }
    created = xrpc(
        pds.url,
        "com.atproto.repo.createRecord",
        token=token,
        body={"repo": did, "collection": POST, "record": record},
    )
    assert created["validationStatus"] == "valid"
    repo, collection, rkey = created["uri"].removeprefix("at://").split("/")
    assert (repo, collection) == (did, POST)

    got = xrpc(
        pds.url,
        "com.atproto.repo.getRecord",
        params={"repo": did, "collection": POST, "rkey": rkey},
    )
    assert got["uri"] == created["uri"]
    assert got["cid"] == created["cid"]
    assert got["value"]["text"] == "Hello from briefbot"
    assert got["value"]["embed"]["images"][0]["image"]["ref"] == blob["ref"]

    back = _get_blob(pds, did, blob["ref"]["$link"])
    assert back == image


def _get_blob(pds: PdsServer, did: str, cid: str) -> bytes:
    """getBlob answers raw bytes, not JSON, so it bypasses the JSON helper."""
    resp = requests.get(
        f"{pds.url}/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": cid}, timeout=10
    )
    resp.raise_for_status()
    return resp.content


def test_errors_are_xrpc_shaped(pds: PdsServer) -> None:
    create_account(pds.url, "bob.test", "pw-bob-123")
    with pytest.raises(XrpcError) as err:
        create_session(pds.url, "bob.test", "wrong")
    assert (err.value.status, err.value.error) == (401, "AuthenticationRequired")

    token = create_session(pds.url, "bob.test", "pw-bob-123")["accessJwt"]
    with pytest.raises(XrpcError) as err:
        xrpc(
            pds.url,
            "com.atproto.repo.createRecord",
            token=token,
            body={"repo": "bob.test", "collection": POST, "record": {"$type": POST, "text": "x"}},
        )
    assert (err.value.status, err.value.error) == (400, "InvalidRequest")
    assert "createdAt" in err.value.message

    with pytest.raises(XrpcError) as err:
        xrpc(
            pds.url,
            "com.atproto.repo.getRecord",
            params={"repo": "bob.test", "collection": POST, "rkey": "3jzfcijpj2z2a"},
        )
    assert (err.value.status, err.value.error) == (400, "RecordNotFound")

    with pytest.raises(XrpcError) as err:
        create_account(pds.url, "bob.test", "again", email="bob2@example.com")
    assert "already taken" in err.value.message


def test_invalid_handle_is_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match=".test"):
        create_account("http://127.0.0.1:9", "ab.test", "pw")


def test_stop_frees_the_port() -> None:
    with start_pds() as server:
        process = server.process
        assert process.poll() is None
    assert process.returncode == 0  # clean SIGTERM shutdown, not a kill
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=1):
        pass
