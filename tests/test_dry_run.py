"""A dry run never sends: every --dry-run path goes through one guard (`forbid_sending`)."""

from __future__ import annotations

import pytest

from bot.channels import DryRunSend, forbid_sending, load_channel_class
from bot.message import DeliveryKey, Message
from tests.briefs_factory import write_brief

TRAP = '[channels.trap]\ntype = "trap"\n'


@pytest.mark.parametrize("args", [["run", "--dry-run"], ["run", "--once", "--dry-run"],
                                  ["preview"]])
def test_dry_run_paths_never_reach_send(project, args):
    project.write_config(channels=TRAP)
    write_brief(project.briefs, "one.md")
    result = project.cli(*args, timeout=60)
    assert not (project.root / "trap-sent").exists(), result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    if args[0] == "run":
        assert "dry run" in result.stdout


def test_forbid_sending_refuses_send(project):
    from bot.config import load_settings

    project.write_config(channels=TRAP)
    settings = load_settings(str(project.config))
    config = settings.config.channels["trap"]
    channel = forbid_sending(load_channel_class("trap")("trap", config, settings))
    with pytest.raises(DryRunSend):
        channel.send(Message(key=DeliveryKey("brief:x", "trap"), kind="post", text="x"))
    assert not (project.root / "trap-sent").exists()


def test_run_once_exit_codes_tell_the_truth(project):
    (project.briefs / "bad.md").write_text("---\ntitle: [unclosed\n---\n", encoding="utf-8")
    result = project.cli("run", "--once")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "nothing to send" not in result.stdout
    project.write_config(channels="")
    result = project.cli("run", "--once")
    assert result.returncode == 2 and "no enabled channel" in result.stderr
    project.write_config()
    (project.root / "briefs").rename(project.root / "gone")
    result = project.cli("run", "--once")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_bad_port_and_unwritable_preview_out_are_messages_not_tracebacks(project):
    result = project.cli("serve", "--port", "99999")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not a port" in result.stderr
    (project.root / "afile").write_text("x")
    result = project.cli("preview", "--out", str(project.root / "afile"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--out" in result.stderr


def test_config_after_the_command_and_version(project):
    import subprocess
    import sys

    write_brief(project.briefs, "one.md")
    result = subprocess.run([sys.executable, "-m", "bot", "list", "--json", "--config",
                             str(project.config)], cwd="/", capture_output=True, text=True,
                            env=project.env)
    assert result.returncode == 0, result.stderr
    assert '"one"' in result.stdout
    version = subprocess.run([sys.executable, "-m", "bot", "--version"], capture_output=True,
                             text=True, env=project.env)
    assert version.returncode == 0 and version.stdout.startswith("briefbot ")
