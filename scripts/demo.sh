#!/usr/bin/env bash
# Runs the four-site demo mesh in network namespaces: sets up .venv first, then
# `isthmus demo`, passing its arguments on (e.g. --keep to keep configs and logs).
# Needs root: re-runs itself through sudo when not root (scripts/root.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/root.sh"
as_root "network namespaces, TUN devices, Debian packages" "$here/scripts/demo.sh" "$@"
cd "$here"
bash scripts/setup.sh
exec .venv/bin/isthmus demo "$@"
