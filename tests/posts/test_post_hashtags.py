"""Hashtags from a brief's category and tags, as every network links them whole."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bot.render.post import hashtags_for
from tests.contract import make_brief


def _tags(tmp_path: Path, category: str, tags: list[str], title: str | None = None) -> list[str]:
    brief = make_brief(tmp_path, 1)
    brief = replace(brief, category=category, tags=tuple(tags),
                    title=title if title is not None else brief.title)
    return hashtags_for(brief, {"hashtags": "both"})


def test_combining_marks_are_kept(tmp_path: Path) -> None:
    assert _tags(tmp_path, "हिन्दी", ["ภาษาไทย"]) == ["#हिन्दी", "#ภาษาไทย"]


def test_phrases_are_not_title_cased_inside_words(tmp_path: Path) -> None:
    assert _tags(tmp_path, "don't stop", []) == ["#DontStop"]


def test_digit_only_tags_are_dropped(tmp_path: Path) -> None:
    assert _tags(tmp_path, "Energy", ["2026", "cop30"]) == ["#Energy", "#cop30"]


def test_a_tag_already_in_the_title_is_not_repeated(tmp_path: Path) -> None:
    assert _tags(tmp_path, "Energy", ["grid"], title="#Grid storage goes live") == ["#Energy"]
