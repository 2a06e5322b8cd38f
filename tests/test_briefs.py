"""The brief reader: the sample as found in the wild, key spellings, and every kind of bad file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.briefs import Brief, BriefReader, Problem, normalise_key, summarise
from tests.briefs_factory import write_brief
from tests.conftest import SAMPLE


def read(path: Path, **kwargs) -> tuple[Brief | None, list[Problem]]:
    return BriefReader(**kwargs).read(path)


def codes(problems: list[Problem]) -> list[str]:
    return [p.code for p in problems]


def test_sample_brief_merges_both_blocks_and_is_a_draft_with_placeholders():
    brief, problems = read(SAMPLE)
    assert brief is not None
    assert brief.title == "Deepening our partnership with the UK AI Security Institute"
    assert brief.source_url.startswith("https://deepmind.google/blog/deepening-our-partnership")
    assert brief.published_at == datetime(2025, 12, 11, 0, 6, 40, tzinfo=UTC)
    assert brief.status == "draft"
    assert brief.category == "Safety" and brief.source == "Google DeepMind"
    assert brief.image.startswith("https://lh3.googleusercontent.com/")
    assert brief.image_alt == brief.title
    assert list(brief.sections) == ["WHAT HAPPENED", "WHY IT MATTERS", "WHAT THIS ENABLES",
                                    "SOURCE"]
    assert "front-matter-conflict" not in codes(problems)
    assert codes(problems).count("placeholder") == 5
    assert "hero-image-placeholder" in codes(problems)
    blockers = brief.blockers(["published"])
    assert any("draft" in b for b in blockers)
    assert any("placeholder" in b for b in blockers)
    assert not brief.is_publishable(["published"])
    # Even a config that calls drafts publishable cannot publish placeholders.
    assert not brief.is_publishable(["published", "draft"])


def test_summary_splits_run_on_sentences():
    brief, _ = read(SAMPLE)
    assert "everyone.The" not in brief.summary
    assert summarise("It helps everyone.The partnership grows. Third one.") == (
        "It helps everyone. The partnership grows."
    )
    assert summarise("- _Draft placeholder_") == ""


def test_display_text_is_cleaned_once_by_the_reader(tmp_path):
    # Renderers use these fields as they are, so the reader must hand them over clean:
    # one line, NFC (an e plus a combining accent becomes one character), no control or
    # invisible characters.
    path = tmp_path / "messy.md"
    path.write_text(
        '---\ntitle: "Cafe\u0301   news\\u200b today"\ncategory: "  Re\\tsearch "\n'
        'source: "Example\\u0007 Source"\nimage_alt: "A  photo\\nof it"\n---\n'
        "## WHAT HAPPENED\nIt  rained\u00a0a\u0007lot.  Then it stopped.\n",
        encoding="utf-8",
    )
    brief, problems = read(path)
    assert brief.title == "Caf\u00e9 news today"
    assert "title-control-chars" in codes(problems)  # still reported, not silently fixed
    assert brief.category == "Re search"
    assert brief.source == "Example Source"
    assert brief.image_alt == "A photo of it"
    assert brief.summary == "It rained a lot. Then it stopped."


def test_camel_and_snake_case_are_one_key_and_conflicts_name_both_values(tmp_path):
    path = tmp_path / "b.md"
    path.write_text(
        "---\nsourceUrl: https://a.example/x\npublishedAt: 2026-01-01T10:00:00Z\n"
        "status: published\n---\n---\nsource_url: https://b.example/y\ntitle: T\n"
        "published_at: '2026-01-01T10:00:00+00:00'\n---\nbody\n",
        encoding="utf-8",
    )
    brief, problems = read(path)
    assert normalise_key("sourceUrl") == normalise_key("source-url") == "source_url"
    assert brief.source_url == "https://b.example/y"  # the later block wins
    conflicts = [p for p in problems if p.code == "front-matter-conflict"]
    assert len(conflicts) == 1  # the equal times in two spellings are no conflict
    assert conflicts[0].field == "source_url" and conflicts[0].severity == "warning"
    assert "https://a.example/x" in conflicts[0].message
    assert "https://b.example/y" in conflicts[0].message
    assert conflicts[0].line == 7


def test_title_from_heading_naive_time_in_configured_zone_and_hero_comment(tmp_path):
    path = tmp_path / "my-brief.md"
    path.write_text(
        "---\nstatus: published\npublished_at: 2026-07-01T09:00:00\n"
        "source_url: https://example.org/a\ntags: ai, policy\n---\n# Heading title\n\n"
        "<!-- HERO_IMAGE: pictures/hero.jpg -->\n\n## WHAT HAPPENED\nThings.\n",
        encoding="utf-8",
    )
    brief, problems = read(path, tz=ZoneInfo("Europe/London"))
    assert brief.id == "my-brief"
    assert brief.title == "Heading title"
    assert brief.published_at == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)  # BST is UTC+1
    assert brief.image == "pictures/hero.jpg"
    assert brief.tags == ("ai", "policy")
    assert brief.is_publishable(["published"]), problems


def test_front_matter_id_wins_over_file_stem_and_hash_tracks_content(tmp_path):
    path = write_brief(tmp_path, "file-stem.md", extra="id: chosen-id\n")
    brief, _ = read(path)
    assert brief.id == "chosen-id"
    first = brief.content_hash
    path.write_text(path.read_text() + "\nMore.\n")
    assert read(path)[0].content_hash != first


def test_published_brief_with_missing_fields_has_errors_a_draft_only_warnings(tmp_path):
    path = tmp_path / "p.md"
    path.write_text("---\nstatus: published\n---\nno heading\n", encoding="utf-8")
    brief, problems = read(path)
    assert {"missing-title", "missing-published-at", "missing-source-url"} <= set(
        codes(problems))
    assert all(p.severity == "error" for p in problems)
    path.write_text("---\nstatus: draft\n---\nno heading\n", encoding="utf-8")
    _, problems = read(path)
    assert all(p.severity == "warning" for p in problems)


BROKEN = {
    "invalid-yaml.md": (b"---\ntitle: [unclosed\n---\nbody\n", "yaml-invalid"),
    "bad-date.md": (b"---\ntitle: T\npublished_at: next tuesday\n---\n", "bad-date"),
    "latin1.md": ("---\ntitle: caf\xe9\n---\n".encode("latin-1"), "encoding"),
    "binary.md": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    "empty.md": (b"", "empty"),
    "control.md": (b"---\ntitle: \"Bad\\x07title\"\nstatus: published\n---\n",
                   "title-control-chars"),
    "unclosed.md": (b"---\ntitle: T\nbody without end\n", "front-matter-unclosed"),
    "list.md": (b"---\n- a\n- b\n---\n", "front-matter-not-mapping"),
}


def test_each_kind_of_broken_file_yields_a_clear_problem(tmp_path):
    for name, (data, _) in BROKEN.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "huge.md").write_bytes(b"---\ntitle: T\n---\n" + b"x" * 2000)
    write_brief(tmp_path, "good.md")
    scan = BriefReader(max_bytes=1000).scan([tmp_path])
    by_file = {}
    for problem in scan.problems:
        by_file.setdefault(Path(problem.path).name, set()).add(problem.code)
    for name, (_, code) in BROKEN.items():
        assert code in by_file.get(name, set()), (name, by_file.get(name))
    assert "too-large" in by_file["huge.md"]
    assert [b.id for b in scan.briefs if b.is_publishable(["published"])] == ["good"]
    for problem in scan.problems:
        assert problem.message and problem.severity in ("error", "warning")


def test_duplicate_ids_across_files_block_both(tmp_path):
    write_brief(tmp_path / "a", "same.md")
    write_brief(tmp_path / "b", "same.md")
    scan = BriefReader().scan([tmp_path])
    assert [p.code for p in scan.problems].count("duplicate-id") == 2
    assert not any(b.is_publishable(["published"]) for b in scan.briefs)


def test_rescan_skips_unchanged_files_and_sees_changes(tmp_path):
    path = write_brief(tmp_path, "one.md", title="First")
    reader = BriefReader()
    first = reader.scan([tmp_path]).briefs[0]
    assert reader.scan([tmp_path]).briefs[0] is first  # same object: not parsed again
    path.write_text(path.read_text().replace("First", "Second"))
    assert reader.scan([tmp_path]).briefs[0].title == "Second"


front_matter_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
    | st.datetimes(),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)
KEYS = st.sampled_from(["title", "status", "published_at", "publishedAt", "source_url",
                        "sourceUrl", "image", "image_alt", "tags", "id", "category"]) | st.text(
    max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_give_a_brief_or_a_problem(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "x.md"
    path.write_bytes(data)
    brief, problems = BriefReader().read(path)
    assert brief is not None or problems
    assert all(isinstance(p, Problem) for p in problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(st.dictionaries(KEYS, front_matter_values, max_size=6), min_size=1,
                       max_size=3),
       body=st.text(max_size=200))
def test_arbitrary_front_matter_gives_a_brief_or_a_problem(tmp_path_factory, blocks, body):
    import yaml

    text = "".join("---\n" + yaml.safe_dump(b, allow_unicode=True) + "---\n" for b in blocks)
    path = tmp_path_factory.mktemp("fuzz") / "x.md"
    path.write_text(text + body, encoding="utf-8")
    brief, problems = BriefReader().read(path)
    assert brief is not None or problems
    if brief is not None:
        assert isinstance(brief.id, str) and brief.id
        assert brief.published_at is None or brief.published_at.tzinfo is not None
        assert isinstance(brief.is_publishable(["published"]), bool)
