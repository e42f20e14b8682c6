#!/usr/bin/env bash
# Installs nexus-otel into a virtualenv in .venv (with the dev extra), idempotently.
# Needs only Python 3.10+; the demo needs nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
