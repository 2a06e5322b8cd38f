"""Dates as readers write them, in the digest's language (`email.language`), through Babel.

Babel carries the Unicode CLDR patterns for each language: the order of day, month and year,
month names, and how a range is joined ("November 23 – 29, 2026", "23 – 29 November 2026",
"23.–29. November 2026", "2026年11月23日～29日"). CLDR has interval patterns with abbreviated
months only, so their `MMM` is widened to the full month name where the language's own long
date spells the month out (not in Chinese or Japanese, whose long date writes 11月). CLDR's thin
and narrow no-break spaces become plain spaces: a subject line turns them into those anyway,
and the heading should read the same.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton

_SHORT_MONTH = re.compile(r"(?<!M)MMM(?!M)")
_SPACES = str.maketrans({"\u2009": " ", "\u202f": " ", "\u00a0": " "})


@lru_cache(maxsize=64)
def locale_for(language: str) -> Locale:
    """`en`, `en-GB`, `pt_BR`... as a Babel locale; ValueError for one Babel does not know."""
    try:
        return Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise ValueError(f"{language!r} is not a language Babel knows; write a code such as "
                         '"en", "en-GB", "de" or "ja"') from None


def date_range(first: date, last: date, language: str = "en") -> str:
    """The days `first` to `last` (both included), for a subject or heading."""
    locale = locale_for(language)
    if first == last:
        return format_skeleton("yMMMMd", first, locale=locale).translate(_SPACES)
    field = "y" if first.year != last.year else "M" if first.month != last.month else "d"
    halves = locale.interval_formats.get("yMMMd", {}).get(field)
    if not halves:  # no interval pattern in this locale: the two dates, joined
        return (f"{format_skeleton('yMMMMd', first, locale=locale)} – "
                f"{format_skeleton('yMMMMd', last, locale=locale)}").translate(_SPACES)
    if "MMMM" in str(locale.datetime_skeletons.get("yMMMMd", "")):
        halves = [_SHORT_MONTH.sub("MMMM", half) for half in halves]
    start, end = halves
    return (format_date(first, start, locale=locale)
            + format_date(last, end, locale=locale)).translate(_SPACES)
