#!/usr/bin/env bash
# The test command: set up (idempotent), install the real servers the
# end-to-end tests run (Debian's prometheus, which brings promtool,
# postgresql, redis-server and tinyproxy), build the OpenTelemetry Collector, Jaeger,
# VictoriaLogs and kustomize from source once (scripts/build-binaries.sh; cached outside the repository),
# then lint (ruff), type-check (mypy) and run the whole suite. Extra arguments
# go to pytest, e.g. scripts/test.sh -k otlp
#
# Each step is announced on stderr with the time since the start (the first
# build of the Collector and Jaeger takes about 10 minutes and reports as it
# goes). Caches (ruff, mypy, pytest, Python bytecode) live beside the binaries,
# outside the repository, and the tests write only to temporary directories:
# the checkout is as clean after a run as before it.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
say() { local s=$(( $(date +%s) - started )); printf 'test.sh [%dm%02ds] %s\n' $(( s / 60 )) $(( s % 60 )) "$*" >&2; }

CACHE="${NEXUS_OTEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nexus-otel}"
export RUFF_CACHE_DIR="$CACHE/ruff" MYPY_CACHE_DIR="$CACHE/mypy" PYTHONPYCACHEPREFIX="$CACHE/pycache"
# Bytecode goes to that prefix, outside the checkout, so it may be written: with PYTHONDONTWRITEBYTECODE set (some
# shells and images set it) every Python subprocess of the suite would compile its imports again, about a second each.
unset PYTHONDONTWRITEBYTECODE

say "setting up .venv (scripts/setup.sh)"
bash scripts/setup.sh
# The Kailash Nexus integration is tested against the real kailash-nexus and kailash packages.
say "installing the dev and kailash extras into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,kailash]'

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v tinyproxy >/dev/null 2>&1 || need_apt+=(tinyproxy)  # the forward proxy of tests/test_webhook_proxies.py
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)  # tests/test_webhook_tls.py hashes a certificate folder
if [ "${#need_apt[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
      echo "test.sh: need root (or sudo) to install Debian packages: ${need_apt[*]}" >&2; exit 1
    fi
  fi
  say "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Without Go this prints one line and the tests on the real Collector, Jaeger and VictoriaLogs (and kustomize,
# where kubectl is not installed) skip; under CI=true it fails instead. Its progress goes to stderr; its stdout
# (the four paths) is not needed here.
say "the Collector, Jaeger, VictoriaLogs and kustomize (scripts/build-binaries.sh: built once, then cached in $CACHE)"
bash scripts/build-binaries.sh > /dev/null

# Lint and type-check first (rules and settings in pyproject.toml): any finding fails the run.
say "lint (ruff)"
.venv/bin/ruff check .
say "type-check (mypy)"
.venv/bin/mypy

say "tests (pytest)"
# Two workers (pytest-xdist): the tests mostly wait on real servers, timeouts and subprocesses. Which tests
# share a worker: tests/xdist_groups.py. `scripts/test.sh -n 0` runs them in one process, one after another.
exec .venv/bin/python -m pytest -o cache_dir="$CACHE/pytest" -n 2 --dist loadgroup "$@"
