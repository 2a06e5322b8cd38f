"""How fast a digest is built: the whole Python build against the reference JS MJML compiler.

The build is `render_digest` (items from the briefs, the MJML and text templates, the MJML
compile with mjml-python, the size fitting), then `prepare_digest`, which adds the MIME encoding.
The briefs are read beforehand, as `send_digest` has them (bench/scan.py times reading); the
digest shows summaries, so its Markdown work is the reader's, while the single-brief email,
timed last, renders the sections with markdown-it-py and nh3. The baseline is the JavaScript
`mjml` package compiling the same MJML inside one node process (start-up and JIT warm-up
excluded), in rounds alternating with ours, so both sides see the same machine; the ratio is
the median of the rounds' ratios. Then it measures `personalise()`, the per-recipient step.

Setup once: (cd bench && npm install). Usage: python bench/render.py [--runs N] [--rounds N]
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


class JsTimer:
    """The JS compiler in one long-lived node process, timed in rounds on request."""

    def __init__(self, source: str, folder: Path) -> None:
        path = folder / "digest.mjml"
        path.write_text(source, encoding="utf-8")
        self.node = subprocess.Popen(["node", str(BENCH / "mjml-time.js"), str(path)], cwd=BENCH,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.node.stdout.readline().strip() != "ready":
            sys.exit("node mjml-time.js did not start; run (cd bench && npm install)")

    def median_ms(self, runs: int) -> float:
        self.node.stdin.write(f"{runs}\n")
        self.node.stdin.flush()
        return json.loads(self.node.stdout.readline())["median_ms"]

    def close(self) -> None:
        self.node.stdin.close()
        self.node.wait(timeout=60)


def compare(js: JsTimer, builds: dict, runs: int, rounds: int) -> dict[str, list[float]]:
    """Rounds alternating the JS compiler with each build, so a busy spell on the machine
    slows both sides of a ratio instead of one."""
    times: dict[str, list[float]] = {"js": [], **{name: [] for name in builds}}
    for _ in range(rounds):
        times["js"].append(js.median_ms(runs))
        for name, build in builds.items():
            times[name].append(median_ms(build, runs))
    return times


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
    parser.add_argument("--runs", type=int, default=100, help="builds per round (default 100)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    args = parser.parse_args()
    if not (BENCH / "node_modules" / "mjml").is_dir() or not shutil.which("node"):
        sys.exit("the JS baseline needs node and the mjml package: (cd bench && npm install)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings = Settings(parse_config({}), folder / "config.toml")
        print(f"{args.rounds} rounds of {args.runs} runs, median ms   JS mjml   mjml-python   "
              "render   prepare   JS/render (range)      JS/prepare")
        for count in (10, 25):
            briefs = read(brief_files(folder, count))
            options = {"period_label": "2026-W48", "now": NOW}
            source = mjml_source(settings, briefs)
            js = JsTimer(source, folder)
            try:
                times = compare(js, {
                    "mjml-python": partial(mjml.mjml2html, source, disable_comments=True),
                    "render": partial(render_digest, settings, briefs, **options),
                    "prepare": partial(prepare_digest, settings, briefs, **options),
                }, args.runs, args.rounds)
            finally:
                js.close()
            render_ratios = [j / r for j, r in zip(times["js"], times["render"], strict=True)]
            prepare_ratios = [j / p for j, p in zip(times["js"], times["prepare"], strict=True)]
            middle = {name: statistics.median(values) for name, values in times.items()}
            print(f"{count:>3}-brief digest                    {middle['js']:>7.2f}   "
                  f"{middle['mjml-python']:>11.2f}   {middle['render']:>6.2f}   "
                  f"{middle['prepare']:>7.2f}   {statistics.median(render_ratios):>5.1f}x "
                  f"({min(render_ratios):.1f}-{max(render_ratios):.1f}x)   "
                  f"{statistics.median(prepare_ratios):>8.1f}x")
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
