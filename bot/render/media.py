"""A brief's hero image, fitted to one network's limits, or a warning instead.

A missing or broken image never blocks a post: the adapter posts the text alone and the warning
travels with the message into the preview, the receipt note and the run report.
"""

from __future__ import annotations

from bot.briefs import Brief
from bot.config import Settings
from bot.images import ImageError, ProcessedImage, fit_image, load_image


def prepare_image(
    settings: Settings, brief: Brief, *, max_bytes: int, max_pixels: int | None = None
) -> tuple[ProcessedImage | None, str | None]:
    """`(image, None)`, `(None, None)` when the brief has no image, or `(None, warning)`."""
    if not brief.image:
        return None, None
    try:
        data = load_image(
            brief.image,
            base_dir=brief.path.parent,
            cache_dir=settings.state_dir / "images",
        )
        image = fit_image(data, max_bytes=max_bytes, max_pixels=max_pixels, source=brief.image)
    except ImageError as error:
        return None, f"hero image left out: {error} (brief {brief.path}, field `image`)"
    return image, None
