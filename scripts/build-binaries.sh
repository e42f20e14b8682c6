#!/usr/bin/env bash
# Builds the deploy kit's servers from source, once, into a cache outside the
# repository: our OpenTelemetry Collector distribution (the Collector builder
# run on deploy/collector/builder-config.yaml) and Jaeger v2. Versions come
# from deploy/versions.env; a build is keyed by them (and by the manifest's
# hash), so a second run finds it and returns at once.
#
#   bash scripts/build-binaries.sh           build what is missing, print the two paths
#   bash scripts/build-binaries.sh --where   print the two paths, build nothing
#
# The cache is $NEXUS_OTEL_CACHE_DIR, else $XDG_CACHE_HOME/nexus-otel, else
# ~/.cache/nexus-otel. Without Go this prints one line saying what to install
# and exits 0 (the tests that need the binaries skip), except under CI=true,
# where it exits 1: CI must run those tests.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=../deploy/versions.env
source "$ROOT/deploy/versions.env"
CACHE="${NEXUS_OTEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nexus-otel}"
MANIFEST="$ROOT/deploy/collector/builder-config.yaml"
MANIFEST_HASH="$(sha256sum "$MANIFEST" | cut -c1-12)"
OTELCOL_DIR="$CACHE/otelcol-nexus-$COLLECTOR_VERSION-$MANIFEST_HASH"
JAEGER_DIR="$CACHE/jaeger-$JAEGER_VERSION"
OTELCOL="$OTELCOL_DIR/otelcol-nexus"
JAEGER="$JAEGER_DIR/jaeger"

where() { echo "otelcol=$OTELCOL"; echo "jaeger=$JAEGER"; }
if [ "${1:-}" = "--where" ]; then where; exit 0; fi

if [ -x "$OTELCOL" ] && [ -x "$JAEGER" ]; then where; exit 0; fi

if ! command -v go >/dev/null 2>&1; then
  echo "build-binaries.sh: the Collector and Jaeger tests need Go 1.26 or newer (https://go.dev/dl/) to build them; skipping" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  exit 0
fi

mkdir -p "$CACHE"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
started=$(date +%s)

if [ ! -x "$OTELCOL" ]; then
  echo "build-binaries.sh: building the Collector $COLLECTOR_VERSION (one time, several minutes) into $OTELCOL_DIR" >&2
  work="$CACHE/src/otelcol-nexus-$COLLECTOR_VERSION-$MANIFEST_HASH"
  rm -rf "$work" && mkdir -p "$work/bin"
  GOBIN="$work/bin" go install "$COLLECTOR_BUILDER_MODULE@v$COLLECTOR_VERSION"
  (cd "$work" && "$work/bin/builder" --config "$MANIFEST" > build.log 2>&1) || {
    tail -30 "$work/build.log" >&2; echo "build-binaries.sh: the Collector build failed; log: $work/build.log" >&2; exit 1; }
  mkdir -p "$OTELCOL_DIR"
  cp "$work/_build/otelcol-nexus" "$OTELCOL.tmp" && mv "$OTELCOL.tmp" "$OTELCOL"
  rm -rf "$work/_build"
fi

if [ ! -x "$JAEGER" ]; then
  echo "build-binaries.sh: building Jaeger $JAEGER_VERSION (one time, several minutes) into $JAEGER_DIR" >&2
  work="$CACHE/src/jaeger-$JAEGER_VERSION"
  rm -rf "$work" && mkdir -p "$work"
  (cd "$work" \
    && go mod init nexus-otel/jaeger-build >/dev/null 2>&1 \
    && go get -tool "$JAEGER_MODULE/cmd/jaeger@$JAEGER_MODULE_VERSION" > build.log 2>&1 \
    && go build -trimpath -o jaeger.bin \
         -ldflags "-X $JAEGER_MODULE/internal/version.latestVersion=v$JAEGER_VERSION" \
         "$JAEGER_MODULE/cmd/jaeger" >> build.log 2>&1) || {
    tail -30 "$work/build.log" >&2; echo "build-binaries.sh: the Jaeger build failed; log: $work/build.log" >&2; exit 1; }
  mkdir -p "$JAEGER_DIR"
  mv "$work/jaeger.bin" "$JAEGER"
fi

echo "build-binaries.sh: built in $(( $(date +%s) - started )) s" >&2
where
