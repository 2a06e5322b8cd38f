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
