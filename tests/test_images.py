"""Hero image loading and fitting, against a real HTTP server on loopback."""

from __future__ import annotations

import io
import os
import socket
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from bot.channels.bluesky import IMAGES as BLUESKY_IMAGES
from bot.channels.mastodon import MASTODON_DEFAULT_MAX_BYTES, MASTODON_DEFAULT_MAX_PIXELS
from bot.channels.x import IMAGES as X_IMAGES
from bot.images import (
    ImageError,
    ProcessedImage,
    fit_image,
    load_image,
)

# Each network's limits, as its channel declares them (bot.network).
BLUESKY_MAX_BYTES = BLUESKY_IMAGES.max_bytes
X_MAX_BYTES = X_IMAGES.max_bytes

NETWORK_LIMITS = [
    pytest.param(BLUESKY_MAX_BYTES, id="bluesky"),
    pytest.param(X_MAX_BYTES, id="x"),
    pytest.param(MASTODON_DEFAULT_MAX_BYTES, id="mastodon"),
]


@dataclass
class Route:
    content_type: str
    body: bytes
    send_length: bool = True


@dataclass
class ImageServer:
    url: str
    routes: dict[str, Route]
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that *claims* huge dimensions: the classic decompression bomb shape."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _encode(im: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Generate the test images once; the big ones take about a second together."""
    folder = tmp_path_factory.mktemp("images")
    w, h = 2000, 1450  # not square, so aspect-ratio bugs show
    noise = Image.frombytes("RGB", (w, h), os.urandom(w * h * 3))
    huge = Image.linear_gradient("L").resize((12_000, 12_000))

    photo = Image.new("RGB", (600, 400), (255, 0, 0))
    photo.paste((0, 0, 255), (300, 0, 600, 400))  # left red, right blue (as stored)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    exif[0x010F] = "SecretCam"
    exif[0x0110] = "Model 7"
    exif.get_ifd(0x8825)[1] = "N"  # GPS latitude ref: location data must not leak

    cutout = Image.frombytes("RGB", (300, 200), os.urandom(300 * 200 * 3)).convert("RGBA")
    cutout.paste((0, 0, 0, 0), (150, 0, 300, 200))  # right half fully transparent

    made = {
        "noise.png": _encode(noise, "PNG", compress_level=1),
        "huge.jpg": _encode(huge, "JPEG", quality=85),
        "exif.jpg": _encode(photo, "JPEG", quality=90, exif=exif.tobytes()),
        "cutout.png": _encode(cutout, "PNG"),
        "small.png": _encode(Image.new("RGB", (120, 80), (0, 128, 0)), "PNG"),
        "bomb.png": _png_header_only(30_000, 30_000),
        "over-cap.png": _png_header_only(15_000, 15_000),
        "fake.png": b"This is not an image, just text served as image/png.\n",
    }
    assert len(made["noise.png"]) > 8_000_000
    for name, data in made.items():
        (folder / name).write_bytes(data)
    return made


@pytest.fixture(scope="session")
def server(images: dict[str, bytes]) -> Iterator[ImageServer]:
    """A real HTTP server on 127.0.0.1 that counts requests per path."""
    routes = {
        "/noise.png": Route("image/png", images["noise.png"]),
        "/huge.jpg": Route("image/jpeg", images["huge.jpg"]),
        "/exif.jpg": Route("image/jpeg", images["exif.jpg"]),
        "/cached.png": Route("image/png", images["small.png"]),
        "/small.png": Route("image/png", images["small.png"]),
        "/unlabelled": Route("application/octet-stream", images["small.png"]),
        "/fake.png": Route("image/png", images["fake.png"]),
        "/stream.png": Route("image/png", images["noise.png"], send_length=False),
    }
    state: ImageServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.hits[self.path] += 1
            route = routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", route.content_type)
            if route.send_length:
                self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            try:
                self.wfile.write(route.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading on purpose (size limit)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state = ImageServer(url=f"http://127.0.0.1:{httpd.server_port}", routes=routes)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment must never see loopback test traffic."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _fetch(server: ImageServer, path: str, tmp_path: Path, **kwargs: object) -> bytes:
    """Fetch from the loopback test server, which the allow-list has to let through."""
    return load_image(server.url + path, base_dir=tmp_path, cache_dir=tmp_path / "cache",
                      allow_hosts=[server.url.removeprefix("http://")], **kwargs)


def _check_fits(result: ProcessedImage, original: bytes, max_bytes: int) -> Image.Image:
    """The common contract: under the limit, honest metadata, same aspect ratio."""
    assert len(result.data) <= max_bytes
    assert result.original_size == len(original)
    out = Image.open(io.BytesIO(result.data))
    assert Image.MIME[out.format or ""] == result.mime
    assert out.size == (result.width, result.height)
    src_w, src_h = Image.open(io.BytesIO(original)).size
    assert abs(result.height - result.width * src_h / src_w) <= 1
    return out


@pytest.mark.parametrize("max_bytes", NETWORK_LIMITS)
@pytest.mark.parametrize("path", ["/noise.png", "/huge.jpg"])
def test_fits_each_network_limit(
    server: ImageServer, tmp_path: Path, path: str, max_bytes: int
) -> None:
    data = _fetch(server, path, tmp_path)
    result = fit_image(data, max_bytes=max_bytes)
    _check_fits(result, data, max_bytes)
    assert result.mime == "image/jpeg"


def test_noise_png_is_scaled_down_for_bluesky(images: dict[str, bytes]) -> None:
    """Quality steps alone cannot fit 8 MB of noise into 1 MB: it must shrink."""
    result = fit_image(images["noise.png"], max_bytes=BLUESKY_MAX_BYTES)
    _check_fits(result, images["noise.png"], BLUESKY_MAX_BYTES)
    assert result.resized
    assert result.width < 2000


def test_huge_image_respects_side_and_pixel_limits(images: dict[str, bytes]) -> None:
    result = fit_image(images["huge.jpg"], max_bytes=X_MAX_BYTES, max_side=4096)
    _check_fits(result, images["huge.jpg"], X_MAX_BYTES)
    assert (result.width, result.height) == (4096, 4096)
    assert result.resized

    result = fit_image(images["huge.jpg"], max_bytes=X_MAX_BYTES, max_pixels=1_000_000)
    assert result.width * result.height <= 1_000_000
    assert result.width == 1000


def test_exif_is_stripped_and_orientation_applied(
    server: ImageServer, tmp_path: Path, images: dict[str, bytes]
) -> None:
    data = _fetch(server, "/exif.jpg", tmp_path)
    assert Image.open(io.BytesIO(data)).getexif()[0x010F] == "SecretCam"

    result = fit_image(data, max_bytes=BLUESKY_MAX_BYTES)
    out = Image.open(io.BytesIO(result.data))
    assert len(out.getexif()) == 0
    assert "exif" not in out.info
    assert b"SecretCam" not in result.data and b"Model 7" not in result.data
    # Orientation 6 turns the stored 600x400 (red | blue) into an upright 400x600 (red over blue).
    assert (result.width, result.height) == (400, 600)
    assert not result.resized
    red, _, blue = out.convert("RGB").getpixel((200, 100))
    assert red > 200 and blue < 60
    red, _, blue = out.convert("RGB").getpixel((200, 500))
    assert blue > 200 and red < 60


def test_transparent_png_stays_png_when_it_fits(images: dict[str, bytes]) -> None:
    result = fit_image(images["cutout.png"], max_bytes=BLUESKY_MAX_BYTES)
    out = _check_fits(result, images["cutout.png"], BLUESKY_MAX_BYTES)
    assert result.mime == "image/png"
    assert out.convert("RGBA").getpixel((250, 100))[3] == 0


def test_transparent_png_is_flattened_on_white_when_too_big(images: dict[str, bytes]) -> None:
    limit = len(images["cutout.png"]) // 2
    result = fit_image(images["cutout.png"], max_bytes=limit)
    out = _check_fits(result, images["cutout.png"], limit)
    assert result.mime == "image/jpeg"
    assert all(channel > 240 for channel in out.convert("RGB").getpixel((250, 100)))


def test_cache_avoids_a_second_request(server: ImageServer, tmp_path: Path) -> None:
    first = _fetch(server, "/cached.png", tmp_path)
    second = _fetch(server, "/cached.png", tmp_path)
    assert first == second
    assert server.hits["/cached.png"] == 1
    assert len(list((tmp_path / "cache").iterdir())) == 1  # no temp files left behind


def test_content_type_comes_from_the_bytes(server: ImageServer, tmp_path: Path) -> None:
    assert _fetch(server, "/unlabelled", tmp_path) == _fetch(server, "/small.png", tmp_path)


def test_non_image_names_the_source_and_is_not_cached(server: ImageServer, tmp_path: Path) -> None:
    url = server.url + "/fake.png"
    with pytest.raises(ImageError, match="fake.png") as err:
        _fetch(server, "/fake.png", tmp_path)
    assert url in str(err.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_http_error_names_the_source(server: ImageServer, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"HTTP 404") as err:
        _fetch(server, "/missing.png", tmp_path)
    assert server.url + "/missing.png" in str(err.value)


@pytest.mark.parametrize("path", ["/noise.png", "/stream.png"], ids=["length", "streamed"])
def test_too_big_is_refused(server: ImageServer, tmp_path: Path, path: str) -> None:
    with pytest.raises(ImageError, match="larger than 1000000 bytes"):
        _fetch(server, path, tmp_path, max_bytes=1_000_000)


def test_unreachable_host(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/gone.png"
    with pytest.raises(ImageError, match="could not be fetched") as err:
        load_image(url, base_dir=tmp_path, cache_dir=tmp_path / "cache", timeout=2,
                   allow_hosts=["127.0.0.1"])
    assert url in str(err.value)


@pytest.mark.parametrize(
    "source",
    ["file:///etc/passwd", "FILE:///tmp/x.png", "ftp://127.0.0.1/x.png", "data:image/png;base64,"],
)
def test_other_schemes_are_refused(tmp_path: Path, source: str) -> None:
    with pytest.raises(ImageError, match="unsupported scheme"):
        load_image(source, base_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_local_relative_path(tmp_path: Path, images: dict[str, bytes]) -> None:
    brief_dir = tmp_path / "briefs" / "2024-05"
    (brief_dir / "img").mkdir(parents=True)
    (brief_dir / "img" / "hero.jpg").write_bytes(images["exif.jpg"])
    data = load_image("img/hero.jpg", base_dir=brief_dir, cache_dir=tmp_path / "cache")
    assert data == images["exif.jpg"]


def test_local_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="nope.png"):
        load_image("nope.png", base_dir=tmp_path, cache_dir=tmp_path / "cache")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", ["bomb.png", "over-cap.png"])
def test_decompression_bomb_is_refused(tmp_path: Path, images: dict[str, bytes], name: str) -> None:
    (tmp_path / name).write_bytes(images[name])
    with pytest.raises(ImageError, match="pixels"):
        load_image(name, base_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(ImageError, match="pixels"):
        fit_image(images[name], max_bytes=BLUESKY_MAX_BYTES)


def test_sixteen_bit_grey_png_is_scaled_not_clipped_to_white() -> None:
    """Pillow's own I;16 → L convert clips everything above 255: a mid grey came out white."""
    grey = Image.new("I;16", (64, 64), 30000)
    grey.putpixel((0, 0), 0)
    buf = io.BytesIO()
    grey.save(buf, "PNG")
    result = fit_image(buf.getvalue(), max_bytes=BLUESKY_MAX_BYTES)
    out = Image.open(io.BytesIO(result.data)).convert("L")
    assert abs(out.getpixel((32, 32)) - 30000 * 255 // 65535) <= 2
    assert out.getpixel((0, 0)) <= 3


def test_pixel_cap_is_never_exceeded_by_rounding() -> None:
    """9000x6000 under Mastodon's 33,177,600 px: rounding each side gives 7055x4703, over it."""
    data = io.BytesIO()
    Image.new("L", (9000, 6000), 128).save(data, "JPEG")
    result = fit_image(data.getvalue(), max_bytes=MASTODON_DEFAULT_MAX_BYTES,
                       max_pixels=MASTODON_DEFAULT_MAX_PIXELS)
    assert result.width * result.height <= MASTODON_DEFAULT_MAX_PIXELS == 33_177_600
    assert (result.width, result.height) == (7054, 4703)
