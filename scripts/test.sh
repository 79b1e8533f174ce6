#!/usr/bin/env bash
# Everything CI checks: setup, lint, format, types, import contracts, then every test
# (unit, integration, and the e2e suite in network namespaces, which needs root).
# Extra arguments go to pytest (e.g. scripts/test.sh -q tests/unit).
# Needs root: re-runs itself through sudo when not root (scripts/root.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/root.sh"
as_root "network namespaces, TUN devices, Debian packages" "$here/scripts/test.sh" "$@"
cd "$here"
bash scripts/setup.sh
echo "== ruff check";         .venv/bin/ruff check .
echo "== ruff format --check"; .venv/bin/ruff format --check .
echo "== mypy";               .venv/bin/mypy
echo "== lint-imports";       .venv/bin/lint-imports
echo "== pytest";             .venv/bin/pytest "$@"
