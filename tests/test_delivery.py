"""The one delivery step (`bot.delivery`): claims held while a slow send runs, a lost claim
reported, unknown outcomes resent only as a retry would be."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from bot.channels import Channel
from bot.config import ChannelConfig, load_settings
from bot.delivery import DeliveryStep, Prior
from bot.ledger import Ledger
from bot.message import DeliveryKey, Message, Receipt, UnknownOutcome


class SlowChannel(Channel):
    """An adapter whose send takes longer than the sent-log's lease."""

    type = "slow"

    def __init__(self, *args, seconds: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds = seconds
        self.sent: list[str] = []

    def send(self, message: Message) -> Receipt:
        time.sleep(self.seconds)
        self.sent.append(str(message.key))
        return Receipt(remote_id="r1")


class LosingChannel(SlowChannel):
    def send(self, message: Message) -> Receipt:
        self.sent.append(str(message.key))
        raise UnknownOutcome("the answer was lost after the request went out")


def _message(key: DeliveryKey) -> Message:
    return Message(key=key, kind="post", text="hello")


def test_a_send_slower_than_the_lease_keeps_its_claim(project):
    settings = load_settings(project.config)
    lease = timedelta(seconds=1.5)
    mine = Ledger(settings.database_url, lease=lease)
    other = Ledger(settings.database_url, lease=lease)
    channel = SlowChannel("slow", ChannelConfig(type="slow"), settings, seconds=5)
    key = DeliveryKey("brief:slow", "slow")
    step = DeliveryStep(mine, channel, settings.config.publish)
    results = []
    sender = threading.Thread(target=lambda: results.append(
        step.deliver(key, None, datetime.now(UTC), lambda: _message(key))))
    try:
        sender.start()
        taken = []
        for _ in range(6):  # well past the lease, while the send is still running
            time.sleep(0.6)
            other.expire_leases()
            taken.append(other.reclaim(key, from_states=["unknown"]))
        sender.join(timeout=30)
        assert taken == [False] * 6  # nobody could take it over mid-send
        assert results[0].state == "sent"
        assert other.get(key).state == "sent" and channel.sent == [str(key)]
    finally:
        mine.close()
        other.close()


def test_a_claim_taken_over_mid_send_is_reported_not_called_sent(project):
    settings = load_settings(project.config)
    mine = Ledger(settings.database_url)
    other = Ledger(settings.database_url)
    key = DeliveryKey("brief:taken", "slow")

    class Interrupted(SlowChannel):
        def send(self, message: Message) -> Receipt:
            # An operator's `retry`, or a second process after a long stall, takes it over.
            other.requeue(key, states=["claimed", "unknown"])
            assert other.claim(key) or other.reclaim(key, from_states=["failed", "unknown"])
            return super().send(message)

    channel = Interrupted("slow", ChannelConfig(type="slow"), settings)
    try:
        result = DeliveryStep(mine, channel, settings.config.publish).deliver(
            key, None, datetime.now(UTC), lambda: _message(key))
        assert result.state == "lost"
        assert "taken over" in result.detail
    finally:
        mine.close()
        other.close()


def test_resending_an_unknown_outcome_is_bounded_like_a_retry(project):
    project.write_config(publish='backfill = "all"\nmax_attempts = 3\nretry_base = "1m"')
    settings = load_settings(project.config)
    ledger = Ledger(settings.database_url)
    channel = LosingChannel("lossy", ChannelConfig(type="slow", unknown_policy="resend"),
                            settings)
    key = DeliveryKey("brief:lossy", "lossy")
    step = DeliveryStep(ledger, channel, settings.config.publish, rng=lambda: 0.5)
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    try:
        states = []
        for _ in range(8):  # one run every 10 minutes
            row = ledger.get(key)
            prior = Prior(row.state, row.attempts) if row else None
            states.append(step.deliver(key, prior, now, lambda: _message(key)).state)
            now += timedelta(minutes=10)
        # Never twice at once, each resend after the backoff, then given up as dead.
        assert states[:3] == ["unknown", "unknown", "unknown"]
        assert "dead" in states and ledger.get(key).state == "dead"
        assert len(channel.sent) == 3
        assert "outcome stayed unknown" in (ledger.get(key).last_error or "")
    finally:
        ledger.close()


def test_status_says_how_to_settle_and_calls_only_a_crash_a_crash(project):
    import json
    import socket
    import subprocess
    import sys

    from tests.briefs_factory import write_brief

    write_brief(project.briefs, "lost.md")
    write_brief(project.briefs, "crashed.md")
    # A channel that cannot ask the service whether it went out: unknowns wait for an operator.
    project.write_config(channels='[channels.flaky]\ntype = "flaky"\n')
    settings = load_settings(project.config)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs
    ledger = Ledger(settings.database_url)
    dead_worker = Ledger(settings.database_url,
                         worker=f"{socket.gethostname()}:{gone.pid}:abcd")
    try:
        lost = DeliveryKey("brief:lost", "flaky")
        ledger.claim(lost)
        ledger.release(lost, note="outcome unknown: the answer was lost after the request")
        dead_worker.claim(DeliveryKey("brief:crashed", "flaky"))
    finally:
        ledger.close()
        dead_worker.close()
    project.cli("run", "--once", "--dry-run")  # reads only: the dead claim stays claimed
    run = project.cli("run", "--once")  # settles the dead process's claim as unknown
    assert run.returncode == 1  # unsettled work is never "all went well"
    attention = {row["key"]: row for row in
                 json.loads(project.cli("status", "--json").stdout)["attention"]}
    assert attention["brief:lost|flaky"]["reason"].startswith(
        "outcome unknown: the answer was lost")
    assert attention["brief:crashed|flaky"]["reason"] == "outcome unknown after a crash"
    for row in attention.values():
        assert f"briefbot retry '{row['key']}'" in row["fix"]
