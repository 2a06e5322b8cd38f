#!/usr/bin/env bash
# Install the local Bluesky PDS used by integration tests (tests/peers/bluesky-pds).
# Idempotent: does nothing when @atproto/pds is already installed.
# npm_config_nodedir=/usr lets better-sqlite3 build against the system node headers offline.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/tests/peers/bluesky-pds"

if [ -d "$dir/node_modules/@atproto/pds" ]; then
  echo "PDS already installed in $dir"
  exit 0
fi

cd "$dir"
export npm_config_nodedir="${npm_config_nodedir:-/usr}"
if ! npm ci --no-audit --no-fund; then
  echo "npm ci failed; falling back to npm install" >&2
  npm install --no-audit --no-fund
fi
echo "PDS installed in $dir"
