"""The small WSGI app `briefbot serve` runs: requests, responses, routes and plain pages.

Routes are a plain list of (method, regex, handler) on `App.routes`; add more with `App.add`.
A handler takes the `Request` and the regex's named groups and returns a `Response`. Every
response carries the security headers below unless it replaces one (the preview needs images
and frames); no answer shows a file path or an internal error.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from bot.config import Settings
from bot.signup import SignupLimiter

if TYPE_CHECKING:
    from bot.subscribers import Subscribers

log = logging.getLogger("briefbot.web")

MAX_BODY_BYTES = 16_384
_TOKEN_IN_PATH = re.compile(r"/(unsubscribe|confirm|preview)/[^\s?\"/]+")

SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),  # the page URL carries a token
    ("Content-Security-Policy",
     "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
]


class BodyTooLarge(Exception):
    pass


@dataclass
class Request:
    environ: dict[str, Any]
    app: App

    @property
    def method(self) -> str:
        return self.environ["REQUEST_METHOD"].upper()

    @property
    def path(self) -> str:
        return self.environ.get("PATH_INFO") or "/"

    @property
    def settings(self) -> Settings:
        return self.app.settings

    max_body: int = MAX_BODY_BYTES  # a webhook route allows more

    @cached_property
    def body(self) -> bytes:
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > self.max_body:
            raise BodyTooLarge
        return self.environ["wsgi.input"].read(length) if length > 0 else b""

    @cached_property
    def form(self) -> dict[str, str]:
        """An urlencoded form's fields (first value of each)."""
        content_type = self.environ.get("CONTENT_TYPE", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return {}
        fields = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {name: values[0] for name, values in fields.items()}


@dataclass
class Response:
    body: str | bytes
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class App:
    """A WSGI callable dispatching on `routes`; first match of method and full path wins."""

    def __init__(self, settings: Settings, subscribers: Subscribers):
        self.settings = settings
        self.subscribers = subscribers
        self.routes: list[Route] = []
        self.limiter = SignupLimiter()

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append(Route(method.upper(), re.compile(pattern), handler))

    def close(self) -> None:
        self.subscribers.ledger.close()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        request = Request(environ, self)
        response = self.dispatch(request)
        body = response.body.encode("utf-8") if isinstance(response.body, str) else response.body
        # A response may replace a default security header (the preview needs images, frames).
        own = {name.lower() for name, _ in response.headers}
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(body))),
                   *(h for h in SECURITY_HEADERS if h[0].lower() not in own), *response.headers]
        status = HTTPStatus(response.status)
        start_response(f"{status.value} {status.phrase}", headers)
        return [] if request.method == "HEAD" else [body]

    def dispatch(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        allowed = []
        for route in self.routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            try:
                return route.handler(request, **match.groupdict())
            except BodyTooLarge:
                return Response(page("Too large", "<p>That request is too large.</p>"), 413)
            except Exception:
                log.exception("%s %s failed", method, redact(request.path))
                return Response(page("Something went wrong", "<p>Something went wrong on our "
                                     "side. Nothing was changed; please try again later.</p>"),
                                500)
        if allowed:
            return Response(page("Not allowed", "<p>This page does not accept that request."
                                 "</p>"), 405, headers=[("Allow", ", ".join(sorted(set(allowed))))])
        return Response(page("Not found", "<p>There is no page here.</p>"), 404)


# -- pages ---------------------------------------------------------------------------------


def h(value: Any) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body_html: str) -> str:
    """A complete, plain, accessible page. `body_html` must already be escaped."""
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{h(title)}</title><style>"
        "body{font:1.1rem/1.5 system-ui,sans-serif;max-width:34rem;margin:2rem auto;"
        "padding:0 1rem;color:#1a1a1a;background:#fff}"
        "label{display:block;margin-top:1rem;font-weight:600}"
        "input{font:inherit;width:100%;padding:.4rem;box-sizing:border-box}"
        "button{font:inherit;margin-top:1.2rem;padding:.5rem 1.2rem;cursor:pointer}"
        ":focus-visible{outline:3px solid #1a5fb4;outline-offset:2px}"
        ".error{color:#a00;font-weight:600}"
        f"</style></head><body><main><h1>{h(title)}</h1>\n{body_html}\n</main></body></html>\n"
    )


def button_form(label: str, hidden: dict[str, str] | None = None) -> str:
    fields = "".join(f'<input type="hidden" name="{h(k)}" value="{h(v)}">'
                     for k, v in (hidden or {}).items())
    # No `action`: the form posts back to this very URL, whatever prefix a proxy adds.
    return f'<form method="post">{fields}<button type="submit">{h(label)}</button></form>'


def not_found() -> Response:
    return Response(page("Not found", "<p>There is no page here.</p>"), 404)


def redact(text: str) -> str:
    """Tokens are per-recipient credentials: keep them out of logs."""
    return _TOKEN_IN_PATH.sub(r"/\1/…", text)

