"""A digest project whose mail goes through a provider's batch channel (Postmark, SES)."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Project
from tests.email.digest_setup import NOW, PERIOD, write_week_briefs

FROM = "Weekly <digest@example.org>"


def provider_project(project: Project, channel: str, *, publish: str = "") -> None:
    """The week's briefs and `channel` (a `[channels.NAME]` table) as the only mail channel."""
    write_week_briefs(project)
    project.write_config(
        extra=f'[email]\nfrom_address = "{FROM}"\nbase_url = "http://127.0.0.1:8025"\n',
        publish=f'backfill = "all"\nretry_base = "0s"\n{publish}', channels=channel)


def send(project: Project, env: dict[str, str], *, now: str = NOW) -> tuple[int, dict[str, Any]]:
    """`briefbot digest send` for the week: its exit code and its JSON report."""
    result = project.cli("digest", "send", "--period", PERIOD, "--now", now, "--json", env=env)
    try:
        return result.returncode, json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"no JSON report:\n{result.stdout}\n{result.stderr}") from None
