#!/usr/bin/env bash
# Builds the deploy kit's servers from source, once, into a cache outside the
# repository: our OpenTelemetry Collector distribution (the Collector builder
# run on deploy/collector/builder-config.yaml), Jaeger v2 and VictoriaLogs (the
# logs backend), and kustomize (what `kubectl kustomize` runs: the tests render
# deploy/kubernetes with it where kubectl is not installed). Versions come
# from deploy/versions.env (kustomize's below); a build is keyed by them (and by the manifest's
# hash), so a second run finds it and returns at once.
#
#   bash scripts/build-binaries.sh           build what is missing, print the four paths
#   bash scripts/build-binaries.sh --where   print the four paths, build nothing
#
# The cache is $NEXUS_OTEL_CACHE_DIR, else $XDG_CACHE_HOME/nexus-otel, else
# ~/.cache/nexus-otel. Without Go this prints one line saying what to install
# and exits 0 (the tests that need the binaries skip), except under CI=true,
# where it exits 1: CI must run those tests.
#
# Stdout is the four path lines only (otelcol=, jaeger=, victorialogs=, kustomize=). A build reports on stderr as it goes: a
# line per step with the time since the build began, and a line every 30 s
# while a long step runs, so the first run's ten minutes never look hung.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=../deploy/versions.env
source "$ROOT/deploy/versions.env"
CACHE="${NEXUS_OTEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nexus-otel}"
MANIFEST="$ROOT/deploy/collector/builder-config.yaml"
MANIFEST_HASH="$(sha256sum "$MANIFEST" | cut -c1-12)"
OTELCOL_DIR="$CACHE/otelcol-nexus-$COLLECTOR_VERSION-$MANIFEST_HASH"
JAEGER_DIR="$CACHE/jaeger-$JAEGER_VERSION"
VICTORIALOGS_DIR="$CACHE/victorialogs-$VICTORIALOGS_VERSION"
OTELCOL="$OTELCOL_DIR/otelcol-nexus"
JAEGER="$JAEGER_DIR/jaeger"
VICTORIALOGS="$VICTORIALOGS_DIR/victoria-logs"
# kustomize is a tool of the tests, not a server of the deploy kit: its version lives here. 5.8.2 is the newest
# that builds with Go 1.26 (5.8.3's kustomize/api needs a newer Go); its output is kubectl kustomize's.
KUSTOMIZE_MODULE=sigs.k8s.io/kustomize/kustomize/v5
KUSTOMIZE_VERSION=5.8.2
KUSTOMIZE_DIR="$CACHE/kustomize-$KUSTOMIZE_VERSION"
KUSTOMIZE="$KUSTOMIZE_DIR/kustomize"

where() {
  echo "otelcol=$OTELCOL"; echo "jaeger=$JAEGER"; echo "victorialogs=$VICTORIALOGS"; echo "kustomize=$KUSTOMIZE"
}
if [ "${1:-}" = "--where" ]; then where; exit 0; fi

# kustomize renders the Kubernetes kit where kubectl (which has it built in) is not installed.
kustomize_ready() { [ -x "$KUSTOMIZE" ] || command -v kubectl >/dev/null 2>&1; }
if [ -x "$OTELCOL" ] && [ -x "$JAEGER" ] && [ -x "$VICTORIALOGS" ] && kustomize_ready; then where; exit 0; fi

if ! command -v go >/dev/null 2>&1; then
  echo "build-binaries.sh: the Collector, Jaeger, VictoriaLogs and kustomize tests need Go 1.26 or newer (https://go.dev/dl/) to build them; skipping" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  exit 0
fi

mkdir -p "$CACHE"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
started=$(date +%s)

elapsed() { local s=$(( $(date +%s) - started )); printf '%dm%02ds' $(( s / 60 )) $(( s % 60 )); }
say() { echo "build-binaries.sh [$(elapsed)] $*" >&2; }

# step DESCRIPTION COMMAND...: say what runs, run it, and say so again every 30 s until it ends; its status.
TICKER=""
trap '[ -z "$TICKER" ] || kill "$TICKER" 2>/dev/null || true' EXIT
step() {
  local what="$1" status=0
  shift
  say "$what"
  ( while sleep 30 >/dev/null 2>&1; do say "  ... still ${what%% (*}"; done ) &
  TICKER=$!
  "$@" || status=$?
  kill "$TICKER" 2>/dev/null || true
  wait "$TICKER" 2>/dev/null || true
  TICKER=""
  return "$status"
}

failed() {  # failed LOG WHAT: the end of the log, and which build failed
  tail -30 "$1" >&2
  say "the $2 build failed; log: $1"
  exit 1
}

collector_builder() { GOBIN="$work/bin" go install "$COLLECTOR_BUILDER_MODULE@v$COLLECTOR_VERSION" > "$work/install.log" 2>&1; }
collector_build() { (cd "$work" && "$work/bin/builder" --config "$MANIFEST" > build.log 2>&1); }
jaeger_modules() {
  (cd "$work" && go mod init nexus-otel/jaeger-build >/dev/null 2>&1 \
    && go get -tool "$JAEGER_MODULE/cmd/jaeger@$JAEGER_MODULE_VERSION" > build.log 2>&1)
}
jaeger_build() {
  (cd "$work" && go build -trimpath -o jaeger.bin \
    -ldflags "-X $JAEGER_MODULE/internal/version.latestVersion=v$JAEGER_VERSION" \
    "$JAEGER_MODULE/cmd/jaeger" >> build.log 2>&1)
}
victorialogs_modules() {
  (cd "$work" && go mod init nexus-otel/victorialogs-build >/dev/null 2>&1 \
    && go get -tool "$VICTORIALOGS_MODULE/app/victoria-logs@v$VICTORIALOGS_VERSION" > build.log 2>&1)
}
victorialogs_build() {
  (cd "$work" && go build -trimpath -o victoria-logs.bin \
    -ldflags "-X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version=victoria-logs-v$VICTORIALOGS_VERSION" \
    "$VICTORIALOGS_MODULE/app/victoria-logs" >> build.log 2>&1)
}
kustomize_build() {
  GOBIN="$work/bin" GOTOOLCHAIN=local go install "$KUSTOMIZE_MODULE@v$KUSTOMIZE_VERSION" > "$work/build.log" 2>&1
}

if [ ! -x "$OTELCOL" ]; then
  say "building the Collector $COLLECTOR_VERSION into $OTELCOL_DIR (one time, several minutes)"
  work="$CACHE/src/otelcol-nexus-$COLLECTOR_VERSION-$MANIFEST_HASH"
  rm -rf "$work" && mkdir -p "$work/bin"
  step "installing the Collector builder (go install, downloads included)" collector_builder \
    || failed "$work/install.log" "Collector builder"
  step "generating and compiling the Collector (the longest step; log: $work/build.log)" collector_build \
    || failed "$work/build.log" "Collector"
  mkdir -p "$OTELCOL_DIR"
  cp "$work/_build/otelcol-nexus" "$OTELCOL.tmp" && mv "$OTELCOL.tmp" "$OTELCOL"
  rm -rf "$work/_build"
  say "the Collector is built: $OTELCOL"
fi

# build_missing NAME BINARY PRODUCT NOTE [STEP_TEXT STEP_FUNCTION]...: unless BINARY exists, run the steps in
# $work (set by the caller; the steps write there), then move PRODUCT to BINARY.
build_missing() {
  local name=$1 binary=$2 product=$3 note=$4
  shift 4
  [ -x "$binary" ] && return 0
  say "building $name into $(dirname "$binary") ($note)"
  rm -rf "$work" && mkdir -p "$work/bin"
  while [ $# -gt 0 ]; do
    step "$1" "$2" || failed "$work/build.log" "$name"
    shift 2
  done
  mkdir -p "$(dirname "$binary")"
  mv "$product" "$binary"
  say "$name is built: $binary"
}

work="$CACHE/src/jaeger-$JAEGER_VERSION"
build_missing "Jaeger $JAEGER_VERSION" "$JAEGER" "$work/jaeger.bin" "one time, several minutes" \
  "downloading Jaeger's modules (go get; log: $work/build.log)" jaeger_modules \
  "compiling Jaeger (log: $work/build.log)" jaeger_build

work="$CACHE/src/victorialogs-$VICTORIALOGS_VERSION"
build_missing "VictoriaLogs $VICTORIALOGS_VERSION" "$VICTORIALOGS" "$work/victoria-logs.bin" "one time, about a minute" \
  "downloading VictoriaLogs' modules (go get; log: $work/build.log)" victorialogs_modules \
  "compiling VictoriaLogs (log: $work/build.log)" victorialogs_build

if ! kustomize_ready; then
  work="$CACHE/src/kustomize-$KUSTOMIZE_VERSION"
  build_missing "kustomize $KUSTOMIZE_VERSION" "$KUSTOMIZE" "$work/bin/kustomize" "one time, under a minute" \
    "installing kustomize (go install, downloads included; log: $work/build.log)" kustomize_build
fi

say "built in $(( $(date +%s) - started )) s"
where
