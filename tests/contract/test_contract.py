"""Runs the adapter contract (tests/contract/__init__.py) against every channel adapter we ship
or test."""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests import contract

# Harness modules: tests/contract/harness_<name>.py. Optional ones skip while they are missing.
HARNESSES = ["outbox", "flaky", "x", "mastodon", "webhook", "telegram", "bluesky"]
OPTIONAL = {"bluesky"}


@pytest.fixture(params=HARNESSES)
def harness(request: pytest.FixtureRequest, tmp_path: Path):
    name = request.param
    if name in OPTIONAL:
        module = pytest.importorskip(f"tests.contract.harness_{name}")
    else:
        module = importlib.import_module(f"tests.contract.harness_{name}")
    with contextmanager(module.open_harness)(request, tmp_path) as opened:
        yield opened


@pytest.mark.parametrize("check", contract.CHECKS, ids=lambda check: check.__name__[6:])
def test_contract(harness: contract.Harness, check) -> None:
    check(harness)


def test_secrets_stay_secret(harness: contract.Harness, caplog: pytest.LogCaptureFixture) -> None:
    contract.check_secrets_stay_secret(harness, caplog)
