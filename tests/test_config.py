"""Configuration: validated on load, errors name the key, secrets only from the environment."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from bot.config import ConfigError, load_settings, parse_config, parse_duration


def test_default_config_file_is_valid():
    from tests.conftest import ROOT

    settings = load_settings(ROOT / "config.toml")
    assert settings.config.channels["outbox"].type == "outbox"
    assert settings.brief_folders == [ROOT / "seeds"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"publsh": {}}, "unknown key `publsh`"),
        ({"publish": {"max_per_run": "many"}}, "`publish.max_per_run`"),
        ({"publish": {"lease": "soon"}}, 'expected a duration such as "30s"'),
        ({"timezone": "Mars/Olympus"}, "IANA time zone"),
        ({"email": {"from_address": "News <n@example.org>\r\nBcc: all@example.org"}},
         "`email.from_address`: must be one line"),
        ({"email": {"list_name": "Weekly\nX-Spam: no"}}, "`email.list_name`: must be one line"),
        ({"email": {"base_url": "javascript:alert(1)"}}, "`email.base_url`: expected the http"),
        ({"email": {"from_address": "digest at example dot org"}},
         "`email.from_address`: expected an address"),
        ({"channels": {"a": {"folder": "x"}}}, "`channels.a.type` is required"),
        ({"channels": {"a": {"type": "outbox", "unknown_policy": "maybe"}}},
         "`channels.a.unknown_policy`"),
    ],
)
def test_bad_values_name_the_key(data, expected):
    with pytest.raises(ConfigError) as error:
        parse_config(data, "my.toml")
    assert expected in str(error.value)
    assert "my.toml" in str(error.value)


def test_secrets_are_refused_as_values_and_named_as_variables():
    with pytest.raises(ConfigError, match="password_env"):
        parse_config({"channels": {"mail": {"type": "smtp", "password": "hunter2"}}})
    config = parse_config({"channels": {"mail": {"type": "smtp", "password_env": "SMTP_PW"}}})
    assert config.channels["mail"].options == {"password_env": "SMTP_PW"}


def test_durations():
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration(90) == timedelta(seconds=90)
    for bad in ("", "ten minutes", "5x", -3, True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_config_command_redacts_the_database_password(project):
    env = {"BRIEFBOT_DATABASE_URL": "postgresql+psycopg://bot:s3cret-pw@db.example/briefbot"}
    result = project.cli("config", env=env, check=True)
    assert "s3cret-pw" not in result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["state"]["database_url"] == "postgresql+psycopg://bot:***@db.example/briefbot"


def run_briefbot(cwd, env, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_briefbot_config_env_selects_the_file_and_bad_config_exits_2(project, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('timezone = "Europe/Paris"\n[briefs]\nfolders = ["briefs"]\n')
    assert json.loads(project.cli("config", check=True).stdout)["timezone"] == "UTC"
    proc = run_briefbot(tmp_path, {**project.env, "BRIEFBOT_CONFIG": str(other)}, "config")
    assert json.loads(proc.stdout)["timezone"] == "Europe/Paris"
    other.write_text("[publish]\nmax_per_run = 0\n")
    bad = run_briefbot(tmp_path, project.env, "--config", str(other), "check")
    assert bad.returncode == 2
    assert "publish.max_per_run" in bad.stderr


@pytest.mark.parametrize(("table", "expected"), [
    ('[channels.bsky]\ntype = "bluesky"\nhndle = "a.example.org"\n',
     ["`channels.bsky.handle` is required", "unknown key `channels.bsky.hndle`",
      "bluesky channels take: characters_reserved_per_url, embed, handle"]),
    ('[channels.x]\ntype = "x"\ntimeout = "soon"\n',
     ["`channels.x.timeout`: Input should be a valid number"]),
    ('[channels.m]\ntype = "mastodon"\ninstance = "https://m.example"\nvisibility = "everyone"\n',
     ["`channels.m.visibility`: Input should be 'public', 'unlisted', 'private' or 'direct'"]),
    ('[channels.o]\ntype = "outbox"\nposts = "yes"\n',
     ["`channels.o.posts`: Input should be a valid boolean"]),
    ('[channels.hook]\ntype = "webhook"\n',
     ["`channels.hook`: set either `url` or `url_env`"]),
])
def test_channel_options_are_checked_on_load(project, table, expected):
    project.write_config(channels=table)
    for command in (["check"], ["list"], ["run", "--once", "--dry-run"], ["status"]):
        result = project.cli(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert str(project.config) in result.stderr
        for text in expected:
            assert text in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_secret_pasted_into_an_env_option_is_refused_without_echoing_it(project):
    project.write_config(channels='[channels.m]\ntype = "mastodon"\n'
                         'instance = "https://m.example"\ntoken_env = "s3cr3t-t0ken value"\n')
    result = project.cli("check")
    assert result.returncode == 2
    assert "`channels.m.token_env` names an environment variable" in result.stderr
    assert "s3cr3t" not in result.stderr + result.stdout


def test_a_missing_credential_fails_the_start_and_burns_no_delivery(project):
    from tests.briefs_factory import write_brief

    write_brief(project.briefs, "a.md")
    project.write_config(channels='[channels.outbox]\ntype = "outbox"\n'
                         '[channels.m]\ntype = "mastodon"\ninstance = "http://127.0.0.1:9"\n'
                         'token_env = "BRIEFBOT_TEST_TOKEN"\n')
    result = project.cli("run", "--once")
    assert result.returncode == 2, result.stderr
    assert ("`channels.m.token_env`: environment variable BRIEFBOT_TEST_TOKEN is not set; "
            "export it, or set enabled = false") in result.stderr
    assert project.cli("run", timeout=60).returncode == 2  # the daemon does not start either
    status = json.loads(project.cli("status", "--json", check=True).stdout)
    assert status["attention"] == [] and status["counts"]["dead"] == 0
    assert project.outbox() == []
    # A dry run needs no secret: it sends nothing.
    assert project.cli("run", "--once", "--dry-run").returncode == 0


def test_no_configuration_anywhere_exits_2_and_says_so(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "bot", "run", "--once"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "no --config, no $BRIEFBOT_CONFIG and no config.toml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://briefbot:hunter2secret@db.internal/briefbot",
    "postgresql://:hunter2secret@db.internal/briefbot",
    "postgresql://briefbot:hunter@2secret@db.internal/briefbot",  # an unencoded @
    "postgresql://db.internal/briefbot?user=briefbot&password=hunter2secret",
])
def test_config_redacts_every_form_of_database_password(project, url):
    shown = project.cli("config", env={"BRIEFBOT_DATABASE_URL": url}, check=True).stdout
    assert "hunter" not in shown and "2secret" not in shown
    assert "db.internal" in shown


@pytest.mark.parametrize("table", [
    '[channels.o]\ntype = "outbox"\npass = "hunter2secret"\n',
    '[channels.o]\ntype = "outbox"\npwd = "hunter2secret"\n',
    '[channels.o]\ntype = "outbox"\napikey = "hunter2secret"\n',
    '[channels.o]\ntype = "outbox"\nauth = "hunter2secret"\n',
    '[channels.o]\ntype = "outbox"\ncredentials = "hunter2secret"\n',
    '[channels.o]\ntype = "outbox"\nkey = "hunter2secret"\n',
    '[channels.o]\ntype = "outbox"\nheaders = [{ name = "x", token = "hunter2secret" }]\n',
    'database_url_env = "postgresql://u:hunter2secret@h/db"\n',
])
def test_inline_secrets_are_refused_at_any_depth_without_being_echoed(project, table):
    text = project.config.read_text()
    if table.startswith("database_url_env"):  # into the existing [state] table
        assert '[state]\ndir = "state"\n' in text
        text = text.replace('[state]\ndir = "state"\n', '[state]\ndir = "state"\n' + table)
    else:
        text += "\n" + table
    project.config.write_text(text)
    result = project.cli("check")
    assert result.returncode == 2, result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout
    assert "secret" in result.stderr or "environment variable" in result.stderr
