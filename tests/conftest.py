"""Shared fixtures: a project folder with its own config, and real services on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.servers import pg

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "seeds" / "000_abc272253b24f11a.txt"
PLUGINS = Path(__file__).resolve().parent / "plugins"

# Install the test plugin the way pip would: a dist-info with an entry point, on the path.
sys.path.insert(0, str(PLUGINS))


class Project:
    """A temporary briefbot setup: config.toml, a briefs folder, state and outbox."""

    def __init__(self, root: Path, *, like_repository: bool = False):
        """`like_repository`: the repository's own config.toml and seeds/, as a fresh clone."""
        self.root = root
        self.config = root / "config.toml"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BRIEFBOT_")}
        self.env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), str(ROOT)])
        if like_repository:
            shutil.copy(ROOT / "config.toml", self.config)
            shutil.copytree(ROOT / "seeds", root / "seeds")
            self.briefs = root / "seeds"
        else:
            self.briefs = root / "briefs"
            self.briefs.mkdir(exist_ok=True)
            self.write_config()

    def write_config(self, extra: str = "", channels: str | None = None,
                     publish: str = 'backfill = "all"') -> None:
        channels = channels if channels is not None else (
            '[channels.outbox]\ntype = "outbox"\nfolder = "outbox"\n'
        )
        self.config.write_text(
            textwrap.dedent(
                f"""\
                timezone = "UTC"
                [briefs]
                folders = ["briefs"]
                [state]
                dir = "state"
                [publish]
                {publish}
                """
            ) + extra + "\n" + channels,
            encoding="utf-8",
        )

    def outbox(self, channel: str = "outbox") -> list[Path]:
        folder = self.root / "outbox" / channel
        return sorted(folder.glob("*.json")) if folder.exists() else []

    def cli(self, *args: str, check: bool = False, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the real `briefbot` command in this project folder."""
        result = subprocess.run(
            [sys.executable, "-m", "bot", "--config", str(self.config), *args],
            cwd=self.root, capture_output=True, text=True, timeout=timeout,
            env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"briefbot {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture(scope="session")
def pg_server():
    if not pg.available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is required in CI: install postgresql or set "
                        "BRIEFBOT_TEST_PG_URL")
        pytest.skip("PostgreSQL binaries not found; set BRIEFBOT_TEST_PG_URL")
    with pg.server() as url:
        yield url


@pytest.fixture
def pg_url(pg_server: str) -> str:
    return pg.fresh_database(pg_server)


@pytest.fixture(scope="session")
def big_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8 MB noise PNG: over X's 5 MB limit, so a social adapter must fit it."""
    import random

    from PIL import Image

    width, height = 2000, 1400
    noise = random.Random(8).randbytes(width * height * 3)
    path = tmp_path_factory.mktemp("hero") / "big.png"
    Image.frombytes("RGB", (width, height), noise).save(path, "PNG", compress_level=1)
    assert path.stat().st_size > 8_000_000
    return path


@pytest.fixture(scope="session")
def moto_server():
    """moto's SES on loopback for the whole session (see tests/servers/moto_ses.py)."""
    from tests.servers.moto_ses import MotoSes

    server = MotoSes()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def moto_ses(moto_server):
    """moto's SES, emptied, with the sender domain example.org verified."""
    moto_server.reset()
    moto_server.verify("example.org")
    return moto_server
