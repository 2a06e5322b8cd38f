"""Fetching a hero image over HTTP(S): each hop's host checked by `bot.netguard`, the connection
made to the checked address (direct or through the environment's proxy), redirects followed by
hand, the body read within a byte cap, and a watchdog that cuts the sockets at the deadline.

It also owns `ImageError`, which a failed download is the first to raise; `bot.images` (which
checks and fits what is fetched) re-exports it.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import socket
import ssl as ssl_module
import threading
import time
import urllib.request
from urllib.parse import unquote, urljoin, urlsplit

import urllib3
from requests.certs import where as _default_ca_bundle
from requests.utils import requote_uri
from urllib3.connection import HTTPConnection, HTTPSConnection

from bot.netguard import AddressRefused, AllowList, Unresolvable, resolve_checked

_CHUNK = 64 * 1024
_USER_AGENT = "briefbot (hero image fetch)"
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ImageError(Exception):
    """A hero image could not be loaded or fitted; the message says what to fix."""


def _download(url: str, *, max_bytes: int, timeout: float, allow: AllowList) -> bytes:
    """GET `url` with redirects followed by hand, each hop's host checked, within `timeout`
    in all (the connection or the proxy tunnel always goes to the checked address)."""
    deadline = time.monotonic() + timeout
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        with _Exchange(url, current, allow=allow, timeout=timeout, deadline=deadline) as exchange:
            resp = exchange.response
            location = resp.headers.get("Location")
            if resp.status in _REDIRECTS and location:
                current = urljoin(current, location.strip())
                continue
            if resp.status >= 400:
                raise ImageError(
                    f"Image {url} answered HTTP {resp.status} {resp.reason}; "
                    "check the URL in the brief."
                )
            if resp.status != 200:
                raise ImageError(
                    f"Image {url} answered HTTP {resp.status} {resp.reason}, not the image; "
                    "link the image file itself."
                )
            length = resp.headers.get("Content-Length", "").strip()
            if length.isdigit() and int(length) > max_bytes:
                raise _too_big(url, max_bytes)
            return _read_body(exchange, max_bytes=max_bytes)
    raise ImageError(
        f"Image {url} redirected more than {MAX_REDIRECTS} times; link the image file itself."
    )


class _Exchange:
    """One request and its response, over a connection to an address that was checked.

    The connection goes to the IP address `resolve_checked` returned, never to a name resolved
    again, while the Host header, TLS SNI and the certificate check use the URL's host name.
    A watchdog shuts the socket at the deadline, so no slow-drip server (headers or body) keeps
    a download going past it.
    """

    def __init__(self, url: str, current: str, *, allow: AllowList, timeout: float,
                 deadline: float):
        self.url, self.current = url, current
        self.timeout, self.deadline = timeout, deadline
        self.allow = allow
        self.conn: _WatchedHTTPConnection | _WatchedHTTPSConnection | None = None
        self.watchdog: threading.Timer | None = None
        self.expired = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.response: urllib3.BaseHTTPResponse

    def __enter__(self) -> _Exchange:
        try:
            self.response = self._open()
            return self
        except BaseException:
            self._close()
            raise

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _open(self) -> urllib3.BaseHTTPResponse:
        url, current = self.url, self.current
        hop = "" if current == url else f" (redirected to {current})"
        parts = urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ImageError(
                f"Image {url} redirected to {current!r}, which is not an http(s) URL; "
                "link the image file itself."
            )
        try:
            host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            host, port = None, 0
        if not host:
            raise ImageError(f"Image {url}{hop} has no valid host; check the URL in the brief.")
        try:
            addresses = resolve_checked(host, port, self.allow)
        except AddressRefused as refused:
            raise ImageError(f"cannot fetch the hero image {url}{hop}: {refused}") from None
        except Unresolvable as unresolvable:
            raise ImageError(
                f"Image {url}{hop} could not be fetched ({unresolvable}); "
                "check the URL and your connection."
            ) from None
        # As requests sends them: a path percent-encoded, a host name in its IDNA form.
        target = requote_uri((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        try:
            host = host if host.isascii() else host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ImageError(
                f"Image {url}{hop} has no valid host; check the URL in the brief."
            ) from None
        default_port = port == (443 if scheme == "https" else 80)
        shown = f"[{host}]" if ":" in host else host
        headers = {
            "Host": shown if default_port else f"{shown}:{port}",
            "User-Agent": _USER_AGENT,
            "Accept": "image/*",
            "Accept-Encoding": "identity",
            "Connection": "close",
        }
        self._arm()
        try:
            self.conn = self._connect(scheme, host, port, addresses)
            self.conn.timeout = self._op_timeout()
            self.conn.request("GET", target, headers=headers, preload_content=False,
                              decode_content=False)
            self.conn.timeout = self._op_timeout()
            return self.conn.getresponse()
        except ImageError:
            raise
        except (OSError, ValueError, http.client.HTTPException,
                urllib3.exceptions.HTTPError) as exc:
            raise self.failure(exc, hop) from None

    def _connect(self, scheme: str, host: str, port: int,
                 addresses: list) -> _WatchedHTTPConnection | _WatchedHTTPSConnection:
        proxy = _proxy_for(scheme, host)
        error: BaseException | None = None
        for address in addresses:
            # Through a proxy, the tunnel goes to the checked address too, never to the name.
            where = (proxy[0], proxy[1]) if proxy else (str(address), port)
            options = {"port": where[1], "timeout": self._op_timeout()}
            conn: _WatchedHTTPConnection | _WatchedHTTPSConnection
            if scheme == "https":
                conn = _WatchedHTTPSConnection(where[0], server_hostname=host,
                                               cert_reqs="CERT_REQUIRED", **_ca_options(),
                                               **options)
            else:
                conn = _WatchedHTTPConnection(where[0], **options)
            conn.exchange = self
            if proxy:
                conn.set_tunnel(str(address), port, headers=proxy[2])
            try:
                conn.connect()
                return conn
            except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
                conn.close()
                error = exc
        assert error is not None
        raise error

    def _op_timeout(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired.set()
            raise TimeoutError("deadline")
        return min(self.timeout, remaining)

    def _arm(self) -> None:
        """Start the watchdog: at the deadline it shuts every socket of this exchange, which
        wakes a read blocked in a proxy tunnel, a TLS handshake, the headers or the body."""
        self.watchdog = threading.Timer(max(0.0, self.deadline - time.monotonic()),
                                        self._expire)
        self.watchdog.daemon = True
        self.watchdog.start()

    def watch(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            if self.expired.is_set():
                _shut(sock)

    def _expire(self) -> None:
        with self.lock:
            self.expired.set()
            for sock in self.sockets:
                _shut(sock)

    def failure(self, exc: BaseException, hop: str = "") -> ImageError:
        if self.expired.is_set() or time.monotonic() >= self.deadline:
            return _too_slow(self.url, self.timeout)
        return ImageError(
            f"Image {self.url}{hop} could not be fetched ({_describe(exc)}); "
            "check the URL and your connection."
        )

    def _close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.conn is not None:
            self.conn.close()


class _Watched:
    """Mixed into urllib3's connections: each new socket goes to the exchange's watchdog."""

    exchange: _Exchange | None = None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        if self.exchange is not None:
            self.exchange.watch(sock)
        return sock


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


def _shut(sock: socket.socket) -> None:
    try:  # the plain socket's shutdown (not SSLSocket's): wakes a blocked read, TLS or not
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _read_body(exchange: _Exchange, *, max_bytes: int) -> bytes:
    """Read at most `max_bytes`, one socket read at a time, checking the clock after each."""
    url, deadline, resp = exchange.url, exchange.deadline, exchange.response
    buf = bytearray()
    try:
        while True:
            chunk = resp.read1(_CHUNK)
            # After the watchdog cut the connection, an end of data is not the image's end.
            if time.monotonic() > deadline or exchange.expired.is_set():
                raise _too_slow(url, exchange.timeout)
            if not chunk:
                return bytes(buf)
            buf += chunk
            if len(buf) > max_bytes:
                raise _too_big(url, max_bytes)
    except ImageError:
        raise
    except (OSError, ValueError, http.client.HTTPException,
            urllib3.exceptions.HTTPError) as exc:
        if time.monotonic() > deadline or exchange.expired.is_set():
            raise _too_slow(url, exchange.timeout) from None
        raise ImageError(
            f"Image {url} could not be fetched ({_describe(exc)}); "
            "check the URL and your connection."
        ) from None


def _too_slow(url: str, timeout: float) -> ImageError:
    return ImageError(
        f"Image {url} did not download within {timeout:g} s; host it somewhere faster "
        "or raise images.timeout."
    )


def _describe(exc: BaseException) -> str:
    """A short reason for a network failure, never a library object's repr."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl_module.SSLCertVerificationError):
            return f"TLS certificate not accepted: {seen.verify_message or seen.reason}"
        if isinstance(seen, ssl_module.SSLError):
            return f"TLS failed: {seen.reason or seen.__class__.__name__}"
        if isinstance(seen, TimeoutError | socket.timeout | urllib3.exceptions.TimeoutError):
            return "no answer in time"
        if isinstance(seen, http.client.RemoteDisconnected):
            return "the server closed the connection without answering"
        if isinstance(seen, http.client.IncompleteRead | urllib3.exceptions.ProtocolError):
            return "the server closed the connection before the end of the image"
        if isinstance(seen, http.client.HTTPException):
            return f"not a valid HTTP answer ({seen.__class__.__name__})"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        if isinstance(seen, OSError) and str(seen).startswith("Tunnel connection failed"):
            return f"the proxy refused the connection: {str(seen).partition(': ')[2]}"
        seen = seen.__cause__ or seen.__context__
    return exc.__class__.__name__


def _proxy_for(scheme: str, host: str) -> tuple[str, int, dict[str, str]] | None:
    """The HTTP proxy the environment names for `scheme` (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY,
    NO_PROXY, as requests reads them): (host, port, CONNECT headers), or None to go direct."""
    proxies = urllib.request.getproxies_environment()
    chosen = proxies.get(scheme) or proxies.get("all")
    if not chosen or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    parts = urlsplit(chosen if "://" in chosen else f"http://{chosen}")
    try:
        proxy_host, proxy_port = parts.hostname, parts.port or 8080
    except ValueError:
        proxy_host, proxy_port = None, 0
    if parts.scheme.lower() != "http" or not proxy_host:
        raise ImageError(
            f"The {scheme} proxy {redact_userinfo(chosen)} from the environment is not an "
            "http://host:port proxy URL; fix it or unset it."
        )
    headers = {}
    if parts.username is not None:
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    return proxy_host, proxy_port, headers


def redact_userinfo(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)


def _ca_options() -> dict[str, str]:
    """The CA bundle requests would use: $REQUESTS_CA_BUNDLE, $CURL_CA_BUNDLE, else certifi."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    bundle = bundle or _default_ca_bundle()
    return {"ca_cert_dir": bundle} if os.path.isdir(bundle) else {"ca_certs": bundle}


def _too_big(source: str, max_bytes: int) -> ImageError:
    return ImageError(f"Image {source} is larger than {max_bytes} bytes; use a smaller file.")
