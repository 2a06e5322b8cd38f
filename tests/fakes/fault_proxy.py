"""A fault-injecting HTTP proxy on 127.0.0.1, in front of a real server.

It forwards every request untouched and records what passed, so a test can count calls (how
many logins?) and see every bearer token that went over the wire. On demand it answers the next
matching request itself (a 429 with a reset time, a 503, a 401) without forwarding it, or
forwards it and then closes the connection without answering: the far end acted, the client
never heard back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "content-length", "content-encoding", "host",
}


@dataclass
class Fault:
    """What to do to the next request whose path contains `match` (any request if None)."""

    match: str | None
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    lose: bool = False  # forward it, then drop the answer


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # without the query string
    status: int | None  # what the client got; None when the answer was dropped


class FaultProxy:
    def __init__(self, upstream: str, *, timeout: float = 30):
        self.upstream = upstream.rstrip("/")
        self.timeout = timeout
        self.calls: list[Call] = []
        self.tokens: set[str] = set()
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"

    # -- what tests call -------------------------------------------------------------------

    def count(self, fragment: str) -> int:
        """How many requests whose path contains `fragment` reached the proxy."""
        with self._lock:
            return sum(1 for call in self.calls if fragment in call.path)

    def answer_next(self, status: int, body: bytes = b"", *, headers: dict[str, str] | None = None,
                    match: str | None = None) -> None:
        with self._lock:
            self._faults.append(Fault(match, status, body, dict(headers or {})))

    def lose_next(self, *, match: str | None = None) -> None:
        with self._lock:
            self._faults.append(Fault(match, lose=True))

    def pending(self) -> int:
        with self._lock:
            return len(self._faults)

    # -- plumbing --------------------------------------------------------------------------

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.match is None or fault.match in path:
                    return self._faults.pop(index)
        return None

    def _record(self, call: Call, headers: Any) -> None:
        auth = headers.get("Authorization", "")
        with self._lock:
            self.calls.append(call)
            if auth.lower().startswith("bearer "):
                self.tokens.add(auth[7:])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                fault = proxy._take_fault(path)
                if fault and not fault.lose:
                    proxy._record(Call(self.command, path, fault.status), self.headers)
                    self._answer(fault.status, fault.headers, fault.body)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_BY_HOP}
                try:
                    resp = requests.request(self.command, proxy.upstream + self.path,
                                            headers=headers, data=body, timeout=proxy.timeout,
                                            allow_redirects=False)
                except requests.RequestException:
                    proxy._record(Call(self.command, path, 502), self.headers)
                    self._answer(502, {"Content-Type": "text/plain"}, b"upstream unreachable")
                    return
                if fault and fault.lose:
                    proxy._record(Call(self.command, path, None), self.headers)
                    self.close_connection = True
                    return  # the far end acted; the client gets a closed connection
                proxy._record(Call(self.command, path, resp.status_code), self.headers)
                kept = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP}
                self._answer(resp.status_code, kept, resp.content)

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _relay

        return Handler

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, name="fault-proxy",
                         kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
