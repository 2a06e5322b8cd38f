"""`briefbot serve`: the mailing list's pages, the public archive, the hero images the
emails link, the providers' webhooks and, when switched on, the private live preview.

The pages of each kind are routes on one `bot.web_base.App`: the list's in `bot.web_list`, the
others here, each group added by its own function.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from bot.config import ConfigError, Settings
from bot.ledger import Ledger
from bot.render.media import EMAIL_IMAGE_NAME, EMAIL_IMAGES
from bot.subscribers import Subscribers
from bot.web_base import App, Request, Response, not_found, redact
from bot.web_list import add_list_routes


def make_app(settings: Settings) -> App:
    """The WSGI app on the configured database, with every route the configuration asks for."""
    ledger = Ledger(settings.database_url, lease=settings.config.publish.lease)
    app = App(settings, Subscribers(ledger))
    add_list_routes(app)
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
        return not_found()
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
            return not_found()
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
            return not_found()
        return Response("", 301, headers=[("Location", f"/preview/{given}/"), *private])

    def gallery(request: Request, given: str) -> Response:
        if not known(given):
            return not_found()
        drafts = "drafts=1" in request.environ.get("QUERY_STRING", "").split("&")
        return Response(live.page(drafts), headers=[
            ("Content-Security-Policy", f"{CSP}; frame-ancestors 'none'"), *private])

    def image(request: Request, given: str, name: str) -> Response:
        data = live.image(name) if known(given) else None
        if data is None:
            return not_found()
        mime = next((m for m, ext in EXTENSIONS.items() if name.endswith(f".{ext}")),
                    "application/octet-stream")
        return Response(data, content_type=mime, headers=private)

    given = r"(?P<given>[A-Za-z0-9_-]{1,200})"
    app.add("GET", rf"/preview/{given}", redirect)
    app.add("GET", rf"/preview/{given}/", gallery)
    app.add("GET", rf"/preview/{given}/images/(?P<name>[0-9a-f]{{20}}\.[a-z]{{3,4}})", image)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 resets connections when a mail client bursts


class _Handler(WSGIRequestHandler):
    # A client that sends its request slowly, or opens a connection and says nothing, is cut
    # off after this many seconds instead of holding a thread for ever.
    timeout = 15

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        sys.stderr.write(f"{self.address_string()} - {redact(format % args)}\n")


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
