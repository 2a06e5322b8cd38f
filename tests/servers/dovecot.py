"""A throwaway Dovecot IMAP server for tests: one passwd-file user, a Maildir under a temporary
folder, IMAPS and IMAP (with STARTTLS) on loopback ports, a certificate from the test CA.

As root the mail processes run as `nobody` (Dovecot never runs them as root); as another
user, everything runs as that user. Installed by scripts/test.sh (Debian's dovecot-imapd).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers.smtp_server import TestCertificates, free_port, wait_for_port

DH = Path("/usr/share/dovecot/dh.pem")


def binary() -> str | None:
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot",) if os.access(p, os.X_OK)), None)


def available() -> bool:
    return binary() is not None


@dataclass(frozen=True)
class Dovecot:
    host: str
    imaps_port: int
    imap_port: int
    user: str
    password: str
    ca_file: Path
    root: Path


@contextmanager
def server(user: str = "bounces", password: str = "test mailbox password") -> Iterator[Dovecot]:
    """Start Dovecot; yield where it listens; stop it and delete everything afterwards."""
    root = Path(tempfile.mkdtemp(prefix="briefbot-dovecot-"))
    certificates = TestCertificates.create(root / "tls")
    if os.geteuid() == 0:
        owner = pwd.getpwnam("nobody")
        login_user = "dovenull" if _exists("dovenull") else "nobody"
        internal_user = "dovecot" if _exists("dovecot") else "nobody"
    else:
        owner = pwd.getpwuid(os.geteuid())
        login_user = internal_user = owner.pw_name
    mail = root / "mail"
    mail.mkdir()
    if os.geteuid() == 0:
        os.chown(mail, owner.pw_uid, owner.pw_gid)
    os.chmod(root, 0o755)
    (root / "passwd").write_text(
        f"{user}:{{PLAIN}}{password}:{owner.pw_uid}:{owner.pw_gid}::{mail}/{user}::\n")
    imaps, imap = free_port(), free_port()
    config = root / "dovecot.conf"
    config.write_text(f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = {min(owner.pw_uid, 500)}
first_valid_gid = 0
ssl = yes
ssl_cert = <{certificates.cert_file}
ssl_key = <{certificates.key_file}
{f"ssl_dh = <{DH}" if DH.exists() else ""}
disable_plaintext_auth = yes
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""")
    for path in (root / "tls").iterdir():
        os.chmod(path, 0o644)  # read by Dovecot's config process, whoever runs it
    # The master forks into the background: its output goes to a file, never to a pipe
    # that would stay open as long as it runs.
    with open(root / "start.log", "wb") as out:
        started = subprocess.run([binary(), "-c", str(config)], stdout=out, stderr=out,
                                 stdin=subprocess.DEVNULL, timeout=30)
    if started.returncode != 0:
        _stop(root)
        text = (root / "start.log").read_text(errors="replace")
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"dovecot would not start: {text}")
    try:
        wait_for_port(imaps, "dovecot", 20)
        wait_for_port(imap, "dovecot", 20)
        yield Dovecot("127.0.0.1", imaps, imap, user, password, certificates.ca_file, root)
    finally:
        _stop(root)
        shutil.rmtree(root, ignore_errors=True)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _stop(root: Path) -> None:
    pid_file = root / "run" / "master.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
