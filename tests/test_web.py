"""`briefbot serve` over real HTTP: one-click unsubscribe, double opt-in, signed tokens."""

from __future__ import annotations

import email
import io
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email import policy

import pytest
import requests

from bot.config import load_settings
from bot.ledger import Ledger
from bot.subscribers import Subscribers
from bot.tokens import make_token, read_token, unsubscribe_mailto, unsubscribe_url

SECRET = "test-secret-0b6f1c2e9d8a7f6e5d4c3b2a19081726"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`briefbot serve` as a child process on a free loopback port."""

    def __init__(self, project, *, secret: str | None = SECRET, web: str = ""):
        self.project = project
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        project.write_config(extra=f'[email]\nbase_url = "{self.url}"\n'
                                   f'unsubscribe_mailto = "leave@example.org"\n[web]\n{web}\n')
        self.env = {"BRIEFBOT_TOKEN_SECRET": secret} if secret else {}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "--config", str(project.config), "serve",
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=project.root, env={**project.env, **self.env}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"briefbot serve exited: {self.process.communicate()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("briefbot serve did not listen in 30s") from None
                time.sleep(0.05)

    def settings(self, monkeypatch):
        """The project's settings, with this process signing as the server does."""
        if "BRIEFBOT_TOKEN_SECRET" in self.env:
            monkeypatch.setenv("BRIEFBOT_TOKEN_SECRET", self.env["BRIEFBOT_TOKEN_SECRET"])
        else:
            monkeypatch.delenv("BRIEFBOT_TOKEN_SECRET", raising=False)
        return load_settings(self.project.config)

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, allow_redirects=False, timeout=10,
                                **kwargs)

    def sign_up(self, data: dict[str, str]) -> requests.Response:
        """POST the subscribe form as a browser would: with the token of the form it loaded."""
        form = self.request("GET", "/subscribe").text
        token = re.search(r'name="form" value="([^"]+)"', form).group(1)
        return self.request("POST", "/subscribe", data={**data, "form": token})

    def stop(self) -> tuple[str, str]:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            out, err = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate(timeout=15)
        return out, err


@pytest.fixture
def serve(project):
    servers: list[Server] = []

    def start(**kwargs) -> Server:
        servers.append(Server(project, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@contextmanager
def subscriber_list(project) -> Iterator[Subscribers]:
    """The list the server uses (its child process has no BRIEFBOT_DATABASE_URL)."""
    ledger = Ledger(f"sqlite:///{project.root / 'state' / 'ledger.sqlite3'}")
    try:
        yield Subscribers(ledger)
    finally:
        ledger.close()


def add(project, *emails: str) -> None:
    with subscriber_list(project) as subscribers:
        for address in emails:
            subscribers.add(address)


def states(project) -> dict[str, str]:
    with subscriber_list(project) as subscribers:
        return {s.address: s.state for s in subscribers.iter_all()}


# -- unsubscribe ------------------------------------------------------------------------------


def test_one_click_post_unsubscribes_at_once_without_cookie_or_redirect(project, serve,
                                                                       monkeypatch):
    server = serve()
    add(project, "ann@example.org", "bob@example.org")
    settings = server.settings(monkeypatch)
    link = unsubscribe_url(settings, "ann@example.org")
    assert link.startswith(f"{server.url}/unsubscribe/")

    # RFC 8058: what a mail client posts, as a form body.
    response = requests.post(link, data=ONE_CLICK, allow_redirects=False, timeout=10)
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers and "Location" not in response.headers
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "You are unsubscribed" in response.text and "ann@example.org" in response.text
    assert states(project) == {"ann@example.org": "unsubscribed", "bob@example.org": "active"}

    again = requests.post(link, data=ONE_CLICK, allow_redirects=False, timeout=10)
    assert again.status_code == 200  # idempotent
    assert states(project)["ann@example.org"] == "unsubscribed"


def test_get_only_shows_a_button_so_link_scanners_unsubscribe_no_one(project, serve,
                                                                     monkeypatch):
    server = serve()
    add(project, "ann@example.org")
    link = unsubscribe_url(server.settings(monkeypatch), "ann@example.org")
    for _ in range(2):
        response = requests.get(link, allow_redirects=False, timeout=10)
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
    assert '<form method="post">' in response.text
    assert 'name="List-Unsubscribe" value="One-Click"' in response.text
    assert states(project) == {"ann@example.org": "active"}

    head = requests.head(link, allow_redirects=False, timeout=10)
    assert head.status_code == 200
    assert states(project) == {"ann@example.org": "active"}


def test_forged_and_altered_tokens_change_nothing(project, serve, monkeypatch):
    server = serve()
    add(project, "ann@example.org", "bob@example.org")
    settings = server.settings(monkeypatch)
    genuine = make_token(settings, "unsubscribe", "ann@example.org")
    payload, signature = genuine.split(".")
    bob_payload = make_token(settings, "unsubscribe", "bob@example.org").split(".")[0]
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    confirm_token = make_token(settings, "confirm", "ann@example.org")  # the wrong purpose
    monkeypatch.setenv("BRIEFBOT_TOKEN_SECRET", "someone-elses-secret-of-enough-length")
    forged = make_token(load_settings(project.config), "unsubscribe", "ann@example.org")

    for token in (forged, f"{bob_payload}.{signature}", f"{payload}.{flipped}",
                  confirm_token, payload, "x" * 2000):
        response = server.request("POST", f"/unsubscribe/{token}", data=ONE_CLICK)
        assert response.status_code in (400, 404), token
        if response.status_code == 400:
            assert "Nothing was changed" in response.text
        assert server.request("GET", f"/unsubscribe/{token}").status_code in (400, 404)
    assert states(project) == {"ann@example.org": "active", "bob@example.org": "active"}
    assert server.request("POST", f"/unsubscribe/{genuine}", data=ONE_CLICK).status_code == 200
    assert states(project) == {"ann@example.org": "unsubscribed", "bob@example.org": "active"}


# -- subscribe and confirm --------------------------------------------------------------------


def test_subscribe_then_confirm_makes_an_address_active(project, serve, monkeypatch):
    server = serve()
    form = server.request("GET", "/subscribe")
    assert form.status_code == 200
    assert '<label for="email">' in form.text and 'type="email"' in form.text

    response = server.sign_up({"email": "  New.Reader@Example.ORG ", "name": "New"})
    assert response.status_code == 200, response.text
    assert "Check your inbox" in response.text
    assert states(project) == {"New.Reader@example.org": "pending"}

    mails = sorted((project.root / "outbox" / "confirmations").glob("*.eml"))
    assert len(mails) == 1
    message = email.message_from_bytes(mails[0].read_bytes(), policy=policy.default)
    assert message["To"] == "New.Reader@example.org"
    assert "Confirm your subscription" in message["Subject"]
    link = re.search(r"https?://\S+/confirm/\S+", message.get_content()).group(0)
    assert link.startswith(f"{server.url}/confirm/")
    settings = server.settings(monkeypatch)
    assert read_token(settings, "confirm", link.rsplit("/", 1)[1]) == "New.Reader@example.org"

    page = requests.get(link, allow_redirects=False, timeout=10)
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert states(project) == {"New.Reader@example.org": "pending"}  # a GET confirms nothing

    done = requests.post(link, allow_redirects=False, timeout=10)
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert "Set-Cookie" not in done.headers
    assert states(project) == {"New.Reader@example.org": "active"}

    # Asking again while active sends nothing, and the answer does not tell.
    again = server.sign_up({"email": "New.Reader@example.org"})
    assert again.status_code == 200 and "Check your inbox" in again.text
    assert len(list((project.root / "outbox" / "confirmations").glob("*.eml"))) == 1

    # An altered confirmation token activates nothing.
    server.sign_up({"email": "other@example.org"})
    other = make_token(settings, "confirm", "other@example.org")
    altered = other.split(".")[0] + "." + link.rsplit(".", 1)[1]
    assert server.request("POST", f"/confirm/{altered}").status_code == 400
    assert states(project)["other@example.org"] == "pending"


def test_a_bad_address_is_refused_and_escaped(project, serve):
    server = serve()
    response = server.sign_up({"email": "<script>alert(1)</script>", "name": "<b>x</b>"})
    assert response.status_code == 400
    assert "<script>" not in response.text and "<b>x</b>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert 'role="alert"' in response.text
    assert states(project) == {}
    assert not (project.root / "outbox" / "confirmations").exists()


def test_the_subscribe_form_can_be_switched_off(project, serve, monkeypatch):
    server = serve(web="subscribe_form = false")
    assert server.request("GET", "/subscribe").status_code == 404
    assert server.request("POST", "/subscribe", data={"email": "a@example.org"}).status_code \
        == 404
    assert states(project) == {}
    # Unsubscribing never depends on it.
    add(project, "ann@example.org")
    link = unsubscribe_url(server.settings(monkeypatch), "ann@example.org")
    assert requests.post(link, data=ONE_CLICK, timeout=10).status_code == 200
    assert states(project) == {"ann@example.org": "unsubscribed"}


# -- the secret -------------------------------------------------------------------------------


def test_without_the_variable_a_generated_secret_is_kept_private_and_used(project, serve,
                                                                          monkeypatch, caplog):
    import logging

    server = serve(secret=None)
    add(project, "ann@example.org")
    settings = server.settings(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="briefbot.tokens"):
        link = unsubscribe_url(settings, "ann@example.org")  # makes and signs with the secret
    secret_file = project.root / "state" / "token-secret"
    assert "BRIEFBOT_TOKEN_SECRET is not set" in caplog.text and str(secret_file) in caplog.text
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    generated = secret_file.read_text().strip()
    assert len(generated) >= 32

    response = requests.post(link, data=ONE_CLICK, timeout=10)
    assert response.status_code == 200
    assert states(project)["ann@example.org"] == "unsubscribed"
    out, err = server.stop()
    # Said once per state folder, when the secret was made: not again by every command.
    assert "BRIEFBOT_TOKEN_SECRET is not set" not in err
    assert generated not in out + err + response.text


def test_the_token_secret_is_never_printed(project, serve, monkeypatch):
    server = serve()
    add(project, "ann@example.org")
    settings = server.settings(monkeypatch)
    outputs = [
        server.request("GET", f"/unsubscribe/{make_token(settings, 'unsubscribe', 'x@a.org')}"),
        server.sign_up({"email": "b@example.org"}),
        server.sign_up({"email": "bad"}),
        server.request("GET", "/unsubscribe/forged.token"),
    ]
    texts = [r.text + str(r.headers) for r in outputs]
    for args in (("config",), ("subscribers", "list"), ("subscribers", "export")):
        result = project.cli(*args, env=server.env)
        texts.append(result.stdout + result.stderr)
    texts += [p.read_text() for p in (project.root / "outbox").rglob("*.eml")]
    texts.append("".join(server.stop()))
    assert len(texts) == 9
    assert not any(SECRET in text for text in texts)
    assert not (project.root / "state" / "token-secret").exists()  # the variable was used


def test_tokens_round_trip_and_bind_purpose_and_address(project, monkeypatch):
    monkeypatch.setenv("BRIEFBOT_TOKEN_SECRET", SECRET)
    project.write_config(extra='[email]\nbase_url = "https://list.example.org/"\n'
                               'unsubscribe_mailto = "mailto:leave@example.org"\n')
    settings = load_settings(project.config)
    token = make_token(settings, "unsubscribe", "Ann@example.org")
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", token)
    assert read_token(settings, "unsubscribe", token) == "Ann@example.org"
    assert read_token(settings, "confirm", token) is None
    assert unsubscribe_url(settings, "Ann@example.org") == (
        f"https://list.example.org/unsubscribe/{token}")
    assert unsubscribe_mailto(settings, "Ann@example.org") == (
        f"mailto:leave@example.org?subject=unsubscribe%20{token}")
    with pytest.raises(ValueError, match="purpose"):
        make_token(settings, "delete", "Ann@example.org")
    monkeypatch.setenv("BRIEFBOT_TOKEN_SECRET", SECRET + "-rotated")
    assert read_token(settings, "unsubscribe", token) is None

    project.write_config()
    assert unsubscribe_mailto(load_settings(project.config), "Ann@example.org") is None


# -- the live preview is private ------------------------------------------------------------------


def test_the_preview_is_off_unless_configured(project, serve):
    from tests.briefs_factory import write_brief

    write_brief(project.briefs, "embargoed.md", status="draft", title="Secret merger")
    server = serve()
    for path in ("/preview", "/preview/", "/preview/?drafts=1", "/preview/anything/"):
        answer = server.request("GET", path)
        assert answer.status_code == 404 and "Secret merger" not in answer.text
        assert str(project.root) not in answer.text


def test_the_preview_needs_its_token_to_start_and_to_answer(project):
    project.write_config(extra="[web]\npreview = true\n")
    for token in ("", "short"):
        result = project.cli("serve", "--port", "0", env={"BRIEFBOT_PREVIEW_TOKEN": token},
                             timeout=60)
        assert result.returncode == 2, result.stderr
        assert "export BRIEFBOT_PREVIEW_TOKEN" in result.stderr
        assert "Traceback" not in result.stderr


def test_public_pages_show_no_path_or_internal_error(project, serve):
    server = serve()
    for path in ("/unsubscribe/%00", "/confirm/" + "a" * 1300, "/nope/../../etc/passwd"):
        answer = server.request("GET", path)
        assert answer.status_code in (400, 404)
        assert str(project.root) not in answer.text and "Traceback" not in answer.text


def test_a_post_that_did_not_come_from_the_form_changes_nothing(project, serve):
    server = serve()
    for data in ({"email": "csrf@example.org"},  # a cross-site form or a script
                 {"email": "csrf@example.org", "form": "1.deadbeef"},
                 {"email": "csrf@example.org", "form": "not-a-token"}):
        answer = server.request("POST", "/subscribe", data=data)
        assert answer.status_code == 400 and "expired" in answer.text
    assert states(project) == {}
    assert not list((project.root / "outbox").rglob("*.eml"))


def test_one_client_cannot_flood_the_list_or_inboxes(project, serve):
    server = serve()
    answers = [server.sign_up({"email": f"flood{n}@example.org"}).status_code
               for n in range(12)]
    assert answers[:5] == [200] * 5 and set(answers[5:]) == {429}
    assert len(states(project)) == 5
    assert len(list((project.root / "outbox" / "confirmations").glob("*.eml"))) == 5


def test_a_silent_connection_is_cut_off_and_others_are_still_served(project, serve):
    server = serve()
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=30)
              for _ in range(5)]
    try:
        silent[0].sendall(b"GET /subscribe HTTP/1.1\r\nHost: x\r\n")  # and never finishes
        assert server.request("GET", "/").status_code == 200  # still answering others
        silent[0].settimeout(40)
        assert silent[0].recv(100) == b""  # closed by the server, not left hanging
    finally:
        for connection in silent:
            connection.close()


def test_a_local_hero_image_reaches_the_email_through_serve(project, serve):
    from PIL import Image as PILImage

    from bot.render.email import prepare_digest
    from tests.briefs_factory import write_brief

    server = serve()
    PILImage.new("RGB", (3000, 2000), (200, 40, 40)).save(project.briefs / "photo.png")
    write_brief(project.briefs, "pictured.md", published_at="2026-11-24T09:00:00Z",
                extra="image: photo.png\nimage_alt: A red square\n")
    settings = load_settings(project.config)
    from bot.briefs import BriefReader

    briefs = BriefReader.from_settings(settings).scan(settings.brief_folders).briefs
    html = prepare_digest(settings, briefs, period_label="2026-W48",
                          now=datetime(2026, 11, 30, 8, tzinfo=UTC)).html
    found = re.search(rf'src="({re.escape(server.url)}/images/[0-9a-f]{{32}}\.(?:jpg|png))"',
                      html)
    assert found, "the local image is linked where serve answers for it"
    answer = requests.get(found.group(1), timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("image/")
    with PILImage.open(io.BytesIO(answer.content)) as fitted:
        assert max(fitted.size) <= 1200 and fitted.size[0] / fitted.size[1] == pytest.approx(1.5,
                                                                                          0.01)
    for guess in ("/images/../config.toml", "/images/" + "0" * 32 + ".png",
                  "/images/%2e%2e%2fconfig.toml"):
        assert server.request("GET", guess).status_code == 404

    # Opened as a reader would, in Chromium: the picture loads from serve, at its shape.
    from tests.chromium import chromium, chromium_path

    if chromium_path() is None and not os.environ.get("CI"):
        pytest.skip("Chromium is not installed: `apt-get install chromium`")
    page_file = project.root / "delivered.html"
    page_file.write_text(html, encoding="utf-8")
    with chromium(project.root / "profile") as page:
        page.open(page_file.as_uri(), width=375)
        page.evaluate("Promise.all([...document.images].map(i => i.decode().catch(() => 0)))")
        drawn = page.evaluate("[...document.images].map(i => [i.currentSrc, i.naturalWidth,"
                              " i.naturalHeight, i.getBoundingClientRect().width,"
                              " i.getBoundingClientRect().height])")
    (src, natural_w, natural_h, width, height), = [d for d in drawn if "/images/" in d[0]]
    assert natural_w > 0 and width <= 375
    assert abs((width / height) / (natural_w / natural_h) - 1) < 0.01
