"""How fast briefs are read: a cold read of 10,000 files, then a rescan of the unchanged folder.

The rescan skips unchanged files by size and mtime (and by content hash when only the mtime
moved), so it should be far faster than the cold read. Usage: python bench/scan.py [--count N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.briefs import BriefReader  # noqa: E402

BODY = """---
title: "Brief number {n}: a headline of ordinary length for a news item"
category: {category}
source: "Example Source {n}"
sourceUrl: "https://example.org/news/{n}"
publishedAt: 2026-11-{day:02}T09:00:00Z
status: published
---

# Brief number {n}

## WHAT HAPPENED
Something happened in item {n}.It was reported by the source and confirmed later. Details
follow in two short paragraphs that make the file about as long as a real brief.

## WHY IT MATTERS
- It affects people.
- It changes plans.
"""


def generate(folder: Path, count: int) -> None:
    categories = ["Research", "Policy", "Energy", "Climate", "Safety"]
    for n in range(count):
        (folder / f"brief-{n:05}.md").write_text(
            BODY.format(n=n, category=categories[n % 5], day=1 + n % 28), encoding="utf-8")


def timed(reader: BriefReader, folder: Path) -> tuple[float, int]:
    start = time.perf_counter()
    scan = reader.scan([folder])
    return time.perf_counter() - start, len(scan.briefs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generate(folder, args.count)
        reader = BriefReader()
        cold, read = timed(reader, folder)
        rescans = [timed(reader, folder)[0] for _ in range(3)]
        rescan = min(rescans)
    assert read == args.count, f"read {read} of {args.count} briefs"
    print(f"briefs:            {args.count:,}")
    print(f"cold read:         {args.count / cold:>10,.0f} briefs/s  ({cold:.2f} s)")
    print(f"rescan, unchanged: {args.count / rescan:>10,.0f} briefs/s  ({rescan:.3f} s)")
    print(f"rescan / cold:     {cold / rescan:>10.1f}x faster (target: at least 20x)")


if __name__ == "__main__":
    main()
