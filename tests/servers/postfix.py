"""A throwaway Postfix instance for tests (`postfix -c DIR`), on a loopback port, as root.

It accepts mail for two test domains and then decides, as a real relay does, after the
session: `bounce.example.net` bounces (the error(8) transport, `5.1.1 User unknown`, so the
sender gets Postfix's real delivery status notification), `ok.example.com` is delivered (to
discard(8)). Mail for `example.org` (the return path, with `+` extensions) is delivered by
virtual(8) into a Maildir that Dovecot serves; a copy of everything sent goes to another
beside it (`copies/`), so a test can see what the recipients got.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers.smtp_server import free_port, wait_for_port

STOCK_MASTER = Path("/etc/postfix/master.cf")


def available() -> str | None:
    """None when Postfix can run here, else why not."""
    if shutil.which("postfix") is None and not os.access("/usr/sbin/postfix", os.X_OK):
        return "Postfix not found: install Debian's postfix (scripts/test.sh does, as root)"
    if os.geteuid() != 0:
        return "a Postfix instance needs root"
    if not STOCK_MASTER.is_file():
        return f"{STOCK_MASTER} is missing (reinstall Debian's postfix)"
    return None


@dataclass(frozen=True)
class Postfix:
    host: str
    port: int
    root: Path
    copies: Path  # Maildir/new with a copy of every message it accepted

    def log(self) -> str:
        try:
            return (self.root / "maillog").read_text(errors="replace")
        except OSError:
            return ""


def _postfix(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["postfix", "-c", str(conf), *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


@contextmanager
def server(mail_base: Path, mailbox: str, *, owner: tuple[int, int]) -> Iterator[Postfix]:
    """Deliver `bounce@example.org` (and `bounce+anything@`) to `mail_base/mailbox/Maildir/`,
    files owned by `owner` (uid, gid): Dovecot's mail user."""
    root = Path(tempfile.mkdtemp(prefix="briefbot-postfix-"))
    os.chmod(root, 0o755)  # the postfix user's processes open files below it
    conf, queue, data = root / "conf", root / "queue", root / "data"
    for folder in (conf, queue, data):
        folder.mkdir()
    shutil.chown(data, "postfix")
    port = free_port()
    master = STOCK_MASTER.read_text()
    master, found = re.subn(r"(?m)^smtp\s+inet\s.*smtpd\s*$",
                            f"127.0.0.1:{port} inet n - n - - smtpd", master)
    assert found == 1, "no smtpd line in the stock master.cf"
    (conf / "master.cf").write_text(master)
    (conf / "transport").write_text("bounce.example.net error:5.1.1 User unknown\n"
                                    "ok.example.com discard:\n")
    (conf / "mailboxes").write_text(f"bounce@example.org {mailbox}/Maildir/\n"
                                    "copies@example.org copies/Maildir/\n")
    (conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = mx.example.org
mydomain = example.org
myorigin = example.org
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_reject_unlisted_recipient = no
relay_domains = bounce.example.net ok.example.com
transport_maps = texthash:{conf}/transport
virtual_mailbox_domains = example.org
virtual_mailbox_base = {mail_base}
virtual_mailbox_maps = texthash:{conf}/mailboxes
virtual_uid_maps = static:{owner[0]}
virtual_gid_maps = static:{owner[1]}
virtual_minimum_uid = {min(owner[0], 100)}
recipient_delimiter = +
always_bcc = copies@example.org
alias_maps =
alias_database =
smtputf8_enable = no
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
""")
    started = _postfix(conf, "start")
    if started.returncode != 0:
        log = (root / "maillog").read_text(errors="replace") if (root / "maillog").exists() \
            else ""
        _postfix(conf, "stop")
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"postfix would not start: {started.stderr}{log}")
    try:
        wait_for_port(port, "postfix")
        yield Postfix("127.0.0.1", port, root, mail_base / "copies" / "Maildir" / "new")
    finally:
        _postfix(conf, "stop")
        _wait_stopped(data)
        shutil.rmtree(root, ignore_errors=True)


def _wait_stopped(data: Path, timeout: float = 15.0) -> None:
    pid_file = data.parent / "queue" / "pid" / "master.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return
        time.sleep(0.1)


def wait_for_files(folder: Path, count: int, timeout: float = 60.0) -> list[Path]:
    """The files in `folder` once there are `count` of them (Maildir/new: delivered mail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob("*")) if folder.is_dir() else []
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{len(found)} of {count} messages arrived in {folder}")
