"""`briefbot check` and `briefbot list`, run as a user would run them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.briefs_factory import write_brief
from tests.conftest import ROOT, SAMPLE
from tests.test_briefs import BROKEN


def test_check_seeds_reports_the_sample_as_not_publishable(project):
    result = project.cli("check", str(ROOT / "seeds"))
    out = result.stdout
    sample_line = next(line for line in out.splitlines()
                       if line.startswith(str(SAMPLE)) and "publishable" in line)
    assert "not publishable" in sample_line
    assert "status is 'draft'" in sample_line and "placeholder" in sample_line
    assert "front-matter-conflict" not in out
    assert result.returncode == 0  # a draft's placeholders are warnings, not errors
    assert "open-weights-eval-suite.md: publishable" in out


def test_check_json_on_a_folder_of_broken_briefs(project):
    folder = project.root / "mixed"
    for name, (data, _) in BROKEN.items():
        folder.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
    write_brief(folder, "good-one.md")
    write_brief(folder / "sub", "dup.md")
    write_brief(folder / "sub2", "dup.md")
    result = project.cli("check", "--json", str(folder))
    assert result.returncode == 1
    problems = json.loads(result.stdout)
    for problem in problems:
        assert set(problem) == {"path", "line", "severity", "code", "field", "message"}
    files_with_problems = {p["path"].rsplit("/", 1)[-1] for p in problems}
    assert set(BROKEN) | {"dup.md"} <= files_with_problems
    assert not any(p["path"].endswith("good-one.md") for p in problems)


def test_check_exits_1_only_for_errors_and_2_for_usage(project):
    write_brief(project.briefs, "fine.md")
    assert project.cli("check").returncode == 0
    (project.briefs / "broken.md").write_text("---\ntitle: [\n---\n")
    assert project.cli("check").returncode == 1
    assert project.cli("check", "--no-such-flag").returncode == 2


def test_list_shows_publishable_or_why_not(project):
    write_brief(project.briefs, "ready.md")
    write_brief(project.briefs, "later.md", published_at="2030-01-01T00:00:00Z")
    shutil.copy(SAMPLE, project.briefs)
    rows = {r["id"]: r for r in json.loads(
        project.cli("list", "--json", "--now", "2026-11-28T00:00:00Z", check=True).stdout)}
    assert rows["ready"]["state"] == "due"
    assert rows["ready"]["channels"]["outbox"]["state"] == "due"
    assert rows["later"]["state"] == "scheduled"
    assert rows["000_abc272253b24f11a"]["publishable"] is False
    assert any("draft" in reason for reason in rows["000_abc272253b24f11a"]["why_not"])
    table = project.cli("list", "--now", "2026-11-28T00:00:00Z", check=True).stdout
    assert "ready" in table and "scheduled" in table


def test_help_and_check_import_no_network_sdk(project):
    code = (
        "import sys; from bot.cli import main\n"
        "for argv in (['--help'], ['check', 'seeds']):\n"
        "    try: main(argv)\n"
        "    except SystemExit: pass\n"
        "loaded = [m for m in ('tweepy', 'atproto', 'mastodon', 'requests_oauthlib', 'PIL',"
        " 'mjml') if m in sys.modules]\n"
        "print('LOADED', loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert "LOADED []" in result.stdout, result.stdout + result.stderr


def test_help_teaches(project):
    result = project.cli("--help", check=True)
    for command in ("check", "list", "run", "status", "retry", "skip", "config"):
        assert command in result.stdout
    run_help = project.cli("run", "--help", check=True).stdout
    assert "--dry-run" in run_help and "Example" in run_help


def test_every_help_has_an_example():
    import argparse

    from bot.cli import build_parser

    def walk(parser, path):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*path, name])

    found = list(walk(build_parser(), []))
    assert len(found) > 15
    missing = [" ".join(path) for path, parser in found[1:]
               if "Example" not in parser.format_help()]
    assert missing == []


def test_a_local_hero_image_that_does_not_exist_is_an_error_yet_the_post_goes_out(project):
    write_brief(project.briefs, "pictured.md", extra="image: photos/nothere.jpg\n")
    write_brief(project.briefs, "draft.md", status="draft", extra="image: nothere.png\n")
    result = project.cli("check", "--json")
    assert result.returncode == 1
    found = {(Path(p["path"]).name, p["code"], p["severity"]) for p in json.loads(result.stdout)}
    assert ("pictured.md", "missing-image", "error") in found
    assert ("draft.md", "missing-image", "warning") in found
    run = project.cli("run", "--once")  # the text goes out without the image
    assert "1 sent" in run.stdout
    assert run.returncode == 1 and "missing-image" in run.stderr  # and the error is named


def test_a_source_url_x_and_mastodon_would_link_only_in_part_is_a_warning(project):
    write_brief(project.briefs, "dot.md", url="https://example.org/story.")
    write_brief(project.briefs, "creds.md", url="https://user:secret@example.org/story")
    write_brief(project.briefs, "fine.md", url="https://example.org/story?id=4")
    result = project.cli("check", "--json")
    assert result.returncode == 0  # a warning: the brief still goes out
    found = {Path(p["path"]).name: p for p in json.loads(result.stdout)
             if p["code"] == "partly-linked-url"}
    assert set(found) == {"dot.md", "creds.md"}
    assert "only 'https://example.org/story'" in found["dot.md"]["message"]
    assert found["dot.md"]["field"] == "source_url"
