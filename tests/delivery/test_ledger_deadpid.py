"""A claim whose process on this host is gone is settled on the next run, lease or not."""

import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from bot.ledger import Ledger
from bot.message import DeliveryKey, State


def test_dead_process_claim_becomes_unknown_before_lease(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.sqlite3'}"
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = Ledger(url, worker=f"{socket.gethostname()}:{child.stdout.strip()}:abc123",
                  lease=timedelta(hours=1), clock=lambda: now)
    key = DeliveryKey("brief:a", "outbox")
    assert dead.claim(key)
    alive = Ledger(url, lease=timedelta(hours=1), clock=lambda: now)
    live_key = DeliveryKey("brief:b", "outbox")
    assert alive.claim(live_key)
    assert alive.expire_leases() == 1
    assert alive.get(key).state == State.UNKNOWN
    assert alive.get(live_key).state == State.CLAIMED
    dead.close()
    alive.close()
