#!/usr/bin/env bash
# The test command: set up (idempotent), then run the whole suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k otlp
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
