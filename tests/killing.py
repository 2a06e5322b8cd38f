"""What every kill test does between two runs: SIGKILL a send once the receiver has counted
`target` deliveries (or when the run ends by itself, or after `within` seconds)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable


def kill_at(run: subprocess.Popen, received: Callable[[], int], target: int, *,
            within: float, poll: float = 0.002) -> bool:
    """SIGKILL `run` once `received()` reaches `target`; whether it was still sending then."""
    deadline = time.monotonic() + within
    while received() < target and run.poll() is None and time.monotonic() < deadline:
        time.sleep(poll)
    mid_send = run.poll() is None
    run.send_signal(signal.SIGKILL)
    return mid_send
