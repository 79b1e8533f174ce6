#!/usr/bin/env bash
# Everything CI checks: setup, lint, format, types, import contracts, then every test
# (unit, integration, and the e2e suite in network namespaces, which needs root).
# Extra arguments go to pytest (e.g. scripts/test.sh -q tests/unit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff check";         .venv/bin/ruff check .
echo "== ruff format --check"; .venv/bin/ruff format --check .
echo "== mypy";               .venv/bin/mypy
echo "== lint-imports";       .venv/bin/lint-imports
echo "== pytest";             .venv/bin/pytest "$@"
