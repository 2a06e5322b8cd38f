"""Hero images: fetch (or read) them safely, then re-encode them to fit each network's limits.

This module owns reading a local image, checking and decoding the bytes, and fitting them (size,
pixels, format, quality); the network download is `bot.image_fetch`'s.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from bot.image_fetch import (  # noqa: F401  (re-exported: callers import these from bot.images)
    MAX_REDIRECTS,
    ImageError,
    _download,
    _too_big,
    redact_userinfo,
)
from bot.message import ProcessedImage  # noqa: F401  (re-exported: channels import it here)
from bot.netguard import AllowEntry, AllowList

# Largest image (by its header) we accept at all. Pillow's default guard (~89 MP) rejects
# legitimate 12,000 x 12,000 camera/stock images, so we raise it once and enforce our own caps.
MAX_PIXELS = 200_000_000
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Most pixels decoded at once (4 bytes each as RGBA: about 270 MB). A bigger JPEG is decoded at
# 1/2, 1/4 or 1/8 of its size (libjpeg's draft mode); PNG, GIF and WebP cannot be, so a bigger
# one is refused before a single pixel is decoded.
MAX_DECODE_PIXELS = 8192 * 8192
# JPEG stores each side in 16 bits; a wider image cannot be encoded at all.
JPEG_MAX_SIDE = 65_535

# Only web formats: keeps exotic decoders (EPS runs Ghostscript, etc.) away from fetched bytes.
_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
_JPEG_QUALITIES = (90, 82, 74, 66, 58)
_MIN_SIDE = 16
# EXIF orientation -> the transpose that makes the pixels upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def load_image(
    source: str,
    *,
    base_dir: Path,
    cache_dir: Path,
    max_bytes: int = 20_000_000,
    timeout: float = 30,
    allow_hosts: AllowList | Iterable[str | AllowEntry] = (),
    roots: Sequence[Path] = (),
) -> bytes:
    """Return the bytes of an http(s) URL or a local path, checked to be a real image.

    URLs are cached in ``cache_dir`` by the sha256 of the URL so a re-run does not refetch. A URL
    may only reach public addresses, or the hosts and networks in ``allow_hosts`` (see
    bot.netguard); ``timeout`` bounds the whole download, redirects included.
    Relative paths are resolved against ``base_dir`` (the brief's folder); a path must stay
    inside ``base_dir`` or one of ``roots`` (the brief folders) and name a regular file.
    """
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        allow = allow_hosts if isinstance(allow_hosts, AllowList) else AllowList(allow_hosts)
        return _load_url(source, cache_dir=cache_dir, max_bytes=max_bytes, timeout=timeout,
                         allow=allow)
    if scheme:
        raise ImageError(
            f"Image source {source!r} uses the unsupported scheme {scheme!r}: "
            "use an http(s) URL or a path relative to the brief."
        )
    return _load_path(source, base_dir=base_dir, max_bytes=max_bytes, roots=roots)


def fit_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int | None = None,
    max_side: int | None = None,
    png: bool = True,
    source: str = "(in memory)",
) -> ProcessedImage:
    """Re-encode an image so it fits a network's byte/pixel/side limits (each network declares
    its own: `bot.network.ImageLimits`, read through `bot.render.media.prepare_for`).

    Orientation from EXIF is applied, then all metadata is dropped (only the ICC colour profile
    is kept). Transparent images stay PNG when that fits and the network takes PNG (`png`);
    everything else becomes JPEG, stepping
    quality down first and then scaling down, always keeping the aspect ratio. ``source`` only
    names the image in error messages.
    """
    # Not closed: it reads from an in-memory buffer, so there is nothing to release early.
    im = _open(data, source)
    orig_w, orig_h = im.size
    budget = MAX_DECODE_PIXELS if max_pixels is None else min(max_pixels, MAX_DECODE_PIXELS)
    target = _target_size(orig_w, orig_h, budget, max_side)
    if max(target) > JPEG_MAX_SIDE:
        raise ImageError(
            f"Image {source} is {orig_w}x{orig_h} pixels: no side may exceed "
            f"{JPEG_MAX_SIDE:,} pixels; crop or resize it."
        )
    # An RGB profile stays valid on our RGB output; a CMYK or grey one would skew colours.
    icc = im.info.get("icc_profile") if im.mode in ("RGB", "RGBA", "P", "PA") else None
    try:
        orientation = im.getexif().get(0x0112, 1)
        if im.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 size: big photos never fully hit memory,
            # and never more than MAX_DECODE_PIXELS of them.
            im.draft(None, _draft_request(orig_w, orig_h, target))
        if im.width * im.height > MAX_DECODE_PIXELS:
            raise _bomb(source)  # _open refuses these; this is the last line before decoding
        im.load()
        base = _normalise_mode(im)
        if base.width < target[0] or base.height < target[1]:
            target = _target_size(base.width, base.height, budget, max_side)  # never upscale
        if base.size != target:
            base = base.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        if orientation in _TRANSPOSE:
            base = base.transpose(_TRANSPOSE[orientation])
    except (OSError, ValueError, TypeError, Image.DecompressionBombError) as exc:
        raise ImageError(
            f"Image {source} could not be decoded ({exc}); re-save it as a JPEG or PNG."
        ) from exc
    base.info = {}
    oriented_orig = (orig_h, orig_w) if orientation in (5, 6, 7, 8) else (orig_w, orig_h)

    def result(payload: bytes, mime: str, img: Image.Image) -> ProcessedImage:
        return ProcessedImage(
            data=payload,
            mime=mime,
            width=img.width,
            height=img.height,
            original_size=len(data),
            resized=img.size != oriented_orig,
        )

    if base.mode == "RGBA":
        if png:
            encoded = _encode(base, "PNG", icc)
            if len(encoded) <= max_bytes:
                return result(encoded, "image/png", base)
        base = _flatten(base)

    img = base
    while True:
        size = 0
        for quality in _JPEG_QUALITIES:
            jpeg = _encode(img, "JPEG", icc, quality=quality)
            size = len(jpeg)
            if size <= max_bytes:
                return result(jpeg, "image/jpeg", img)
        # Bytes scale roughly with pixel count; aim a bit under the limit.
        factor = min(0.9, max(0.3, math.sqrt(max_bytes / size) * 0.9))
        new_w = round(img.width * factor)
        new_h = round(new_w * base.height / base.width)
        if min(new_w, new_h) < _MIN_SIDE:
            raise ImageError(
                f"Image {source} cannot be made smaller than {max_bytes} bytes; "
                "use a simpler image."
            )
        img = base.resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0)


def _load_url(url: str, *, cache_dir: Path, max_bytes: int, timeout: float,
              allow: AllowList) -> bytes:
    """Fetch with bounded size and time, caching only bytes that proved to be an image."""
    cache_file = cache_dir / hashlib.sha256(url.encode()).hexdigest()
    if cache_file.is_file():
        cached = cache_file.read_bytes()
        try:
            _check_image(cached, url)
            return cached
        except ImageError:
            cache_file.unlink(missing_ok=True)  # corrupt cache entry: fetch again

    data = _download(url, max_bytes=max_bytes, timeout=timeout, allow=allow)
    _check_image(data, url)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, cache_file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data


def _load_path(source: str, *, base_dir: Path, max_bytes: int, roots: Sequence[Path]) -> bytes:
    """Read a local image that lies inside the brief's folder or `roots`, regular files only.

    The path is resolved (symlinks followed) and must land inside one of those folders; the file
    is then opened without following a symlink and without blocking (a FIFO never hangs the
    run), and checked again on the open descriptor, so nothing swapped in meanwhile is read.
    """
    given = Path(source).expanduser()
    path = given if given.is_absolute() else base_dir / given
    folders = [base_dir, *roots]
    hint = (
        "put the image in the brief's folder (paths are relative to it) "
        "or add its folder to images.folders"
    )
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or "a symlink loop"
        raise ImageError(
            f"Image file {source!r} could not be read at {path} ({reason}); "
            "paths are relative to the brief's folder."
        ) from None
    inside = [folder for folder in folders if _within(real, folder)]
    if not inside:
        raise ImageError(
            f"Image file {source!r} is outside the brief folders (it is {real}); {hint}."
        )
    try:
        before = os.stat(real)
        if not stat.S_ISREG(before.st_mode):
            raise _not_regular(source, real, before.st_mode)
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as fh:
            opened = os.fstat(fh.fileno())
            if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
                before.st_dev, before.st_ino
            ):
                raise _not_regular(source, real, opened.st_mode)
            # Where Linux says the descriptor really is: a folder swapped for a symlink after
            # the check above would show here.
            where = Path(f"/proc/self/fd/{fh.fileno()}")
            if where.is_symlink() and not any(
                _within(where.resolve(), folder) for folder in inside
            ):
                raise ImageError(
                    f"Image file {source!r} is outside the brief folders (it is "
                    f"{where.resolve()}); {hint}."
                )
            if opened.st_size > max_bytes:
                raise _too_big(source, max_bytes)
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _too_big(source, max_bytes)
    except OSError as exc:
        raise ImageError(
            f"Image file {source!r} could not be read at {real} ({exc.strerror}); "
            "paths are relative to the brief's folder."
        ) from None
    _check_image(data, source)
    return data


def _within(path: Path, folder: Path) -> bool:
    try:
        real_folder = folder.resolve()
    except (OSError, RuntimeError):
        return False
    return path == real_folder or path.is_relative_to(real_folder)


def _not_regular(source: str, real: Path, mode: int) -> ImageError:
    kind = (
        "a folder" if stat.S_ISDIR(mode)
        else "a FIFO" if stat.S_ISFIFO(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    return ImageError(
        f"Image file {source!r} at {real} is {kind}, not an image file; "
        "point `image` at a JPEG, PNG, GIF or WebP file."
    )


def _draft_request(w: int, h: int, target: tuple[int, int]) -> tuple[int, int]:
    """The size to ask libjpeg for: `target`, but never a decode above MAX_DECODE_PIXELS.

    Draft mode picks the largest scale (1, 1/2, 1/4, 1/8) still at least the requested size, so
    asking for the 1/n size that fits the budget caps the decode even when `target` is larger.
    """
    for scale in (1, 2, 4, 8):
        size = (math.ceil(w / scale), math.ceil(h / scale))
        if size[0] * size[1] <= MAX_DECODE_PIXELS:
            return min(target[0], size[0]), min(target[1], size[1])
    return math.ceil(w / 8), math.ceil(h / 8)


def _check_image(data: bytes, source: str) -> str:
    """Sniff the real format from the bytes (never trust a server's Content-Type)."""
    with _open(data, source) as im:
        return _MIME[im.format or ""]


def _open(data: bytes, source: str) -> Image.Image:
    """Open lazily (header only), rejecting non-images and decompression bombs."""
    try:
        im = Image.open(io.BytesIO(data), formats=_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _bomb(source) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(
            f"Image {source} is not a JPEG, PNG, GIF or WebP file; "
            "link the image file itself, not a web page."
        ) from exc
    limit = _pixel_limit(im.format)
    if im.width * im.height > limit:
        im.close()
        raise _bomb(source, limit)
    return im


def _pixel_limit(fmt: str | None) -> int:
    """Most pixels a header may claim: a JPEG can be decoded reduced (see fit_image), so it may
    be up to MAX_PIXELS; any other format is decoded whole and stays within MAX_DECODE_PIXELS.
    An 8x reduction is libjpeg's most, so a JPEG above 64 times the budget is refused too."""
    if fmt == "JPEG":
        return min(MAX_PIXELS, MAX_DECODE_PIXELS * 64)
    return MAX_DECODE_PIXELS


def _bomb(source: str, limit: int = MAX_DECODE_PIXELS) -> ImageError:
    return ImageError(
        f"Image {source} has more than {limit:,} pixels; use a smaller image "
        "(a big photo can be a JPEG, which is decoded at a reduced size)."
    )


def _target_size(w: int, h: int, max_pixels: int | None,
                 max_side: int | None) -> tuple[int, int]:
    """The largest size within the limits, rounded down: a rounded-up side can land a few
    pixels over the cap (9000x6000 under 33,177,600 rounds to 7055x4703), and the server
    refuses that."""
    scale = 1.0
    if max_side is not None and max(w, h) > max_side:
        scale = min(scale, max_side / max(w, h))
    if max_pixels is not None and w * h > max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (w * h)))
    if scale >= 1.0:
        return w, h
    size = (max(1, math.floor(w * scale)), max(1, math.floor(h * scale)))
    while max_pixels is not None and size[0] * size[1] > max_pixels and min(size) > 1:
        size = (size[0] - 1, max(1, math.floor((size[0] - 1) * h / w)))  # float error only
    return size


def _normalise_mode(im: Image.Image) -> Image.Image:
    """RGBA if the image has any transparency, else RGB or L (what JPEG can hold)."""
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        return im.convert("RGBA")
    if im.mode in ("RGB", "L"):
        return im
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return _grey_to_l(im)
    if im.mode == "1":
        return im.convert("L")
    return im.convert("RGB")


def _grey_to_l(im: Image.Image) -> Image.Image:
    """16-bit (and 32-bit) greyscale down to 8 bits by scaling: Pillow's own convert clips
    every value above 255 to white, so a 16-bit PNG would come out blank."""
    wide = im.convert("I") if im.mode != "F" else im
    wide_values = im.mode.startswith("I;16") or (wide.getextrema()[1] or 0) > 255
    if not wide_values:
        return wide.convert("L")
    return wide.point(lambda value: value * 255 / 65535).convert("L")


def _flatten(im: Image.Image) -> Image.Image:
    """Put a transparent image on white, so JPEG does not turn see-through areas black."""
    background = Image.new("RGB", im.size, (255, 255, 255))
    background.paste(im, mask=im.getchannel("A"))
    return background


def _encode(im: Image.Image, fmt: str, icc: bytes | None, *, quality: int = 90) -> bytes:
    """Save without EXIF/XMP/text chunks; the ICC profile is colour data, so it stays."""
    buf = io.BytesIO()
    options: dict[str, object] = {"icc_profile": icc} if icc else {}
    if fmt == "JPEG":
        options.update(quality=quality, optimize=True, progressive=True)
    try:
        im.save(buf, fmt, **options)
    except (OSError, ValueError) as exc:
        raise ImageError(
            f"Image of {im.width}x{im.height} pixels could not be encoded as {fmt} ({exc}); "
            "re-save it as a smaller JPEG or PNG."
        ) from exc
    return buf.getvalue()
