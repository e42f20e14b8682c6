#!/usr/bin/env bash
# The main job: set up, then serve the example app, drive traffic through HTTP,
# and show what the telemetry recorded. Extra arguments go to `nexus-otel demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/nexus-otel demo "$@"
