"""A brief's hero image cannot make the bot reach private addresses, read files outside the
brief folders, hang on a slow server or decode a gigantic picture.

Every server here is a real HTTP server on loopback; the ones a fetch must not reach count their
requests, and the tests assert they saw none.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from bot.channels.bluesky import IMAGES as BLUESKY_IMAGES
from bot.config import ConfigError, Settings, parse_config
from bot.images import ImageError, fit_image, load_image
from bot.netguard import AllowList, refusal_kind, resolve_checked
from bot.render.media import prepare_image
from tests.contract import make_brief, make_settings
from tests.smtp_server import TestCertificates

BLUESKY_MAX_BYTES = BLUESKY_IMAGES.max_bytes  # as the Bluesky channel declares it

ROOT = Path(__file__).resolve().parent.parent
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def _png(width: int = 40, height: int = 30) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (0, 120, 60)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims `width` x `height`: what a decompression bomb looks like."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


class Peer:
    """A loopback HTTP server that records every request (path, Host header) it sees."""

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler], None] | None = None, *,
                 host: str = "127.0.0.1", port: int = 0,
                 context: ssl.SSLContext | None = None):
        peer = self
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.respond = respond or (lambda handler: _send(handler, 200, PNG))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                with peer.lock:
                    peer.requests.append((self.path, self.headers.get("Host")))
                try:
                    peer.respond(self)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the client hung up on purpose

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.host, self.port = host, self.httpd.server_port
        self.netloc = f"{host}:{self.port}"
        self.url = f"{'https' if context else 'http'}://{self.netloc}"

    def __enter__(self) -> Peer:
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"",
          headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in {"Content-Type": "image/png", **(headers or {})}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(body)


def _redirect(location: str) -> Callable[[BaseHTTPRequestHandler], None]:
    return lambda handler: _send(handler, 302, b"", {"Location": location})


@pytest.fixture(autouse=True)
def _direct(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment: these requests must go straight to loopback."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def _fetch(url: str, tmp_path: Path, **kwargs: object) -> bytes:
    return load_image(url, base_dir=tmp_path, cache_dir=tmp_path / "cache", **kwargs)


def _one_line(error: pytest.ExceptionInfo[ImageError]) -> str:
    text = str(error.value)
    assert "\n" not in text and "object at 0x" not in text and "urllib3" not in text, text
    return text


def _can_bind(host: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


# -- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize("netloc", [
    "127.0.0.1:{port}", "localhost:{port}", "[::ffff:127.0.0.1]:{port}", "2130706433:{port}",
], ids=["ipv4", "localhost", "ipv4-mapped-ipv6", "decimal"])
def test_loopback_server_is_never_contacted_unless_allowed(tmp_path: Path, netloc: str) -> None:
    with Peer() as server:
        url = f"http://{netloc.format(port=server.port)}/hero.png"
        with pytest.raises(ImageError) as refused:
            _fetch(url, tmp_path)
        # An allow-list entry for another port of the same host does not open this one.
        with pytest.raises(ImageError):
            _fetch(url, tmp_path, allow_hosts=[f"127.0.0.1:{server.port + 1}"])
        assert server.requests == []
    text = _one_line(refused)
    assert text.startswith(f"cannot fetch the hero image {url}: ")
    assert "loopback address" in text and "127.0.0.1" in text
    assert "add it to images.allow_hosts if this is your intranet" in text


@pytest.mark.parametrize(("host", "kind"), [
    ("169.254.169.254", "link-local"),  # the cloud metadata service
    ("10.20.30.40", "private"),
    ("192.168.1.1", "private"),
    ("0.0.0.0", "unspecified"),
    ("[::1]", "loopback"),
    ("[fe80::1]", "link-local"),
    ("[fd12::1]", "private"),
    ("224.0.0.1", "multicast"),
    ("[::ffff:169.254.169.254]", "link-local"),
])
def test_private_and_metadata_addresses_are_refused_before_connecting(
    tmp_path: Path, host: str, kind: str
) -> None:
    started = time.monotonic()
    with pytest.raises(ImageError) as refused:
        _fetch(f"http://{host}/latest/meta-data/hero.png", tmp_path, timeout=5)
    assert time.monotonic() - started < 2  # refused, not a connection attempt timing out
    text = _one_line(refused)
    assert f"a {kind} address" in text and "images.allow_hosts" in text


def test_allow_listed_loopback_host_is_fetched(tmp_path: Path) -> None:
    with Peer() as server:
        assert _fetch(f"{server.url}/hero.png", tmp_path, allow_hosts=[server.netloc]) == PNG
        assert _fetch(f"{server.url}/net.png", tmp_path, allow_hosts=["127.0.0.0/8"]) == PNG
    assert [path for path, _ in server.requests] == ["/hero.png", "/net.png"]


def test_address_classes() -> None:
    public = ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
    refused = ["127.0.0.2", "::1", "::ffff:10.0.0.1", "100.64.0.1", "240.0.0.1",
               "2002:7f00:1::", "64:ff9b::a00:1", "ff02::1", "::"]
    assert [refusal_kind(ipaddress.ip_address(a)) for a in public] == [None] * len(public)
    assert all(refusal_kind(ipaddress.ip_address(a)) for a in refused)


def test_one_private_answer_among_public_ones_is_refused() -> None:
    def resolver(host: str, port: int, **_: object) -> list:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in ("8.8.8.8", "10.0.0.7")]

    with pytest.raises(Exception, match=r"private address \(10\.0\.0\.7\)"):
        resolve_checked("mixed.example", 80, AllowList(), resolver=resolver)
    assert resolve_checked("mixed.example", 80, AllowList(["10.0.0.0/8"]), resolver=resolver)


# -- redirects ----------------------------------------------------------------------------------


def test_redirect_from_an_allowed_host_to_loopback_is_refused(tmp_path: Path) -> None:
    with Peer() as target, Peer(_redirect(f"{target.url}/hero.png")) as first:
        url = f"{first.url}/start.png"
        with pytest.raises(ImageError) as refused:
            _fetch(url, tmp_path, allow_hosts=[first.netloc])
    assert len(first.requests) == 1 and target.requests == []
    text = _one_line(refused)
    assert f"redirected to {target.url}/hero.png" in text and "loopback" in text


@pytest.mark.skipif(not _can_bind("127.0.0.2"), reason="127.0.0.2 is not a local address here")
def test_redirect_to_another_loopback_address_is_refused(tmp_path: Path) -> None:
    with Peer(host="127.0.0.2") as target, Peer(_redirect(f"{target.url}/x.png")) as first:
        with pytest.raises(ImageError, match=r"127\.0\.0\.2 is a loopback address"):
            _fetch(f"{first.url}/start.png", tmp_path, allow_hosts=["127.0.0.1"])
    assert len(first.requests) == 1 and target.requests == []


def test_allowed_redirects_are_followed_at_most_five_times(tmp_path: Path) -> None:
    with Peer() as target, Peer() as hop:
        hop.respond = lambda handler: _send(
            handler, 302, b"", {"Location": f"{target.url}/hero.png" if handler.path == "/go"
                                else handler.path + "x"})
        allow = [hop.netloc, target.netloc]
        assert _fetch(f"{hop.url}/go", tmp_path, allow_hosts=allow) == PNG
        with pytest.raises(ImageError, match="redirected more than 5 times"):
            _fetch(f"{hop.url}/loop", tmp_path, allow_hosts=allow)
    assert len(target.requests) == 1
    assert len(hop.requests) == 1 + 6


@pytest.mark.skipif(not _can_bind("127.0.0.2"), reason="127.0.0.2 is not a local address here")
def test_dns_rebinding_cannot_move_the_connection(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The name is resolved once; the connection goes to that checked address, and the Host
    header still names the host. A second lookup would answer with a refused address."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: object, port: object, *args: object, **kwargs: object) -> list:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
        lookups.append(str(host))
        address = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    with Peer() as checked, Peer(host="127.0.0.2", port=checked.port) as other:
        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        data = _fetch(f"http://rebind.test:{checked.port}/hero.png", tmp_path,
                      allow_hosts=["127.0.0.1"])
    assert data == PNG
    assert checked.requests == [("/hero.png", f"rebind.test:{checked.port}")]
    assert other.requests == [] and lookups == ["rebind.test"]


def test_https_checks_the_certificate_against_the_host_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = TestCertificates.create(tmp_path / "tls")
    context = certs.server_context()
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs.ca_file))
    real = socket.getaddrinfo

    def resolve(host: object, port: object, *args: object, **kwargs: object) -> list:
        if host in ("localhost", "elsewhere.test"):  # only the IPv4 listener
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with Peer(context=context) as server:
        url = f"https://localhost:{server.port}/hero.png"
        assert _fetch(url, tmp_path, allow_hosts=["localhost"]) == PNG
        # The same address under a name the certificate does not carry: refused by TLS.
        with pytest.raises(ImageError) as refused:
            _fetch(f"https://elsewhere.test:{server.port}/hero.png", tmp_path,
                   allow_hosts=["elsewhere.test"], timeout=5)
    assert names[0] == "localhost" and "elsewhere.test" in names
    assert server.requests == [("/hero.png", f"localhost:{server.port}")]
    assert "TLS certificate not accepted" in _one_line(refused)


class TunnelProxy:
    """An HTTP CONNECT proxy on loopback that records each CONNECT target and pipes bytes
    (or refuses every tunnel with 403 when `refuse`)."""

    def __init__(self, *, refuse: bool = False):
        proxy = self
        self.targets: list[str] = []

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = b""
                while b"\r\n\r\n" not in head:
                    data = self.request.recv(4096)
                    if not data:
                        return
                    head += data
                target = head.split(b" ")[1].decode()
                proxy.targets.append(target)
                if refuse:
                    self.request.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                host, _, port = target.rpartition(":")
                with socket.create_connection((host, int(port)), timeout=5) as upstream:
                    self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    ends = [self.request, upstream]
                    while True:
                        ready, _, _ = select.select(ends, [], [], 5)
                        if not ready:
                            return
                        for end in ready:
                            data = end.recv(65536)
                            if not data:
                                return
                            (upstream if end is self.request else self.request).sendall(data)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> TunnelProxy:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_proxy_from_the_environment_is_asked_for_the_checked_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def resolve(host: object, port: object, *args: object, **kwargs: object) -> list:
        if host == "cms.intranet.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with Peer() as server, TunnelProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        url = f"http://cms.intranet.test:{server.port}/hero.png"
        assert _fetch(url, tmp_path, allow_hosts=["cms.intranet.test"]) == PNG
        with pytest.raises(ImageError, match="loopback"):
            _fetch(f"http://127.0.0.1:{server.port}/other.png", tmp_path)
    assert proxy.targets == [f"127.0.0.1:{server.port}"]  # the address, never the name
    assert server.requests == [("/hero.png", f"cms.intranet.test:{server.port}")]

    with TunnelProxy(refuse=True) as refusing:
        monkeypatch.setenv("HTTP_PROXY", refusing.url)
        with pytest.raises(ImageError) as refused:
            _fetch(url, tmp_path / "again", allow_hosts=["cms.intranet.test"], timeout=5)
    assert "the proxy refused the connection: 403" in _one_line(refused)


# -- time ---------------------------------------------------------------------------------------


def _drip(head: bytes, *, seconds: float = 15) -> Callable[[BaseHTTPRequestHandler], None]:
    """Send `head` at once, then one byte every 0.1 s (for `seconds` at most)."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(head)
        handler.wfile.flush()
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.1)
        handler.close_connection = True

    return respond


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Padding: ",
], ids=["body", "headers"])
def test_slow_drip_server_is_stopped_by_the_deadline(tmp_path: Path, head: bytes) -> None:
    with Peer(_drip(head)) as server:
        started = time.monotonic()
        with pytest.raises(ImageError) as slow:
            _fetch(f"{server.url}/slow.png", tmp_path, timeout=1.5,
                   allow_hosts=[server.netloc])
        elapsed = time.monotonic() - started
    assert elapsed < 4, elapsed
    assert "did not download within 1.5 s" in _one_line(slow)


# -- local paths --------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/briefs/2026 holds a brief's folder; root/outside holds a (valid) secret image."""
    (tmp_path / "briefs" / "2026").mkdir(parents=True)
    (tmp_path / "briefs" / "shared").mkdir()
    (tmp_path / "briefs" / "shared" / "hero.png").write_bytes(PNG)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(PNG)
    return tmp_path


def _local(tree: Path, source: str) -> bytes:
    return load_image(source, base_dir=tree / "briefs" / "2026", cache_dir=tree / "cache",
                      roots=[tree / "briefs"])


@pytest.mark.parametrize("source", [
    "../../outside/secret.png", "{root}/outside/secret.png", "../shared/../../outside/secret.png",
], ids=["dotdot", "absolute", "mixed"])
def test_a_path_out_of_the_brief_folders_is_refused(tree: Path, source: str) -> None:
    with pytest.raises(ImageError) as refused:
        _local(tree, source.format(root=tree))
    text = _one_line(refused)
    assert "outside the brief folders" in text and "images.folders" in text
    assert source.format(root=tree) in text


def test_paths_inside_the_brief_folders_are_read(tree: Path) -> None:
    assert _local(tree, "../shared/hero.png") == PNG
    (tree / "briefs" / "2026" / "link.png").symlink_to(tree / "briefs" / "shared" / "hero.png")
    assert _local(tree, "link.png") == PNG


def test_a_symlink_out_of_the_tree_is_refused(tree: Path) -> None:
    (tree / "briefs" / "2026" / "hero.png").symlink_to(tree / "outside" / "secret.png")
    with pytest.raises(ImageError, match="outside the brief folders"):
        _local(tree, "hero.png")


def _load_in_child(tree: Path, source: str) -> dict[str, object]:
    """Load in a child process with 1 GB of address space and 20 s: reading /dev/zero or a
    FIFO must end in an ImageError, not in a hang or an exhausted machine."""
    code = (
        "import json, resource, sys\n"
        "from pathlib import Path\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))\n"
        "from bot.images import ImageError, load_image\n"
        "source, tree = sys.argv[1], Path(sys.argv[2])\n"
        "try:\n"
        "    data = load_image(source, base_dir=tree / 'briefs' / '2026',\n"
        "                      cache_dir=tree / 'cache', roots=[tree / 'briefs'])\n"
        "except ImageError as error:\n"
        "    print(json.dumps({'error': str(error)}))\n"
        "else:\n"
        "    print(json.dumps({'bytes': len(data)}))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code, source, str(tree)], cwd=ROOT,
                              capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {source!r} hung")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_dev_zero_is_never_read(tree: Path) -> None:
    assert "outside the brief folders" in str(_load_in_child(tree, "/dev/zero")["error"])
    (tree / "briefs" / "2026" / "zero.png").symlink_to("/dev/zero")
    assert "outside the brief folders" in str(_load_in_child(tree, "zero.png")["error"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tree: Path) -> None:
    os.mkfifo(tree / "briefs" / "2026" / "hero.png")
    error = str(_load_in_child(tree, "hero.png")["error"])
    assert "is a FIFO, not an image file" in error and "hero.png" in error


def test_configured_image_folders_extend_the_brief_folders(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "assets" / "hero.png")
    brief = make_brief(tmp_path / "seeds", 1, image="../assets/hero.png")
    refused = make_settings(tmp_path, {})
    image, warning = prepare_image(refused, brief, max_bytes=BLUESKY_MAX_BYTES)
    assert image is None and warning and "outside the brief folders" in warning

    allowed = parse_config({"state": {"dir": "state"}, "images": {"folders": ["assets"]}})
    image, warning = prepare_image(Settings(allowed, tmp_path / "config.toml"), brief,
                                   max_bytes=BLUESKY_MAX_BYTES)
    assert warning is None and image is not None and image.width == 64


# -- pixels -------------------------------------------------------------------------------------


def test_a_huge_png_is_refused_before_decoding(tmp_path: Path) -> None:
    data = _png_header_only(14_000, 14_000)  # 196 MP: about 600 MB as RGB, once decoded
    (tmp_path / "huge.png").write_bytes(data)
    with pytest.raises(ImageError, match="pixels"):
        load_image("huge.png", base_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(ImageError, match="pixels"):
        fit_image(data, max_bytes=BLUESKY_MAX_BYTES, source="huge.png")


def test_an_image_wider_than_jpeg_allows_leaves_the_post_with_text_alone(tmp_path: Path) -> None:
    folder = tmp_path / "seeds"
    folder.mkdir()
    Image.new("RGB", (70_000, 10), (10, 10, 10)).save(folder / "wide.png")
    with pytest.raises(ImageError, match="65,535"):
        fit_image((folder / "wide.png").read_bytes(), max_bytes=BLUESKY_MAX_BYTES)
    brief = make_brief(folder, 1, image="wide.png")
    image, warning = prepare_image(make_settings(tmp_path, {}), brief,
                                   max_bytes=BLUESKY_MAX_BYTES)
    assert image is None and warning and "hero image left out" in warning


# -- configuration ------------------------------------------------------------------------------


def test_allow_hosts_entries_are_checked_on_load() -> None:
    parse_config({"images": {"allow_hosts": ["cms.intranet.example", "*.corp.example",
                                             "10.0.0.0/8", "[fd00::5]:8443", "cms:8080"]}})
    for bad in ["http://cms.example/", "10.0.0.0/8:80", "cms:0", ""]:
        with pytest.raises(ConfigError, match="images.allow_hosts"):
            parse_config({"images": {"allow_hosts": [bad]}})
