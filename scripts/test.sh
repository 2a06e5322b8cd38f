#!/usr/bin/env bash
# Installs what the test suite needs and runs it: the README's test command, and what .ci/run
# calls. Services (PostgreSQL, the Bluesky reference server) are started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# Debian packages the tests use, installed only where missing: PostgreSQL (installed but not
# running on these machines; the tests start a throwaway cluster with initdb), SpamAssassin (the
# digest is scored with its local rules), Chromium (the preview is tested in headless Chromium),
# Dovecot (`bounces fetch` reads real reports from a throwaway IMAP server) and Postfix (its
# real bounce reports, delivered into that server's mailbox; each test configures its own).
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v spamassassin >/dev/null 2>&1 || missing+=(spamassassin)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
[ -x /usr/sbin/postfix ] || missing+=(postfix)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  # No system-wide mail setup: the tests start their own instances on loopback ports.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The reference Bluesky server (npm) for the Bluesky adapter's tests.
bash scripts/install-pds.sh

.venv/bin/ruff check .
# The import graph's layers and forbidden arrows (pyproject.toml, [tool.importlinter]).
.venv/bin/lint-imports --no-cache
# pytest exits 5 when it collects nothing: like any non-zero exit, that fails this script.
.venv/bin/python -m pytest "$@"
