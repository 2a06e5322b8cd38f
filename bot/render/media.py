"""A brief's hero image, fitted to one network's limits, or a warning instead.

A missing or broken image never blocks a post: the adapter posts the text alone and the warning
travels with the message into the preview, the receipt note and the run report.

Inside `images_once()` (what a preview uses) each image is loaded once and fitted once per set
of limits, failures included: a preview renders every brief on every channel and must neither
fetch a failing image once per channel nor re-encode the same picture for each network.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import TypeVar

from PIL import Image

from bot.briefs import Brief
from bot.config import Settings
from bot.images import ImageError, ProcessedImage, fit_image, load_image
from bot.message import Message, Note, NoteKind
from bot.network import ImageLimits

_UNLIMITED = 1 << 62
T = TypeVar("T")


def prepare_image(
    settings: Settings, brief: Brief, *, max_bytes: int, max_pixels: int | None = None,
    max_side: int | None = None, png: bool = True,
) -> tuple[ProcessedImage | None, str | None]:
    """`(image, None)`, `(None, None)` when the brief has no image, or `(None, warning)`;
    `png=False` for a network that takes no PNG (a transparent image is flattened to JPEG)."""
    if not brief.image:
        return None, None
    memo = _memo.get()
    try:
        if memo is not None:
            image = memo.fit(settings, brief, max_bytes=max_bytes, max_pixels=max_pixels,
                             max_side=max_side, png=png)
        else:
            data = _load(settings, brief)
            image = fit_image(data, max_bytes=max_bytes, max_pixels=max_pixels,
                              max_side=max_side, png=png, source=brief.image)
    except ImageError as error:
        return None, f"hero image left out: {error} (brief {brief.path}, field `image`)"
    return image, None


def prepare_for(settings: Settings, brief: Brief,
                limits: ImageLimits) -> tuple[ProcessedImage | None, str | None]:
    """`prepare_image` fitted to a network's declared image limits."""
    return prepare_image(settings, brief, max_bytes=limits.max_bytes,
                         max_pixels=limits.max_pixels, max_side=limits.max_side,
                         png=limits.keeps_png)


def with_hero_image(message: Message, settings: Settings, brief: Brief, limits: ImageLimits, *,
                    notes: tuple[str, ...] = ()) -> Message:
    """`message` with the brief's hero image fitted to a network's declared limits
    (`fitted_image`), the adapter's own warnings (`notes`, as text) and a note when the image
    had to be left out."""
    image, warning = prepare_for(settings, brief, limits)
    added = [Note(NoteKind.WARNING, note) for note in notes]
    if warning:
        added.append(Note(NoteKind.IMAGE_LEFT_OUT, warning))
    return replace(message, fitted_image=image, notes=(*message.notes, *added))


class ImageMemo:
    """Loaded bytes and fitted images (or the error each gave), for the life of one block."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str], bytes | ImageError] = {}
        self._fitted: dict[tuple[str, str, int | None, int | None, int, bool],
                           ProcessedImage | ImageError] = {}

    def load(self, settings: Settings, brief: Brief) -> bytes:
        """The hero image's original bytes; raises the same ImageError every time."""
        key = (str(brief.image), str(brief.path.parent))
        if key not in self._loaded:
            try:
                self._loaded[key] = _load(settings, brief)
            except ImageError as error:
                self._loaded[key] = error
        return _unwrap(self._loaded[key])

    def fit(self, settings: Settings, brief: Brief, *, max_bytes: int,
            max_pixels: int | None = None, max_side: int | None = None,
            png: bool = True) -> ProcessedImage:
        width, height = self._size(settings, brief)
        if max_pixels is not None and width * height <= max_pixels:
            max_pixels = None  # a pixel cap the image is under changes nothing
        if max_side is not None and max(width, height) <= max_side:
            max_side = None
        key = (str(brief.image), str(brief.path.parent), max_pixels, max_side, max_bytes, png)
        if key not in self._fitted:
            try:
                self._fitted[key] = self._fit(settings, brief, max_bytes, max_pixels, max_side,
                                              png)
            except ImageError as error:
                self._fitted[key] = error
        return _unwrap(self._fitted[key])

    def _size(self, settings: Settings, brief: Brief) -> tuple[int, int]:
        """(width, height) from the image header ((0, 0) when unreadable: fit reports that)."""
        try:
            with Image.open(io.BytesIO(self.load(settings, brief))) as image:
                return image.size
        except (ImageError, OSError, ValueError, Image.DecompressionBombError):
            return 0, 0

    def _fit(self, settings: Settings, brief: Brief, max_bytes: int,
             max_pixels: int | None, max_side: int | None, png: bool) -> ProcessedImage:
        data = self.load(settings, brief)
        source = str(brief.image)
        if max_bytes == _UNLIMITED:
            return fit_image(data, max_bytes=max_bytes, max_pixels=max_pixels,
                             max_side=max_side, png=png, source=source)
        # fit_image's first encoding does not depend on max_bytes: when it was not resized and
        # is under this limit, it is exactly what fit_image returns for this limit. One encoding
        # then serves every network whose limit it fits.
        first = self.fit(settings, brief, max_bytes=_UNLIMITED, max_pixels=max_pixels,
                         max_side=max_side, png=png)
        if not first.resized and len(first.data) <= max_bytes:
            return first
        return fit_image(data, max_bytes=max_bytes, max_pixels=max_pixels, max_side=max_side,
                         png=png, source=source)


_memo: ContextVar[ImageMemo | None] = ContextVar("briefbot_image_memo", default=None)


@contextmanager
def images_once(memo: ImageMemo | None = None) -> Iterator[ImageMemo]:
    """Within this block (and the threads started with its context), `prepare_image` loads and
    fits each image once."""
    memo = memo if memo is not None else ImageMemo()
    token = _memo.set(memo)
    try:
        yield memo
    finally:
        _memo.reset(token)


def _load(settings: Settings, brief: Brief) -> bytes:
    images = settings.config.images
    return load_image(str(brief.image), base_dir=brief.path.parent,
                      cache_dir=settings.state_dir / "images", max_bytes=images.max_bytes,
                      timeout=images.timeout.total_seconds(), allow_hosts=images.allow_hosts,
                      roots=settings.image_folders)


def _unwrap(value: T | ImageError) -> T:
    if isinstance(value, ImageError):
        raise value.with_traceback(None)
    return value


# -- hero images for email -------------------------------------------------------------------

#: Local hero images fitted for email live here, under the state folder, and `briefbot serve`
#: answers for them at `email.base_url/images/NAME`.
EMAIL_IMAGES = "email-images"
EMAIL_IMAGE_SIDE = 1200  # twice the 600 px column, for sharp pictures on dense screens
EMAIL_IMAGE_BYTES = 400_000  # mail clients load them on open: keep them light
EMAIL_IMAGE_NAME = r"[0-9a-f]{32}\.(?:jpg|png)"


def publish_email_image(settings: Settings, brief: Brief) -> tuple[str, ProcessedImage] | None:
    """A local hero image fitted for email (at most 1200 px, JPEG or PNG, metadata dropped)
    and written where `briefbot serve` serves it: `(its URL, the fitted image)`, or None when
    it cannot be used. The name is the hash of the fitted bytes: stable, and unguessable
    without the picture itself."""
    image, _warning = prepare_image(settings, brief, max_bytes=EMAIL_IMAGE_BYTES,
                                    max_side=EMAIL_IMAGE_SIDE)
    if image is None:
        return None
    extension = "png" if image.mime == "image/png" else "jpg"
    name = f"{hashlib.sha256(image.data).hexdigest()[:32]}.{extension}"
    folder = settings.state_dir / EMAIL_IMAGES
    target = folder / name
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{name}.{os.getpid()}")
        temporary.write_bytes(image.data)
        os.replace(temporary, target)
    base = settings.config.email.base_url.rstrip("/")
    return f"{base}/images/{name}", image
