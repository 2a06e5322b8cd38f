"""`briefbot serve`: the few pages a mailing list needs, as a small WSGI app.

- `POST /unsubscribe/<token>` is RFC 8058 one-click: mail clients post
  `List-Unsubscribe=One-Click` and the address is off the list at once, with no cookie and no
  redirect. `GET` of the same URL only shows a button, because mail scanners follow links.
- `/subscribe` and `/confirm/<token>` are double opt-in: a sign-up stays `pending` until the
  link mailed to the address is confirmed (again with a button, never by a bare GET).
- `/archive/` is public: the digests that went out, with nobody's details (`bot.archive`).

Routes are a plain list of (method, regex, handler) on `App.routes`; add more with `App.add`.
A handler takes the `Request` and the regex's named groups and returns a `Response`.
"""

from __future__ import annotations

import html
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from bot.config import ConfigError, Settings
from bot.ledger import Ledger
from bot.render.media import EMAIL_IMAGE_NAME, EMAIL_IMAGES
from bot.signup import SignupLimiter, form_token, send_confirmation, valid_form_token
from bot.subscribers import Subscribers, normalise_email
from bot.tokens import confirm_url, read_token

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
                log.exception("%s %s failed", method, _redact(request.path))
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


def _button_form(label: str, hidden: dict[str, str] | None = None) -> str:
    fields = "".join(f'<input type="hidden" name="{h(k)}" value="{h(v)}">'
                     for k, v in (hidden or {}).items())
    # No `action`: the form posts back to this very URL, whatever prefix a proxy adds.
    return f'<form method="post">{fields}<button type="submit">{h(label)}</button></form>'


def _list_name(request: Request) -> str:
    return request.settings.config.email.list_name


def _bad_link(what: str) -> Response:
    return Response(page("This link is not valid", (
        f"<p>This {h(what)} link is not valid: it may have been cut off or altered. "
        "<strong>Nothing was changed.</strong></p><p>Copy the whole link from the email "
        "into your browser, or reply to the email to ask us directly.</p>")), 400)


# -- handlers ------------------------------------------------------------------------------


def index(request: Request) -> Response:
    links = ('<p><a href="subscribe">Subscribe</a></p>'
             if request.settings.config.web.subscribe_form else "")
    # "the home of <name>": list names often begin with "The", and "the The…" reads badly.
    return Response(page(_list_name(request), f"<p>This is the home of "
                         f"<strong>{h(_list_name(request))}</strong>, a mailing list.</p>{links}"))


def unsubscribe_form(request: Request, token: str) -> Response:
    email = read_token(request.settings, "unsubscribe", token)
    if email is None:
        return _bad_link("unsubscribe")
    return Response(page("Unsubscribe", (
        f"<p>Stop sending <strong>{h(_list_name(request))}</strong> to "
        f"<strong>{h(email)}</strong>?</p>"
        + _button_form("Unsubscribe", {"List-Unsubscribe": "One-Click"}))))


def unsubscribe(request: Request, token: str) -> Response:
    """RFC 8058 one-click: any POST with a genuine token unsubscribes, at once."""
    email = read_token(request.settings, "unsubscribe", token)
    if email is None:
        return _bad_link("unsubscribe")
    request.app.subscribers.unsubscribe(email)
    return Response(page("You are unsubscribed", (
        f"<p><strong>{h(email)}</strong> will get no more "
        f"<strong>{h(_list_name(request))}</strong> emails.</p>")))


def subscribe_form(request: Request, *, email: str = "", name: str = "", error: str = "",
                   status: int = 200) -> Response:
    problem = f'<p class="error" role="alert" id="problem">{h(error)}</p>' if error else ""
    described = ' aria-describedby="problem" aria-invalid="true"' if error else ""
    return Response(page(f"Subscribe to {_list_name(request)}", (
        f"{problem}<form method=\"post\">"
        f'<input type="hidden" name="form" value="{h(form_token(request.settings))}">'
        f'<label for="email">Email address</label><input id="email" name="email" '
        f'type="email" required autocomplete="email" value="{h(email)}"{described}>'
        f'<label for="name">Name (optional)</label><input id="name" name="name" '
        f'autocomplete="name" maxlength="200" value="{h(name)}">'
        '<button type="submit">Subscribe</button></form>'
        "<p>We will email you a link to confirm. You can unsubscribe from every email.</p>")),
        status)


def subscribe(request: Request) -> Response:
    email, name = request.form.get("email", ""), request.form.get("name", "").strip()[:200]
    if not valid_form_token(request.settings, request.form.get("form", "")):
        # Not posted from our own form (or from a page open for hours): a cross-site post
        # or a script. Show the form again, nothing changed.
        return subscribe_form(request, email=email, name=name, status=400, error=(
            "This form has expired or did not come from this page; please send it again."))
    wait = request.app.limiter.wait(request.environ.get("REMOTE_ADDR", ""))
    if wait:
        return Response(page("Too many sign-ups", "<p>Too many sign-ups from here in a short "
                             "time. Please try again later.</p>"), 429,
                        headers=[("Retry-After", str(wait))])
    try:
        address = normalise_email(email)
    except ValueError as error:
        return subscribe_form(request, email=email, name=name, error=str(error), status=400)
    if request.app.subscribers.request(address, name or None):
        send_confirmation(request.settings, address, confirm_url(request.settings, address))
    # The same answer whether or not the address was already on the list: no probing.
    return Response(page("Check your inbox", (
        f"<p>If <strong>{h(address)}</strong> is not on the list yet, a message with a link "
        "to confirm is on its way. Nothing is sent until you confirm.</p>")))


def confirm_form(request: Request, token: str) -> Response:
    email = read_token(request.settings, "confirm", token)
    if email is None:
        return _bad_link("confirmation")
    return Response(page("Confirm your subscription", (
        f"<p>Send <strong>{h(_list_name(request))}</strong> to <strong>{h(email)}</strong>?</p>"
        + _button_form("Confirm subscription"))))


def confirm(request: Request, token: str) -> Response:
    email = read_token(request.settings, "confirm", token)
    if email is None:
        return _bad_link("confirmation")
    subscribers = request.app.subscribers
    if subscribers.confirm(email) or subscribers.is_active(email):
        return Response(page("You are subscribed", (
            f"<p><strong>{h(email)}</strong> will get <strong>{h(_list_name(request))}"
            "</strong>. Every email has a link to unsubscribe.</p>")))
    return Response(page("This link no longer applies", (
        "<p>This address is not waiting for confirmation (it may have unsubscribed since). "
        "<strong>Nothing was changed.</strong> To subscribe, use the form again.</p>")), 410)


# -- the confirmation email -------------------------------------------------------------------


# -- app and server ------------------------------------------------------------------------


def make_app(settings: Settings) -> App:
    """The WSGI app on the configured database, with the mailing-list routes."""
    ledger = Ledger(settings.database_url, lease=settings.config.publish.lease)
    app = App(settings, Subscribers(ledger))
    token = r"(?P<token>[A-Za-z0-9_.-]{1,1200})"
    app.add("GET", r"/", index)
    app.add("GET", rf"/unsubscribe/{token}", unsubscribe_form)
    app.add("POST", rf"/unsubscribe/{token}", unsubscribe)
    # Confirmation links stay valid even if the form is switched off after they were mailed.
    app.add("GET", rf"/confirm/{token}", confirm_form)
    app.add("POST", rf"/confirm/{token}", confirm)
    if settings.config.web.subscribe_form:
        app.add("GET", r"/subscribe", subscribe_form)
        app.add("POST", r"/subscribe", subscribe)
    if settings.config.web.preview:
        add_preview_routes(app, preview_token(settings))
    add_archive_routes(app)
    app.add("GET", rf"/images/(?P<name>{EMAIL_IMAGE_NAME})", email_image)
    add_webhook_routes(app)
    return app


def email_image(request: Request, name: str) -> Response:
    """A local hero image as the emails link it (public, like the emails' other images)."""
    path = request.settings.state_dir / EMAIL_IMAGES / name  # the route's pattern: no `/`
    try:
        data = path.read_bytes()
    except OSError:
        return _not_found()
    mime = "image/png" if name.endswith(".png") else "image/jpeg"
    # Named by its content: it never changes, so clients may keep it.
    return Response(data, content_type=mime,
                    headers=[("Cache-Control", "public, max-age=31536000, immutable")])


# -- the archive (public) ------------------------------------------------------------------


def add_archive_routes(app: App) -> None:
    """`/archive/`: every digest that went out, its web version and an Atom feed (bot.archive).
    Nothing there is anyone's, so it may be cached; images come from the briefs' https URLs."""
    from bot.archive import FEED_NAME, Archive

    public = [("Cache-Control", "public, max-age=300"),
              ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
               "img-src https: data:; frame-ancestors 'none'")]

    def archive() -> Archive:
        return Archive(app.settings, app.subscribers.ledger)

    def found(body: str | bytes | None, content_type: str = "text/html; charset=utf-8"
              ) -> Response:
        if body is None:
            return _not_found()
        return Response(body, content_type=content_type, headers=public)

    app.add("GET", r"/archive", lambda request: Response(
        "", 301, headers=[("Location", "/archive/")]))
    app.add("GET", r"/archive/", lambda request: found(archive().index_page()))
    app.add("GET", rf"/archive/{re.escape(FEED_NAME)}", lambda request: found(
        archive().feed(), "application/atom+xml; charset=utf-8"))
    app.add("GET", r"/archive/(?P<label>[0-9]{4}-[0-9W][0-9W+d-]{1,20})/",
            lambda request, label: found(archive().digest_page(label)))
    app.add("GET", r"/archive/briefs/(?P<brief_id>[A-Za-z0-9_][A-Za-z0-9._-]{0,199})/",
            lambda request, brief_id: found(archive().brief_page(brief_id)))


def add_webhook_routes(app: App) -> None:
    """`POST /webhooks/mailgun` and `/webhooks/postmark`, for the providers configured."""
    import json

    from bot import webhooks

    found = webhooks.secrets_for(app.settings)

    def answer(result: webhooks.Answer) -> Response:
        return Response(json.dumps(result.body), result.status,
                        content_type="application/json")

    def mailgun(request: Request) -> Response:
        request.max_body = webhooks.MAX_BODY_BYTES
        return answer(webhooks.mailgun(request.settings, request.app.subscribers,
                                       found["mailgun"], request.body))

    def postmark(request: Request) -> Response:
        request.max_body = webhooks.MAX_BODY_BYTES
        return answer(webhooks.postmark(request.settings, request.app.subscribers,
                                        found["postmark"],
                                        request.environ.get("HTTP_AUTHORIZATION", ""),
                                        request.body))

    def sendgrid(request: Request) -> Response:
        request.max_body = webhooks.MAX_BODY_BYTES
        environ = request.environ
        return answer(webhooks.sendgrid(
            request.settings, request.app.subscribers, found["sendgrid"],
            environ.get("HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE", ""),
            environ.get("HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP", ""), request.body))

    def ses(request: Request) -> Response:
        request.max_body = webhooks.MAX_BODY_BYTES
        return answer(webhooks.ses(request.settings, request.app.subscribers, found["ses"],
                                   request.body))

    if "ses" in found:
        app.add("POST", r"/webhooks/ses", ses)
    if "sendgrid" in found:
        app.add("POST", r"/webhooks/sendgrid", sendgrid)
    if "mailgun" in found:
        app.add("POST", r"/webhooks/mailgun", mailgun)
    if "postmark" in found:
        app.add("POST", r"/webhooks/postmark", postmark)


# -- the live preview (private) ------------------------------------------------------------


def preview_token(settings: Settings) -> str:
    """The secret part of the gallery's address; serving it needs one worth the name."""
    name = settings.config.web.preview_token_env
    token = os.environ.get(name, "")
    if len(token) < 16 or not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise ConfigError(f"web.preview = true: export {name} with a random token of at least "
                          "16 letters, digits, - or _ (for example from `python3 -c 'import "
                          "secrets; print(secrets.token_urlsafe(24))'`); the gallery is served "
                          f"at /preview/${name}/ only")
    return token


def add_preview_routes(app: App, token: str) -> None:
    """`/preview/TOKEN/` and its images: the gallery shows drafts and embargoed briefs, so it
    answers only at its secret address (compared in constant time) and is never cached."""
    import hmac

    from bot.preview import CSP, EXTENSIONS, LivePreview

    live = LivePreview(app.settings)
    private = [("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer")]

    def known(given: str) -> bool:
        return hmac.compare_digest(given.encode(), token.encode())

    def redirect(request: Request, given: str) -> Response:
        if not known(given):
            return _not_found()
        return Response("", 301, headers=[("Location", f"/preview/{given}/"), *private])

    def gallery(request: Request, given: str) -> Response:
        if not known(given):
            return _not_found()
        drafts = "drafts=1" in request.environ.get("QUERY_STRING", "").split("&")
        return Response(live.page(drafts), headers=[
            ("Content-Security-Policy", f"{CSP}; frame-ancestors 'none'"), *private])

    def image(request: Request, given: str, name: str) -> Response:
        data = live.image(name) if known(given) else None
        if data is None:
            return _not_found()
        mime = next((m for m, ext in EXTENSIONS.items() if name.endswith(f".{ext}")),
                    "application/octet-stream")
        return Response(data, content_type=mime, headers=private)

    given = r"(?P<given>[A-Za-z0-9_-]{1,200})"
    app.add("GET", rf"/preview/{given}", redirect)
    app.add("GET", rf"/preview/{given}/", gallery)
    app.add("GET", rf"/preview/{given}/images/(?P<name>[0-9a-f]{{20}}\.[a-z]{{3,4}})", image)



def _not_found() -> Response:
    return Response(page("Not found", "<p>There is no page here.</p>"), 404)


def _redact(text: str) -> str:
    """Tokens are per-recipient credentials: keep them out of logs."""
    return _TOKEN_IN_PATH.sub(r"/\1/…", text)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 resets connections when a mail client bursts


class _Handler(WSGIRequestHandler):
    # A client that sends its request slowly, or opens a connection and says nothing, is cut
    # off after this many seconds instead of holding a thread for ever.
    timeout = 15

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        sys.stderr.write(f"{self.address_string()} - {_redact(format % args)}\n")


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM); returns an exit code."""
    host = host or settings.config.web.host
    port = settings.config.web.port if port is None else port
    app = make_app(settings)
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_Handler)
    except OSError as error:
        app.close()
        print(f"briefbot: cannot listen on {host}:{port}: {error.strerror}; choose another "
              "with --port or web.port", file=sys.stderr)
        return 1

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    print(f"briefbot: serving on http://{host}:{server.server_port}/ (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        app.close()
    return 0
