"""The mailing list's pages: one-click unsubscribe and double opt-in sign-up.

- `POST /unsubscribe/<token>` is RFC 8058 one-click: mail clients post
  `List-Unsubscribe=One-Click` and the address is off the list at once, with no cookie and no
  redirect. `GET` of the same URL only shows a button, because mail scanners follow links.
- `/subscribe` and `/confirm/<token>` are double opt-in: a sign-up stays `pending` until the
  link mailed to the address is confirmed (again with a button, never by a bare GET).
"""

from __future__ import annotations

from bot.addresses import normalise_email
from bot.signup import form_token, send_confirmation, valid_form_token
from bot.tokens import confirm_url, read_token
from bot.web_base import App, Request, Response, button_form, h, page


def add_list_routes(app: App) -> None:
    """The home page, unsubscribe and confirm links, and the sign-up form when it is on."""
    token = r"(?P<token>[A-Za-z0-9_.-]{1,1200})"
    app.add("GET", r"/", index)
    app.add("GET", rf"/unsubscribe/{token}", unsubscribe_form)
    app.add("POST", rf"/unsubscribe/{token}", unsubscribe)
    # Confirmation links stay valid even if the form is switched off after they were mailed.
    app.add("GET", rf"/confirm/{token}", confirm_form)
    app.add("POST", rf"/confirm/{token}", confirm)
    if app.settings.config.web.subscribe_form:
        app.add("GET", r"/subscribe", subscribe_form)
        app.add("POST", r"/subscribe", subscribe)


def _list_name(request: Request) -> str:
    return request.settings.config.email.list_name


def _bad_link(what: str) -> Response:
    return Response(page("This link is not valid", (
        f"<p>This {h(what)} link is not valid: it may have been cut off or altered. "
        "<strong>Nothing was changed.</strong></p><p>Copy the whole link from the email "
        "into your browser, or reply to the email to ask us directly.</p>")), 400)


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
        + button_form("Unsubscribe", {"List-Unsubscribe": "One-Click"}))))


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
        + button_form("Confirm subscription"))))


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
