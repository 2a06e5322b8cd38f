"""A small real HTTP server on 127.0.0.1 for fake network APIs: routing, a record of every
request, and failures on demand (an error status for the next N requests, or a lost answer).

A fake API subclasses `FakeApi`, declares routes with `@route(METHOD, PATTERN)` and returns
`Reply` objects; tests read `requests` and call `fail_next` / `lose_next`, and move the fake's
`clock` on (never sleep) to pass a window the service keeps, such as how long it remembers an
idempotency key.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message as MimeMessage
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    raw_query: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def form(self) -> dict[str, FormPart]:
        """The parts of a multipart/form-data body, by field name."""
        head = f"Content-Type: {self.header('content-type')}\r\n\r\n".encode()
        parsed = BytesParser(policy=HTTP).parsebytes(head + self.body)
        parts: dict[str, FormPart] = {}
        for part in parsed.iter_parts() if parsed.is_multipart() else []:
            assert isinstance(part, MimeMessage)
            name = part.get_param("name", header="content-disposition")
            filename = part.get_param("filename", header="content-disposition")
            data = part.get_payload(decode=True) or b""
            parts[str(name)] = FormPart(data, part.get_content_type(),
                                        str(filename) if filename else None)
        return parts


@dataclass
class FormPart:
    data: bytes
    content_type: str
    filename: str | None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


@dataclass
class Reply:
    status: int
    body: Any = None  # dict/list → JSON; bytes/str sent as is
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", "application/json"
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json; charset=utf-8"


@dataclass
class _Failure:
    reply: Reply
    method: str | None
    path: str | None


Handler = Callable[..., Reply]


class FakeClock:
    """The time a fake server goes by: the real clock plus whatever a test skipped ahead."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def now(self) -> float:
        return time.time() + self.skipped

    def advance(self, seconds: float) -> None:
        self.skipped += seconds


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    """Declare a handler for METHOD and a path regex; named groups become keyword arguments."""

    def mark(handler: Handler) -> Handler:
        handler.route = (method, re.compile(pattern + "$"))  # type: ignore[attr-defined]
        return handler

    return mark


class FakeApi:
    """Base of fake network APIs: start it, point an adapter at `url`, inspect `requests`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.clock = FakeClock()
        self.lock = threading.RLock()
        self._failures: list[_Failure] = []
        self._lose: list[tuple[str, str]] = []
        self._handlers = {
            getattr(self, name).route: getattr(self, name) for name in dir(type(self))
            if hasattr(getattr(type(self), name), "route")
        }
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeApi:
        api = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # the record in `api.requests` is the log

            def _serve(self) -> None:
                api._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls ----------------------------------------------------------------------

    def fail_next(self, status: int, *, times: int = 1, body: Any = None,
                  headers: dict[str, str] | None = None, method: str | None = None,
                  path: str | None = None) -> None:
        """The next `times` matching requests get this error instead of being served."""
        with self.lock:
            for _ in range(times):
                self._failures.append(
                    _Failure(Reply(status, body, dict(headers or {})), method, path))

    def lose_next(self, method: str, path: str) -> None:
        """Serve the next matching request, then close the connection without an answer."""
        with self.lock:
            self._lose.append((method, path))

    def seen(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """Recorded requests, filtered by method and a path regex (full match)."""
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method)
                    and (path is None or re.fullmatch(path, r.path))]

    def writes(self) -> list[Request]:
        return [r for r in self.seen() if r.method in ("POST", "PUT", "PATCH", "DELETE")]

    # -- serving ----------------------------------------------------------------------------

    def authorize(self, request: Request) -> Reply | None:
        """An error reply if the request's credentials are wrong; None to let it through."""
        return None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        request = Request(
            method=handler.command, path=parts.path, query=parse_qs(parts.query),
            raw_query=parts.query,
            headers={k.lower(): v for k, v in handler.headers.items()}, body=body,
        )
        with self.lock:
            self.requests.append(request)
            failure = next((f for f in self._failures if self._matches(f, request)), None)
            if failure is not None:
                self._failures.remove(failure)
            lose = next((x for x in self._lose if x[0] == request.method
                         and re.fullmatch(x[1], request.path)), None)
            if lose is not None and failure is None:
                self._lose.remove(lose)
            reply = failure.reply if failure else self._dispatch(request)
        if lose is not None and failure is None:
            handler.close_connection = True
            return  # the work is done; the client never hears about it
        data, content_type = reply.encode()
        handler.send_response(reply.status)
        headers = {"Content-Type": content_type, **reply.headers}
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _matches(failure: _Failure, request: Request) -> bool:
        return ((failure.method is None or failure.method == request.method)
                and (failure.path is None or re.fullmatch(failure.path, request.path)
                     is not None))

    def _dispatch(self, request: Request) -> Reply:
        denied = self.authorize(request)
        if denied is not None:
            return denied
        for (method, pattern), handler in self._handlers.items():
            match = pattern.fullmatch(request.path)
            if method == request.method and match:
                return handler(request, **match.groupdict())
        return Reply(404, {"error": "Record not found"})
