"""A channel that fails on demand, to test retries, permanent errors and unknown outcomes.

Options: `log` (a JSON-lines file of what was sent), `transient_failures` (how many times each
delivery fails with a transient error first), `retry_after` (seconds, sent with the error),
`permanent` (brief ids refused for good), `delay` (seconds each send takes). State lives in
files: runs are separate processes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bot.channels import Channel, Message, PermanentError, Receipt, TransientError


class FlakyChannel(Channel):
    type = "flaky"

    def _path(self, option: str, default: str) -> Path:
        return self.settings.resolve(self.options.get(option, default))

    def render(self, brief, key) -> Message:
        return Message(key=key, kind="post", text=f"{brief.title} {brief.source_url}",
                       link=brief.source_url)

    def send(self, message: Message) -> Receipt:
        time.sleep(float(self.options.get("delay", 0)))
        brief_id = message.key.campaign.removeprefix("brief:")
        if brief_id in self.options.get("permanent", []):
            raise PermanentError(f"the network refused {brief_id}: content not allowed")
        failures = int(self.options.get("transient_failures", 0))
        if failures:
            counter = self._path("counter", "flaky-attempts.json")
            attempts = json.loads(counter.read_text()) if counter.exists() else {}
            attempts[brief_id] = attempts.get(brief_id, 0) + 1
            counter.write_text(json.dumps(attempts))
            if attempts[brief_id] <= failures:
                raise TransientError("503 Service Unavailable",
                                     retry_after=self.options.get("retry_after"))
        with open(self._path("log", "flaky-sent.jsonl"), "a", encoding="utf-8") as log:
            log.write(json.dumps({"key": str(message.key), "text": message.text}) + "\n")
        return Receipt(remote_id=f"flaky-{brief_id}", url=f"https://flaky.test/{brief_id}")


class TrapChannel(Channel):
    """Renders like any post channel; `send` fails the test (it writes `trap-sent`, which the
    test looks for, since the CLI runs in another process)."""

    type = "trap"

    def render(self, brief, key) -> Message:
        return Message(key=key, kind="post", text=f"{brief.title} {brief.source_url}",
                       link=brief.source_url)

    def send(self, message: Message) -> Receipt:
        self.settings.resolve("trap-sent").write_text(str(message.key))
        raise AssertionError(f"a dry run called send for {message.key}")
