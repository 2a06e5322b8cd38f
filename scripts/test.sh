#!/usr/bin/env bash
# Installs what the test suite needs and runs it: the README's test command, and what .ci/run
# calls. Services (PostgreSQL, the Bluesky reference server) are started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# PostgreSQL is installed but not running on these machines; the tests start a throwaway
# cluster with initdb. Install the server only where it is missing.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
# The email tests score a rendered digest with SpamAssassin's local rules.
if ! command -v spamassassin >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq spamassassin >/dev/null
fi
# The preview tests drive headless Chromium (Debian's package) over the DevTools protocol.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
if [ -f scripts/install-pds.sh ]; then
  bash scripts/install-pds.sh
fi

.venv/bin/ruff check .
# pytest exits 5 when it collects nothing: like any non-zero exit, that fails this script.
.venv/bin/python -m pytest "$@"
