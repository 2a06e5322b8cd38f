"""How fast `briefbot preview` builds its gallery: 200 briefs with local hero images on 4 channels.

The channels are the real X, Mastodon and Bluesky adapters (no credentials are needed to render;
the Mastodon instance's limits come from a small server on 127.0.0.1) and an outbox that also
carries the digest. Each run builds the whole gallery from scratch (briefs read, every post
rendered, every hero image fitted to each network, the digest rendered, the HTML and images
written). Baselines measured in the same run: reading and parsing the same briefs, and the
gallery for one channel. The 4-channel figure should stay under 10 s on a 2-core machine.

Usage: python bench/preview.py [--count 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageDraw  # noqa: E402

from bot.briefs import BriefReader  # noqa: E402
from bot.config import Settings, parse_config  # noqa: E402
from bot.preview import build_gallery, write_gallery  # noqa: E402

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
CATEGORIES = ["Research", "Policy", "Energy", "Climate", "Safety"]
BODY = """---
id: brief-{n:03}
title: "Brief {n}: a headline of ordinary length for a news item & <its> source, told plainly"
category: {category}
source: "Example Source {n}"
source_url: "https://example.org/news/{n}?ref=preview"
published_at: 2026-11-{day:02}T09:00:00Z
status: published
image: images/hero-{n:03}.{ext}
image_alt: "Illustration for brief {n}"
tags: [preview, bench, item{n}]
---

# Brief {n}

## WHAT HAPPENED
Something *important* happened in item {n}.It was reported by the source and confirmed later
by two [independent](https://example.net/check) groups, who published their data in full.

## WHY IT MATTERS
- It affects **people** in several regions.
- It changes plans for the coming year.
"""


def hero(n: int) -> tuple[bytes, str]:
    """A photo-like 1200x630 JPEG; every tenth brief a 1600x900 PNG screenshot instead."""
    rng = random.Random(n)
    size = (1600, 900) if n % 10 == 0 else (1200, 630)
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x, y, r = rng.randrange(size[0]), rng.randrange(size[1]), rng.randrange(20, 220)
        draw.ellipse((x, y, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    if n % 10 == 0:
        image.save(buffer, "PNG")
        return buffer.getvalue(), "png"
    image.save(buffer, "JPEG", quality=88)
    return buffer.getvalue(), "jpg"


def make_briefs(folder: Path, count: int) -> None:
    (folder / "images").mkdir(parents=True)
    for n in range(count):
        data, ext = hero(n)
        (folder / "images" / f"hero-{n:03}.{ext}").write_bytes(data)
        (folder / f"brief-{n:03}.md").write_text(
            BODY.format(n=n, category=CATEGORIES[n % 5], day=23 + n % 7, ext=ext),
            encoding="utf-8")


class _Instance(BaseHTTPRequestHandler):
    """Mastodon's `/api/v2/instance`, the one public call a Mastodon render makes."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"configuration": {
            "statuses": {"max_characters": 500, "characters_reserved_per_url": 23},
            "media_attachments": {"image_size_limit": 16_777_216,
                                  "image_matrix_limit": 33_177_600}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def mastodon_instance() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Instance)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def settings(root: Path, channels: str) -> Settings:
    import tomllib

    config = parse_config(tomllib.loads(
        f'[briefs]\nfolders = ["briefs"]\n[state]\ndir = "state"\n[publish]\nbackfill = "all"\n'
        f'{channels}'))
    return Settings(config, root / "config.toml")


def median_s(run: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, mastodon_instance() as instance:
        root = Path(tmp)
        make_briefs(root / "briefs", args.count)
        x = '[channels.x]\ntype = "x"\n'
        four = settings(root, x + (
            f'[channels.masto]\ntype = "mastodon"\ninstance = "{instance}"\n'
            '[channels.bsky]\ntype = "bluesky"\nhandle = "bench.example.org"\n'
            '[channels.outbox]\ntype = "outbox"\n'))
        one = settings(root, x)

        def read() -> None:
            BriefReader().scan([root / "briefs"])

        def gallery(chosen: Settings, out: str) -> Callable[[], object]:
            def build() -> None:
                built = build_gallery(chosen, now=NOW)
                write_gallery(built, root / out)
                assert len(built.entries) == args.count, built.summary()
            return build

        gallery(four, "warm")()  # imports, template compile, the instance's limits
        read_s = median_s(read, args.runs)
        one_s = median_s(gallery(one, "one"), args.runs)
        four_s = median_s(gallery(four, "four"), args.runs)
        built = build_gallery(four, now=NOW)
    print(f"preview of {args.count} briefs with local hero images (median of {args.runs}):")
    print(f"  read and parse the briefs (baseline)  {read_s * 1000:8.0f} ms")
    print(f"  gallery, 1 channel (X)                {one_s * 1000:8.0f} ms   "
          f"{one_s / read_s:5.1f}x the read")
    print(f"  gallery, 4 channels + digest          {four_s * 1000:8.0f} ms   "
          f"{four_s / read_s:5.1f}x the read, {four_s / one_s:4.1f}x one channel")
    print(f"  {built.summary()}")
    verdict = "under" if four_s < 10 else "OVER"
    print(f"  {args.count} briefs x 4 channels: {four_s:.2f} s ({verdict} the 10 s budget)")


if __name__ == "__main__":
    main()
