#!/usr/bin/env bash
# The main job: set up, then serve the example app, drive traffic through HTTP,
# and show what the telemetry recorded. Extra arguments go to `nexus-otel demo`;
# its exit status is the demo's (1 when the telemetry was not delivered or a
# check failed).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo.sh: setting up .venv (scripts/setup.sh; the first run installs the package, about a minute)" >&2
bash scripts/setup.sh
exec .venv/bin/nexus-otel demo "$@"
