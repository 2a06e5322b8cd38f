"""Headless Chromium driven over the DevTools protocol, for tests that look at real pages.

Debian's `chromium` is started with a fresh profile and `--remote-debugging-port=0`; the port it
picked is read from `DevToolsActivePort` in the profile, and one page target is driven through
its WebSocket with `websocket-client`. Every wait is bounded. Network events are recorded, so a
test can prove what a page loaded (and that it loaded nothing from the network).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
)
START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """The browser's path; a skip locally when it is missing, a failure in CI."""
    path = chromium_path()
    if path is None:
        message = ("Chromium is not installed: `apt-get install chromium` (scripts/test.sh does "
                   "it as root)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class DevToolsError(Exception):
    pass


class Page:
    """One tab: commands, the events seen so far, and a few conveniences."""

    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=CALL_TIMEOUT, suppress_origin=True)
        self.events: list[dict[str, Any]] = []
        self._next_id = 0

    def close(self) -> None:
        self.ws.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + CALL_TIMEOUT
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise DevToolsError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)
        raise DevToolsError(f"{method}: no answer within {CALL_TIMEOUT} s")

    def wait_for(self, event: str, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """The first `event` not yet consumed, reading the socket until it comes."""
        deadline = time.monotonic() + timeout
        while True:
            for index, seen in enumerate(self.events):
                if seen["method"] == event:
                    return self.events.pop(index)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DevToolsError(f"no {event} within {timeout} s")
            self.ws.settimeout(remaining)
            try:
                message = json.loads(self.ws.recv())
            finally:
                self.ws.settimeout(CALL_TIMEOUT)
            if "method" in message:
                self.events.append(message)

    def open(self, url: str, *, width: int = 1280, height: int = 900) -> None:
        """Load `url` at a viewport of `width` CSS pixels and wait for its load event."""
        self.resize(width, height)
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise DevToolsError(f"cannot open {url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired")

    def resize(self, width: int, height: int = 900) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=width < 600)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.evaluate("[document.documentElement.scrollWidth,"
                                 " document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": min(size[1], 12000),
                              "scale": 1}
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def requests(self) -> list[dict[str, Any]]:
        """Every request the page made so far (Network.requestWillBeSent), consumed or not."""
        self.call("Runtime.evaluate", expression="0")  # flush pending events into `events`
        return [e["params"]["request"] for e in self.events
                if e["method"] == "Network.requestWillBeSent"]


@contextmanager
def chromium(profile: Path, *, proxy: str | None = None) -> Iterator[Page]:
    """A headless Chromium with a fresh profile in `profile`, and its first tab."""
    path = require_chromium()
    profile.mkdir(parents=True, exist_ok=True)
    args = [path, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0"]
    if proxy:
        # Everything but loopback goes to the proxy: a test can see any request that leaves.
        args.append(f"--proxy-server={proxy}")
    log = open(profile / "chromium.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([*args, "about:blank"], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    page = None
    try:
        port = _devtools_port(profile, process)
        targets: list[dict[str, Any]] = []
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            targets = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list",
                                               timeout=5).json() if t.get("type") == "page"]
            if targets:
                break
            time.sleep(0.1)
        if not targets:
            raise DevToolsError("Chromium opened no page")
        page = Page(targets[0]["webSocketDebuggerUrl"])
        page.call("Page.enable")
        page.call("Network.enable")
        yield page
    finally:
        if page is not None:
            page.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _devtools_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = (profile / "chromium.log").read_text(errors="replace")[-2000:]
            raise DevToolsError(f"Chromium exited with {process.returncode}: {output}")
        try:
            first = marker.read_text().split("\n", 1)[0].strip()
        except OSError:
            first = ""
        if first.isdigit():
            return int(first)
        time.sleep(0.05)
    raise DevToolsError(f"Chromium did not open its DevTools port within {START_TIMEOUT} s")
