"""The contract every channel adapter keeps: one suite, run against each adapter.

A *harness* connects the suite to one adapter and its far end (a fake API server on loopback,
a real local server, a folder). `tests/test_contract.py` runs every `check_*` function below
against every harness it knows. To put a new adapter under contract, write
`tests/harness_<name>.py` with a generator function

    def open_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
        ...start or reset the far end (use request.getfixturevalue(...) for session servers)...
        yield SomeHarness(...)
        ...tear down...

and add `<name>` to `HARNESSES` in `tests/test_contract.py`. The harness object is:

    class Harness(Protocol):
        name: str              # the channel type, e.g. "x"
        secrets: list[str]     # every secret value handed to the adapter (through environment
                               # variables); none may appear in a log record, an error message
                               # (including chained causes), a message text or a receipt
        idempotent: bool       # sending the same Message again leaves still one post at the far
                               # end (and returns the same remote id); False: a second post
        reconciles: bool       # reconcile() can settle an unknown outcome: a Receipt if the post
                               # is there, None if it certainly is not; False: it raises
                               # CannotReconcile and the channel's `unknown_policy` decides
        receipt_urls: bool     # receipts carry a URL of the post
        permanent_hint: str    # a word the PermanentError of fail_next("permanent") must contain
                               # so the user knows what to fix (e.g. the env variable to check)

        def channel(self) -> Channel
            # a NEW adapter instance (as after a restart), configured and pointed at the far end;
            # fail_next/lose_next_response also apply to instances created before the call
        def brief(self) -> Brief
            # a NEW publishable brief (own id and source_url) with a hero image the far end
            # accepts
        def posts(self) -> list[dict]
            # what the far end holds as posted, oldest first; each {"id": <Receipt.remote_id>,
            # "text": <post text as received>, "links": [<URLs carried outside the text>]}
            # ("links" optional: link facets, embeds, ...); a post "contains the link" when
            # the link is a whitespace-separated word of "text" or an item of "links"
        def fail_next(self, kind: str) -> float | None
            # "transient": the next send fails as the network signals a rate limit or an outage
            #   (429 with a reset time, or 503); returns the delay in seconds the far end
            #   announced (the error's retry_after must match within 5 s), or None if none
            # "permanent": the next send fails for good (401 bad credentials, or the network's
            #   refusal); returns None
            # a far end that cannot fail on demand: pytest.skip("why")
        def lose_next_response(self) -> None
            # the far end performs the next post but the client never gets the answer (the
            # connection closes); pytest.skip("why") if the far end cannot do that

    Optional, for a far end whose duplicate protection lasts only a while (Mastodon keeps an
    Idempotency-Key an hour; X refuses a repeated text only for a time):

        def pass_dedup_window(self) -> None
            # move the far end's clock past that window (never sleep): from now on it takes
            # the same message again as a new post

The checks use only this protocol and the `Channel` interface, never adapter internals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from bot.briefs import Brief
from bot.channels import (
    CannotReconcile,
    Channel,
    ChannelError,
    Message,
    PermanentError,
    Receipt,
    TransientError,
)
from bot.config import Settings, parse_config
from bot.ledger import DeliveryKey
from tests.briefs_factory import publishable, write_brief


class Harness(Protocol):
    name: str
    secrets: list[str]
    idempotent: bool
    reconciles: bool
    receipt_urls: bool
    permanent_hint: str

    def channel(self) -> Channel: ...
    def brief(self) -> Brief: ...
    def posts(self) -> list[dict[str, Any]]: ...
    def fail_next(self, kind: str) -> float | None: ...
    def lose_next_response(self) -> None: ...


# -- helpers for harness writers ------------------------------------------------------------


def make_settings(root: Path, channels: dict[str, dict[str, Any]],
                  images: dict[str, Any] | None = None) -> Settings:
    """Settings rooted at `root` (state in `root/state`), with the given channel tables (and
    `images` table: a hero image on a loopback test server needs its `allow_hosts`)."""
    root.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"state": {"dir": "state"}, "channels": channels}
    if images is not None:
        data["images"] = images
    config = parse_config(data, "harness")
    return Settings(config, root / "config.toml")


def make_brief(folder: Path, number: int, *, image: str | None = None,
               image_alt: str = "A chart of the results", host: str = "example.org") -> Brief:
    """Write and read a publishable brief; `image` is a path relative to `folder` or a URL."""
    path = write_brief(folder, f"contract-{number}.md",
                       title=f"Contract brief number {number} about a result",
                       url=f"https://{host}/news/contract-{number}", id=f"contract-{number}",
                       tags=["evaluation"], image=image, image_alt=image_alt if image else None)
    return publishable(path, tz="UTC")


def small_png(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A small real PNG, for a hero image every far end accepts."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (30, 120, 200)).save(path, "PNG")
    return path


class BriefMaker:
    """Issues a new publishable brief, with a small PNG hero image, on every call."""

    def __init__(self, folder: Path, *, host: str = "example.org"):
        self.folder = folder
        self.host = host
        self.count = 0
        small_png(folder / "hero.png")

    def __call__(self) -> Brief:
        self.count += 1
        return make_brief(self.folder, self.count, image="hero.png", host=self.host)


def key_for(brief: Brief, channel: Channel) -> DeliveryKey:
    return DeliveryKey(f"brief:{brief.id}", channel.name)


def errors_in_chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every cause or context behind it: all of it reaches a traceback."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _posted_with_link(harness: Harness, message: Message) -> list[dict[str, Any]]:
    assert message.link
    return [p for p in harness.posts()
            if message.link in p["text"].split() or message.link in p.get("links", [])]


def _render(harness: Harness, channel: Channel) -> Message:
    brief = harness.brief()
    return channel.render(brief, key_for(brief, channel))


# -- the checks -----------------------------------------------------------------------------


def check_render_and_send(harness: Harness) -> None:
    channel = harness.channel()
    brief = harness.brief()
    key = key_for(brief, channel)
    message = channel.render(brief, key)
    assert message.kind == "post" and message.key == key
    assert message.link and brief.source_url and message.link.startswith(brief.source_url)
    if message.length is not None and message.limit is not None:
        assert message.length <= message.limit
    assert harness.posts() == []

    receipt = channel.send(message)

    assert isinstance(receipt, Receipt) and receipt.remote_id
    if harness.receipt_urls:
        assert receipt.url and receipt.url.split(":", 1)[0] in ("https", "http", "file")
    posts = harness.posts()
    assert [p["id"] for p in posts] == [receipt.remote_id]
    assert _posted_with_link(harness, message) == posts


def check_resend_same_key(harness: Harness) -> None:
    message = _render(harness, harness.channel())
    first = harness.channel().send(message)
    again = harness.channel()
    if harness.idempotent:
        second = again.send(message)
        assert second.remote_id == first.remote_id
        assert [p["id"] for p in harness.posts()] == [first.remote_id]
    else:
        again.send(message)
        assert len(_posted_with_link(harness, message)) == 2, "declared not idempotent"
    if harness.reconciles:
        found = harness.channel().reconcile(message)
        assert found is not None and found.remote_id == first.remote_id
    else:
        with pytest.raises(CannotReconcile):
            harness.channel().reconcile(message)


def check_reconcile_after_crash(harness: Harness) -> None:
    """Sent, then the process died before recording the receipt: a new process reconciles."""
    sent = harness.channel().send(_render(harness, harness.channel()))
    message = _render(harness, harness.channel())
    harness.channel().send(message)  # the crash: this receipt is never recorded
    restarted = harness.channel()
    if harness.reconciles:
        found = restarted.reconcile(message)
        assert found is not None
        matching = _posted_with_link(harness, message)
        assert [p["id"] for p in matching] == [found.remote_id] != [sent.remote_id]
    else:
        with pytest.raises(CannotReconcile):
            restarted.reconcile(message)


def check_reconcile_when_nothing_went_out(harness: Harness) -> None:
    channel = harness.channel()
    harness.channel().send(_render(harness, channel))  # an unrelated post is there
    message = _render(harness, channel)
    if harness.reconciles:
        assert harness.channel().reconcile(message) is None
    else:
        with pytest.raises(CannotReconcile):
            harness.channel().reconcile(message)
    assert _posted_with_link(harness, message) == []


def check_transient_error(harness: Harness) -> None:
    channel = harness.channel()
    message = _render(harness, channel)
    announced = harness.fail_next("transient")
    with pytest.raises(TransientError) as caught:
        channel.send(message)
    if announced is not None:
        assert caught.value.retry_after is not None
        assert abs(caught.value.retry_after - announced) <= 5
    assert _posted_with_link(harness, message) == []
    receipt = channel.send(message)  # the retry goes through
    assert [p["id"] for p in _posted_with_link(harness, message)] == [receipt.remote_id]


def check_permanent_error(harness: Harness) -> None:
    channel = harness.channel()
    message = _render(harness, channel)
    harness.fail_next("permanent")
    with pytest.raises(PermanentError) as caught:
        channel.send(message)
    assert harness.permanent_hint in str(caught.value)
    assert _posted_with_link(harness, message) == []


def check_lost_response(harness: Harness) -> None:
    """The post went out but its answer was lost: not permanent, and reconcile can settle it."""
    channel = harness.channel()
    message = _render(harness, channel)
    harness.lose_next_response()
    with pytest.raises(ChannelError) as caught:
        channel.send(message)
    assert isinstance(caught.value, TransientError), "a lost answer is worth another look"
    posted = _posted_with_link(harness, message)
    assert len(posted) == 1  # the far end did post it
    if harness.reconciles:
        found = harness.channel().reconcile(message)
        assert found is not None and found.remote_id == posted[0]["id"]
    else:
        with pytest.raises(CannotReconcile):
            harness.channel().reconcile(message)
    if harness.idempotent:
        assert harness.channel().send(message).remote_id == posted[0]["id"]
        assert len(_posted_with_link(harness, message)) == 1


def check_secrets_stay_secret(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Through success, every failure and reconcile: no secret in any log line or error."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    channel = harness.channel()
    message = _render(harness, channel)
    texts += [message.text, message.link or "", *(note.text for note in message.notes)]
    texts.append(repr(channel.send(message)))

    def attempt(kind: str) -> None:
        try:
            if kind == "lost":
                harness.lose_next_response()
            else:
                harness.fail_next(kind)
        except pytest.skip.Exception:
            return
        try:
            texts.append(repr(channel.send(_render(harness, channel))))
        except ChannelError as error:
            texts.extend(str(e) for e in errors_in_chain(error))
            texts.extend(repr(e) for e in errors_in_chain(error))

    attempt("transient")
    attempt("lost")
    attempt("permanent")
    try:
        texts.append(repr(harness.channel().reconcile(message)))
    except CannotReconcile as error:
        texts.append(str(error))
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    for secret in harness.secrets:
        assert secret, "a harness secret must be a non-empty value"
        leaks = [text for text in texts if secret in text]
        assert not leaks, f"{harness.name}: a secret leaked into: {leaks[0][:300]!r}"


def check_reconcile_after_dedup_window(harness: Harness) -> None:
    """The answer was lost and the retry comes after the far end forgot the first post (its
    idempotency key or duplicate check expired): the engine reconciles before resending, and
    reconcile must find the post, because a resend now makes a second one."""
    forget = getattr(harness, "pass_dedup_window", None)
    if forget is None or not harness.reconciles:
        pytest.skip(f"{harness.name}: no time-limited duplicate protection to outlive")
    channel = harness.channel()
    message = _render(harness, channel)
    harness.lose_next_response()
    with pytest.raises(TransientError):
        channel.send(message)
    posted = _posted_with_link(harness, message)
    assert len(posted) == 1
    forget()
    found = harness.channel().reconcile(message)
    assert found is not None and found.remote_id == posted[0]["id"]
    assert len(_posted_with_link(harness, message)) == 1
    # The window is real: past it, a blind resend is taken as a new post.
    harness.channel().send(message)
    assert len(_posted_with_link(harness, message)) == 2


CHECKS = [
    check_render_and_send,
    check_resend_same_key,
    check_reconcile_after_crash,
    check_reconcile_when_nothing_went_out,
    check_transient_error,
    check_permanent_error,
    check_lost_response,
    check_reconcile_after_dedup_window,
]
