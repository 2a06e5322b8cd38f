"""How fast a digest is built: the whole Python build against the reference JS MJML compiler.

The build is `render_digest` (items from the briefs, the MJML and text templates, the MJML
compile with mjml-python, the size fitting), then `prepare_digest`, which adds the MIME encoding.
The briefs are read beforehand, as `send_digest` has them (bench/scan.py times reading); the
digest shows summaries, so its Markdown work is the reader's, while the single-brief email,
timed last, renders the sections with markdown-it-py and nh3. The baseline is the JavaScript
`mjml` package compiling the same MJML inside one node process (start-up and JIT warm-up
excluded), in the same run. Then it measures `personalise()`, the per-recipient step.

Setup once: (cd bench && npm install). Usage: python bench/render.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

import mjml  # noqa: E402

from bot.briefs import Brief, BriefReader  # noqa: E402
from bot.config import Settings, parse_config  # noqa: E402
from bot.render.email import (  # noqa: E402
    Recipient,
    prepare_digest,
    render_brief_email,
    render_digest,
)

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
BODY = """---
id: brief-{n:03}
title: "Brief {n}: a headline of ordinary length for a news item & <its> source"
category: {category}
source: "Example Source {n}"
source_url: "https://example.org/news/{n}?ref=digest"
published_at: 2026-11-{day:02}T09:00:00Z
status: published
image: "https://cdn.example.org/hero/{n}.jpg"
image_alt: "Photo for brief {n}"
---

# Brief {n}

## WHAT HAPPENED
Something *important* happened in item {n}.It was reported by the source and confirmed later
by two [independent](https://example.net/check) groups, who published their data in full.

## WHY IT MATTERS
- It affects **people** in several regions.
- It changes plans for the coming year.
"""


def brief_files(folder: Path, count: int) -> list[tuple[Path, bytes]]:
    categories = ["Research", "Policy", "Energy", "Climate", "Safety"]
    files = []
    for n in range(count):
        path = folder / f"brief-{n:03}.md"
        files.append((path, BODY.format(n=n, category=categories[n % 5],
                                        day=1 + n % 28).encode()))
    return files


def read(files: list[tuple[Path, bytes]]) -> list[Brief]:
    reader = BriefReader()
    return [brief for path, data in files if (brief := reader.parse(path, data)[0])]


def median_ms(build, runs: int) -> float:
    for _ in range(5):
        build()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        build()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def mjml_source(settings: Settings, briefs: list[Brief]) -> str:
    """The MJML the templates produce, captured on its way into the compiler."""
    captured: list[str] = []
    compile_ = mjml.mjml2html

    def capture(source: str, **options):
        captured.append(source)
        return compile_(source, **options)

    mjml.mjml2html = capture
    try:
        render_digest(settings, briefs, period_label="2026-W48", now=NOW)
    finally:
        mjml.mjml2html = compile_
    return captured[-1]


def js_ms(source: str, runs: int, folder: Path) -> dict:
    path = folder / "digest.mjml"
    path.write_text(source, encoding="utf-8")
    result = subprocess.run(["node", str(BENCH / "mjml-time.js"), str(path), str(runs)],
                            cwd=BENCH, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(result.stdout)


def personalise_rate(settings: Settings, briefs: list[Brief],
                     seconds: float = 1.0) -> tuple[float, int]:
    prepared = prepare_digest(settings, briefs, period_label="2026-W48", now=NOW)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            prepared.personalise(
                Recipient(f"reader{count}@example.net", f"Reader {count}"),
                message_id=f"<{count}.briefbot@example.org>",
                unsubscribe_url=f"https://example.org/unsubscribe?token=t{count}&list=weekly",
                unsubscribe_mailto="unsubscribe@example.org", date=NOW)
            count += 1
    return count / (time.perf_counter() - start), prepared.html_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    if not (BENCH / "node_modules" / "mjml").is_dir() or not shutil.which("node"):
        sys.exit("the JS baseline needs node and the mjml package: (cd bench && npm install)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings = Settings(parse_config({}), folder / "config.toml")
        print(f"median of {args.runs} runs, ms   JS mjml   mjml-python   render   prepare"
              "   JS/render   JS/prepare")
        for count in (10, 25):
            briefs = read(brief_files(folder, count))
            options = {"period_label": "2026-W48", "now": NOW}
            source = mjml_source(settings, briefs)
            compiled = median_ms(partial(mjml.mjml2html, source, disable_comments=True),
                                 args.runs)
            rendered = median_ms(partial(render_digest, settings, briefs, **options), args.runs)
            prepared = median_ms(partial(prepare_digest, settings, briefs, **options), args.runs)
            js = js_ms(source, args.runs, folder)["median_ms"]
            print(f"{count:>3}-brief digest         {js:>7.2f}   {compiled:>11.2f}   "
                  f"{rendered:>6.2f}   {prepared:>7.2f}   {js / rendered:>8.1f}x   "
                  f"{js / prepared:>9.1f}x")
        print("render = brief items, Jinja (MJML and text), mjml-python, size fitting; "
              "prepare = render + MIME")
        brief = read(brief_files(folder, 1))[0]
        single = median_ms(partial(render_brief_email, settings, brief, now=NOW), args.runs)
        print(f"single-brief email with Markdown sections: render {single:.2f} ms")
        for count in (10, 25):
            rate, size = personalise_rate(settings, read(brief_files(folder, count)))
            print(f"personalise(), {count}-brief digest ({size / 1024:.0f} KB HTML): "
                  f"{rate:,.0f} messages/s")


if __name__ == "__main__":
    main()
