"""The import graph: the layer contracts hold, a reversed arrow breaks them with its chain named,
and checking a configuration loads neither the scheduler nor the database layer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=project, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(project), "PATH": ""})


def test_the_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_reversed_import_breaks_the_layers_with_its_chain_named(tmp_path):
    shutil.copytree(ROOT / "bot", tmp_path / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    leaf = tmp_path / "bot" / "message.py"
    leaf.write_text(leaf.read_text() + "\nfrom bot import publish  # noqa: E402,F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "bot.message -> bot.publish" in result.stdout


def imported_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return {name.split(".")[0] for name in out.split()}


def test_checking_a_configuration_loads_no_scheduler_and_no_database_layer():
    loaded = imported_by("from bot.config import load_settings; load_settings('config.toml')")
    assert not loaded & {"apscheduler", "sqlalchemy", "tweepy", "requests"}, loaded


def test_help_loads_no_network_sdk():
    loaded = imported_by("import bot.cli")
    assert not loaded & {"tweepy", "requests", "apscheduler", "sqlalchemy", "boto3",
                         "botocore"}, loaded


def test_checking_an_ses_channel_loads_no_aws_sdk(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[channels.ses]\ntype = "ses"\nregion = "eu-west-1"\n', encoding="utf-8")
    loaded = imported_by("from bot.config import load_settings; from bot.channels import "
                         f"check_channels; check_channels(load_settings({str(config)!r}))")
    assert "bot" in loaded and not loaded & {"boto3", "botocore"}, loaded


def test_every_logger_is_in_the_briefbot_namespace():
    """One namespace, so `logging.getLogger("briefbot")` configures (and silences) all of ours."""
    code = (
        "import importlib, json, logging, pkgutil, bot\n"
        "mods = [importlib.import_module(m.name) for m in pkgutil.walk_packages(bot.__path__, "
        "'bot.') if not m.name.endswith('__main__')]\n"
        "ours = {f'{m.__name__}.{k}': v.name for m in mods for k, v in vars(m).items() "
        "if isinstance(v, logging.Logger)}\n"
        "strays = sorted(n for n in logging.root.manager.loggerDict if n.split('.')[0] == 'bot')\n"
        "print(json.dumps([len(mods), ours, strays]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    modules, loggers, strays = json.loads(out)
    assert modules > 40 and len(loggers) >= 8, (modules, loggers)
    assert all(name == "briefbot" or name.startswith("briefbot.") for name in loggers.values()), (
        loggers)
    assert strays == []
