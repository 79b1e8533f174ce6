#!/usr/bin/env bash
# Runs the three-site demo mesh in network namespaces (needs root): sets up .venv first,
# then `isthmus demo`, passing its arguments on (e.g. --keep to keep configs and logs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/isthmus demo "$@"
