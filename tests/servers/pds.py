"""Run a real Bluesky PDS (tests/peers/bluesky-pds) on loopback for integration tests.

Not a conftest on purpose: fixtures decide the scope; this module only starts, stops and talks.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

PDS_DIR = Path(__file__).resolve().parents[1] / "peers" / "bluesky-pds"
PDS_SKIP_REASON = (
    "local Bluesky PDS not installed: needs node 20+ on PATH and `scripts/install-pds.sh` "
    "(installs tests/peers/bluesky-pds/node_modules)"
)
# The PDS only accepts handles under its own domain, with 3-18 characters before it.
_HANDLE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,16})[a-z0-9]\.test$")


class XrpcError(Exception):
    """An XRPC call failed; keeps the protocol's `error` name so tests can assert on it."""

    def __init__(self, nsid: str, status: int, error: str, message: str) -> None:
        super().__init__(f"{nsid}: HTTP {status} {error}: {message}")
        self.nsid = nsid
        self.status = status
        self.error = error
        self.message = message


@dataclass(frozen=True)
class PdsServer:
    """A running PDS: `url` is the XRPC base (http://127.0.0.1:PORT)."""

    url: str
    plc_url: str
    admin_password: str
    handle_domain: str
    info: Mapping[str, Any]
    process: subprocess.Popen[bytes]


def pds_available() -> bool:
    """True when node and the installed PDS (with its compiled sqlite addon) are present."""
    modules = PDS_DIR / "node_modules"
    return (
        shutil.which("node") is not None
        and (modules / "@atproto" / "pds").is_dir()
        and (modules / "better-sqlite3" / "build" / "Release" / "better_sqlite3.node").is_file()
    )


@contextmanager
def start_pds(*, timeout: float = 60, stop_timeout: float = 10) -> Iterator[PdsServer]:
    """Start `node start-pds.js`, wait for its JSON ready line, and always stop it after.

    STOP_ON_STDIN_EOF makes node exit by itself if this Python process dies without cleanup.
    """
    if not pds_available():
        raise RuntimeError(PDS_SKIP_REASON)
    env = {**os.environ, "STOP_ON_STDIN_EOF": "1"}
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            ["node", "start-pds.js"],
            cwd=PDS_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            info = _wait_ready(proc, timeout)
            if info is None:
                stderr.seek(0)
                tail = stderr.read().decode(errors="replace")[-2000:]
                code = proc.poll()
                why = (
                    f"exited with code {code}" if code is not None else f"not ready in {timeout} s"
                )
                raise RuntimeError(f"local PDS {why}; its stderr ends with:\n{tail}")
            yield PdsServer(
                url=info["pds"],
                plc_url=info["plc"],
                admin_password=info["adminPassword"],
                handle_domain=info["handleDomain"],
                info=info,
                process=proc,
            )
        finally:
            _stop(proc, stop_timeout)


def _wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any] | None:
    """Read stdout in a thread so the wait is bounded; later output is drained and dropped."""
    lines: queue.Queue[bytes | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="pds-stdout", daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=timeout)
            if line is None:
                return None  # exited before ready
            try:
                info = json.loads(line)
            except ValueError:
                continue
            if isinstance(info, dict) and info.get("ready"):
                return info
    except queue.Empty:
        return None


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM lets the PDS delete its temp data folder; kill only if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    if proc.stdin is not None:
        proc.stdin.close()


def xrpc(
    pds_url: str,
    nsid: str,
    *,
    token: str | None = None,
    params: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
    data: bytes | None = None,
    content_type: str | None = None,
    timeout: float = 10,
) -> dict[str, Any]:
    """Call one XRPC method: GET when there is no body/data (a query), else POST (a procedure)."""
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if content_type:
        headers["Content-Type"] = content_type
    url = f"{pds_url}/xrpc/{nsid}"
    if body is None and data is None:
        resp = requests.get(url, params=params, headers=headers, timeout=timeout)
    else:
        resp = requests.post(url, json=body, data=data, headers=headers, timeout=timeout)
    if resp.status_code >= 400:
        try:
            err = resp.json()
        except ValueError:
            err = {}
        raise XrpcError(
            nsid, resp.status_code, err.get("error", "Unknown"), err.get("message", resp.text)
        )
    return resp.json()


def create_account(
    pds_url: str, handle: str, password: str, *, email: str | None = None
) -> dict[str, Any]:
    """Create an account; the answer holds `did`, `handle`, `accessJwt`, `refreshJwt`.

    This PDS requires an email (unique per server): by default one is derived from the handle.
    """
    if not _HANDLE.match(handle):
        raise ValueError(
            f"handle {handle!r} must be lowercase, end in .test and have 3-18 characters before it"
        )
    email = email or f"{handle.removesuffix('.test')}@example.com"
    return xrpc(
        pds_url,
        "com.atproto.server.createAccount",
        body={"handle": handle, "password": password, "email": email},
    )


def create_session(pds_url: str, identifier: str, password: str) -> dict[str, Any]:
    """Log in with a handle or DID; returns `accessJwt`, `refreshJwt`, `did`, `handle`."""
    return xrpc(
        pds_url,
        "com.atproto.server.createSession",
        body={"identifier": identifier, "password": password},
    )
