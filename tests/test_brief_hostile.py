"""Hostile briefs: one bad file never stops the others, and every input is bounded.

Each case runs the real `briefbot` in a subprocess (the `project` fixture: a config.toml in
tmp_path whose briefs.folders is tmp_path/briefs). The size cases are sized so that a quadratic
scan would take many minutes: the 30-second subprocess timeout, not a wall-clock assertion,
is what fails them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.briefs_factory import write_brief

TIMEOUT = 30
HEAD = ("---\ntitle: Big one\nstatus: published\npublished_at: 2026-11-20T09:00:00Z\n"
        "source_url: https://example.org/big\n")
NOW = "2026-11-28T00:00:00Z"


def check_json(project, *args: str) -> list[dict]:
    result = project.cli("check", "--json", *args, timeout=TIMEOUT)
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def listed(project) -> dict[str, dict]:
    result = project.cli("list", "--json", "--now", NOW, timeout=TIMEOUT, check=True)
    return {row["id"]: row for row in json.loads(result.stdout)}


# -- dates ----------------------------------------------------------------------------------


OUT_OF_RANGE = {
    "end-of-time.md": "9999-12-31T23:59:59-23:59",  # a YAML timestamp
    "quoted-end.md": "'9999-12-31T23:59:59-23:59'",  # text, read by fromisoformat
    "year-one.md": "0001-01-01T00:00:00+01:00",
    "year-zero.md": "0000-01-01T00:00:00Z",  # YAML cannot build it at all
    "naive-max.md": "9999-12-31T23:59:59",  # no offset: read in `timezone`, then UTC
}


def test_out_of_range_publish_times_are_bad_dates_and_the_rest_still_goes_out(project):
    for name, value in OUT_OF_RANGE.items():
        write_brief(project.briefs, name, published_at=value)
    write_brief(project.briefs, "good.md")

    problems = check_json(project)
    for name in OUT_OF_RANGE:
        found = [p for p in problems if p["path"].endswith(name)]
        assert [p["code"] for p in found] == ["bad-date"], (name, found)
        (problem,) = found
        assert problem["severity"] == "error" and problem["field"] == "published_at"
        assert problem["line"] == 4  # write_brief's published_at line
        assert "write ISO 8601" in problem["message"], problem
    assert not any(p["path"].endswith("good.md") for p in problems)

    text = project.cli("check", timeout=TIMEOUT)
    assert text.returncode == 1 and "Traceback" not in text.stderr, text.stderr
    assert "good.md: publishable" in text.stdout

    rows = listed(project)
    assert rows["good"]["state"] == "due"
    for name in OUT_OF_RANGE:
        assert rows[Path(name).stem]["publishable"] is False
    table = project.cli("list", "--now", NOW, timeout=TIMEOUT, check=True)
    assert "good" in table.stdout

    preview = project.cli("preview", "--include-drafts", "--now", NOW, timeout=TIMEOUT)
    assert "Traceback" not in preview.stderr, preview.stderr
    assert (project.root / "state" / "preview" / "index.html").is_file()

    run = project.cli("run", "--once", "--now", NOW, timeout=TIMEOUT)
    assert "Traceback" not in run.stderr, run.stderr
    sent = [json.loads(p.read_text())["campaign"].removeprefix("brief:") for p in project.outbox()]
    assert sent == ["good"]


def test_a_publish_time_that_overflows_in_the_configured_timezone_is_a_bad_date(project):
    # Valid in UTC, but past year 9999 in UTC+14: the preview showed it there and crashed.
    project.config.write_text(project.config.read_text().replace(
        'timezone = "UTC"', 'timezone = "Pacific/Kiritimati"'))
    write_brief(project.briefs, "edge.md", published_at="9999-12-31T20:00:00Z")
    write_brief(project.briefs, "late.md", published_at="8999-12-31T23:00:00Z")
    write_brief(project.briefs, "early.md", published_at="1900-01-01T00:00:00Z")
    preview = project.cli("preview", "--include-drafts", "--now", NOW, timeout=TIMEOUT)
    assert "Traceback" not in preview.stderr, preview.stderr
    assert [p["code"] for p in check_json(project)] == ["bad-date"]
    rows = listed(project)
    assert rows["edge"]["publishable"] is False
    assert rows["late"]["state"] == "scheduled"
    assert rows["early"]["publishable"] is True


def test_the_daemon_keeps_publishing_past_a_brief_with_an_out_of_range_date(project):
    from tests.test_daemon import start_daemon, stop, wait_until

    with open(project.config, "a", encoding="utf-8") as config:
        config.write('[schedule]\npublish = "1s"\n')
    write_brief(project.briefs, "end-of-time.md", published_at="9999-12-31T23:59:59-23:59")
    write_brief(project.briefs, "good.md")
    child = start_daemon(project)
    try:
        published = wait_until(lambda: len(project.outbox()) == 1, timeout=TIMEOUT)
    finally:
        _, out = stop(child)
    assert published, out
    assert "Traceback" not in out and "OverflowError" not in out, out


# -- YAML aliases ---------------------------------------------------------------------------


def billion_laughs(depth: int = 9) -> str:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in "bcdefghi"[: depth - 1]:
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{', '.join(['*' + previous] * 9)}]")
    return "\n".join(lines) + "\n"


def test_yaml_aliases_are_refused_with_a_problem(project):
    write_brief(project.briefs, "laughs.md", extra=billion_laughs())
    write_brief(project.briefs, "merge.md", extra="base: &base {category: X}\nmore:\n  <<: *base\n")
    # A conflict between two blocks shows both values: with aliases, a repr of 9**depth
    # leaves (kept small here, so that the old reader does not fill the memory).
    (project.briefs / "twice.md").write_text(
        "---\n" + billion_laughs(5) + "---\n" + billion_laughs(5).replace("lol", "lal")
        + "title: T\n---\n\n## WHAT\nText.\n", encoding="utf-8")
    write_brief(project.briefs, "good.md")
    problems = check_json(project)
    by_file = {}
    for problem in problems:
        by_file.setdefault(Path(problem["path"]).name, []).append(problem)
    for name, field, line in (("laughs.md", "b", 8), ("merge.md", "more", 8),
                              ("twice.md", "b", 3)):
        (problem,) = by_file[name]
        assert (problem["code"], problem["severity"]) == ("yaml-alias", "error"), problem
        assert (problem["field"], problem["line"]) == (field, line), problem
        assert "write the value out" in problem["message"]
    assert "good.md" not in by_file
    assert set(listed(project)) == {"good"}


# -- linear scans ---------------------------------------------------------------------------

NEAR_CAP = 900_000  # under briefs.max_file_bytes (1 MiB): every one of these is read in full


def body(unit: str) -> str:
    return unit * (NEAR_CAP // len(unit))


BIG = {
    # an unclosed HERO_IMAGE comment head, again and again (~150 s for 320 KB before)
    "hero-heads.md": HEAD + "---\n\n## WHAT HAPPENED\nText.\n" + body("<!-- HERO_IMAGE"),
    # closed ones: each used to count the lines from the top of the file
    "hero-closed.md": HEAD + "---\n\n## WHAT HAPPENED\nText.\n" + body("<!-- HERO_IMAGE -->\n"),
    "comment-heads.md": HEAD + "---\n\n## WHAT HAPPENED\nText. " + body("<!--"),
    "link-heads.md": HEAD + "---\n\n## WHAT HAPPENED\nText. " + body("[a]("),
    "brackets.md": HEAD + "---\n\n## WHAT HAPPENED\nText. " + body("["),
    "blank-lines.md": HEAD + "---\n\n## WHAT HAPPENED\nText.\n" + body(" \n") + "end.\n",
    "underscore.md": HEAD + "---\n\n## WHAT HAPPENED\n_" + body("placeholder"),
    "sections.md": HEAD + "---\n\n" + "".join(f"## S{i}\nTODO\n" for i in range(60_000)),
    "keys.md": HEAD + "".join(f"k{i}: {i}\n" for i in range(70_000)) + "---\n\n## W\nText.\n",
    # YAML 1.1 reads 1:1:1... as one base-60 integer, each digit a bignum multiplication
    "sexagesimal.md": HEAD + "n: 1" + body(":1") + "\n---\n\n## W\nText.\n",
}


@pytest.mark.parametrize("name", sorted(BIG))
def test_a_near_cap_brief_built_to_be_slow_is_read_in_linear_time(project, name):
    data = BIG[name].encode()
    assert NEAR_CAP * 0.8 < len(data) < 1_048_576, len(data)
    (project.briefs / name).write_bytes(data)
    write_brief(project.briefs, "good.md")
    problems = check_json(project)  # raises TimeoutExpired when a scan is quadratic
    assert not any(p["path"].endswith("good.md") for p in problems)
    if name == "hero-closed.md":
        lines = [p["line"] for p in problems if p["code"] == "hero-image-placeholder"]
        assert lines[:3] == [10, 11, 12] and len(lines) == NEAR_CAP // 20
    if name == "sections.md":
        found = [p for p in problems if p["code"] == "placeholder"]
        assert len(found) == 60_000 and found[-1]["field"] == "S59999"
    if name == "keys.md":
        rows = listed(project)
        assert rows["keys"]["title"] == "Big one"


def test_a_number_too_long_to_print_is_text_not_a_crash(project):
    # 60**3000 has over 4,300 digits: str() of it raised ValueError out of `briefbot check`.
    write_brief(project.briefs, "base60.md", title="1" + ":1" * 3000)
    write_brief(project.briefs, "hex.md", extra="category: 0x" + "f" * 5000 + "\n")
    write_brief(project.briefs, "good.md")
    result = project.cli("check", timeout=TIMEOUT)
    assert "Traceback" not in result.stderr, result.stderr
    assert "good.md: publishable" in result.stdout
    rows = listed(project)
    assert rows["base60"]["title"] == "1" + ":1" * 3000
    assert rows["hex"]["publishable"] is True


def test_a_duplicate_id_names_a_few_of_the_other_files_not_all(project):
    # Every copy listed every other one: n copies made n * n paths of messages.
    for n in range(6):
        write_brief(project.briefs, f"copy-{n}.md", extra="id: same\n")
    problems = [p for p in check_json(project) if p["code"] == "duplicate-id"]
    assert len(problems) == 6
    for problem in problems:
        assert problem["message"].count("copy-") == 3 and "and 2 more" in problem["message"]
        assert Path(problem["path"]).name not in problem["message"]


def test_thousands_of_tags_render_in_bounded_time(project):
    project.write_config(channels="".join(
        f'[channels.{network}]\ntype = "outbox"\nfolder = "outbox"\nnetwork = "{network}"\n'
        for network in ("x", "mastodon", "bluesky")))
    tags = ", ".join(f"tag{i}" for i in range(6000))  # 2,000 took ~33 s, one layout per tag
    write_brief(project.briefs, "tags.md", extra=f"tags: [{tags}]\n")
    result = project.cli("run", "--once", "--dry-run", "--json", "--now", NOW, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)["outcomes"]
    assert len(outcomes) == 3
    for outcome in outcomes:
        assert outcome["state"] == "would-send", outcome


# -- files that are not files ---------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifos_devices_and_symlinks_out_of_the_folder_are_skipped_unopened(project, tmp_path):
    os.mkfifo(project.briefs / "pipe.md")  # opening it for reading blocks until a writer comes
    (project.briefs / "null.md").symlink_to(os.devnull)
    outside = write_brief(tmp_path / "elsewhere", "secret.md")
    (project.briefs / "outside.md").symlink_to(outside)
    (project.briefs / "sub").mkdir()
    os.mkfifo(project.briefs / "sub" / "deep.txt")
    write_brief(project.briefs, "good.md")
    inside = write_brief(project.briefs / "drafts", "real.md")
    (project.briefs / "alias.md").symlink_to(inside)  # a symlink inside the folder is fine

    problems = check_json(project)
    skipped = {Path(p["path"]).name: p for p in problems if p["code"] == "not-regular-file"}
    assert set(skipped) == {"pipe.md", "null.md", "outside.md", "deep.txt"}, problems
    for problem in skipped.values():
        assert problem["severity"] == "error" and "skipped" in problem["message"]
    assert "outside the briefs folder" in skipped["outside.md"]["message"]
    assert set(listed(project)) == {"good", "real", "alias"}

    # Named on the command line, a FIFO is refused the same way.
    problems = check_json(project, str(project.briefs / "pipe.md"))
    assert [p["code"] for p in problems] == ["not-regular-file"]

    project.write_config(publish='backfill = "all"')
    run = project.cli("run", "--once", "--now", NOW, timeout=TIMEOUT)
    assert "Traceback" not in run.stderr, run.stderr
    sent = sorted(json.loads(p.read_text())["campaign"].removeprefix("brief:")
                  for p in project.outbox())
    assert "good" in sent and "secret" not in sent


def test_a_folder_tree_deeper_than_the_recursion_limit_is_listed(project):
    levels = [project.briefs]
    for _ in range(1200):  # walked recursively: RecursionError (so is Path.mkdir(parents=True))
        levels.append(levels[-1] / "d")
        levels[-1].mkdir()
    write_brief(levels[-1], "bottom.md")
    write_brief(project.briefs, "top.md")
    try:
        assert check_json(project) == []
        assert set(listed(project)) == {"bottom", "top"}
    finally:  # shutil.rmtree recurses too: take it down from the bottom
        (levels[-1] / "bottom.md").unlink()
        for level in reversed(levels[1:]):
            level.rmdir()


# -- terminal output ------------------------------------------------------------------------

WIDE = {"COLUMNS": "250"}


def test_rich_markup_in_brief_text_is_shown_as_written(project):
    write_brief(project.briefs, "markup.md", title="[bold]Loud[/bold] news [/]",
                extra='id: "[/]odd[red]"\n')
    table = project.cli("list", "--now", NOW, timeout=TIMEOUT, env=WIDE)
    assert table.returncode == 0, table.stderr
    assert "[bold]Loud[/bold] news [/]" in table.stdout
    assert "[/]odd[red]" in table.stdout
    status = project.cli("status", "--now", NOW, timeout=TIMEOUT, env=WIDE)
    assert status.returncode == 0, status.stderr
    assert "brief:[/]odd[red]|outbox" in status.stdout


def test_terminal_control_sequences_never_reach_the_terminal(project):
    name = "evil\x1b[2J\x1b[H.md"
    write_brief(project.briefs, name, title="Fine title", url="https://example.org/evil",
                extra='id: "evil\\e]0;pwned\\a\\e[31m\\x9b2J"\n', status="draft",
                body="## WHAT HAPPENED\n_placeholder_ text.\n")
    write_brief(project.briefs, "good.md", body="## WHAT HAPPENED\nGood \x1b[5mblink.\n")
    outputs = [
        project.cli("check", timeout=TIMEOUT),
        project.cli("list", "--now", NOW, timeout=TIMEOUT, env=WIDE),
        project.cli("run", "--once", "--dry-run", "--now", NOW, timeout=TIMEOUT),
    ]
    for result in outputs:
        assert "Traceback" not in result.stderr, result.stderr
        for stream in (result.stdout, result.stderr):
            controls = {ch for ch in stream if ch not in "\n\t" and (
                ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f)}
            assert not controls, (result.args, controls, stream)
    assert "evil.md: not publishable" in outputs[0].stdout
    assert "evil]0;pwned" in outputs[1].stdout


def test_an_id_with_control_characters_is_never_published(project):
    # An id names ledger rows and outbox files, and shows in `status`.
    write_brief(project.briefs, "ctl.md", extra='id: "bell\\a\\e[2Jid"\n')
    write_brief(project.briefs, "good.md")
    problems = check_json(project)
    assert [(p["code"], p["severity"], p["field"], p["line"]) for p in problems] == [
        ("id-control-chars", "error", "id", 7)]
    rows = listed(project)
    assert rows["bell\a\x1b[2Jid"]["publishable"] is False and rows["good"]["publishable"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_hero_image_that_is_a_fifo_is_an_image_problem_not_a_hang(project):
    os.mkfifo(project.briefs / "pipe.jpg")
    write_brief(project.briefs, "piped.md", extra="image: pipe.jpg\n")
    write_brief(project.briefs, "good.md")
    preview = project.cli("preview", "--now", NOW, timeout=TIMEOUT)
    assert "Traceback" not in preview.stderr, preview.stderr
    page = (project.root / "state" / "preview" / "index.html").read_text(encoding="utf-8")
    assert "is a FIFO, not an image file" in page
