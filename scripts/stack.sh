#!/usr/bin/env bash
# The deploy kit without Docker, for people who have Go: our OpenTelemetry
# Collector (deploy/otel-collector.yaml), Jaeger v2 (deploy/jaeger.yaml),
# VictoriaLogs (the logs backend) and Prometheus (deploy/prometheus-stack.yml,
# with deploy/alerts.yml) on loopback ports, in the background.
#
#   bash scripts/stack.sh up       build the binaries once (cached), start, print the URLs
#   bash scripts/stack.sh down     stop them
#   bash scripts/stack.sh status   what runs
#
# Apps send OTLP to http://127.0.0.1:4318 (http/protobuf) or 127.0.0.1:4317
# (grpc). The servers' own logs and state (VictoriaLogs' data too) are in
# $NEXUS_OTEL_STACK_DIR (default .nexus-otel/stack).
# Prometheus comes from your system (Debian: apt-get install prometheus); without
# it the stack runs without Prometheus.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${NEXUS_OTEL_STACK_DIR:-$ROOT/.nexus-otel/stack}"
HOST=127.0.0.1

# Jaeger's OTLP, health and metrics ports move out of the Collector's way. Jaeger does not trace
# itself here: its own spans would go to the Collector's :4317 and back into this Jaeger, and at
# 'down' it would wait 10 s to flush them to the Collector already stopped.
JAEGER_ENV=(JAEGER_LISTEN_HOST=$HOST JAEGER_OTLP_GRPC_PORT=14317 JAEGER_OTLP_HTTP_PORT=14318
            JAEGER_HEALTH_PORT=14133 JAEGER_METRICS_PORT=14269
            JAEGER_QUERY_HTTP_PORT=16686 JAEGER_QUERY_GRPC_PORT=16685 OTEL_TRACES_SAMPLER=always_off)
OTELCOL_ENV=(OTELCOL_LISTEN_HOST=$HOST JAEGER_OTLP_ENDPOINT=$HOST:14317
             VICTORIALOGS_ENDPOINT=http://$HOST:9428/insert/opentelemetry)
PORTS=(4317 4318 13133 8888 8889 14317 14318 14133 14269 16686 16685 9428 9090)
NAMES=(otelcol jaeger victorialogs prometheus)  # what 'status' lists

# A process that has exited but not yet been reaped (a zombie: its ports are already closed) is not
# alive; where init reaps lazily, kill -0 alone would wait for the reaper, not for the process.
alive() { kill -0 "$1" 2>/dev/null && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]; }

running() { [ -f "$STATE/$1.pid" ] && alive "$(cat "$STATE/$1.pid")"; }

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_http() {  # name url
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    running "$1" || { echo "stack.sh: $1 exited; its log: $STATE/$1.log" >&2; tail -20 "$STATE/$1.log" >&2; return 1; }
    sleep 0.2
  done
  echo "stack.sh: $1 did not answer $2 within 30 s; its log: $STATE/$1.log" >&2
  return 1
}

start() {  # name command...
  local name=$1; shift
  nohup env "$@" > "$STATE/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/$name.pid"
}

up() {
  for name in "${NAMES[@]}"; do
    if running "$name"; then echo "stack.sh: already up ($name runs); 'bash scripts/stack.sh down' first" >&2; exit 1; fi
  done
  for port in "${PORTS[@]}"; do
    if port_busy "$port"; then echo "stack.sh: port $HOST:$port is in use; the stack needs it" >&2; exit 1; fi
  done
  local paths otelcol jaeger victorialogs
  paths="$(CI= bash "$ROOT/scripts/build-binaries.sh")"
  otelcol="$(sed -n 's/^otelcol=//p' <<< "$paths")"
  jaeger="$(sed -n 's/^jaeger=//p' <<< "$paths")"
  victorialogs="$(sed -n 's/^victorialogs=//p' <<< "$paths")"
  if [ ! -x "$otelcol" ] || [ ! -x "$jaeger" ] || [ ! -x "$victorialogs" ]; then
    echo "stack.sh: needs Go 1.26 or newer (https://go.dev/dl/) to build the Collector, Jaeger and VictoriaLogs" >&2
    exit 1
  fi
  mkdir -p "$STATE"
  start jaeger "${JAEGER_ENV[@]}" "$jaeger" --config="$ROOT/deploy/jaeger.yaml"
  wait_http jaeger "http://$HOST:14133/status"
  # The Collector's logs pipeline exports here: up before it, like Jaeger.
  start victorialogs "$victorialogs" -storageDataPath="$STATE/victorialogs-data" -httpListenAddr="$HOST:9428"
  wait_http victorialogs "http://$HOST:9428/health"
  start otelcol "${OTELCOL_ENV[@]}" "$otelcol" --config="$ROOT/deploy/otel-collector.yaml"
  wait_http otelcol "http://$HOST:13133/"
  if command -v prometheus >/dev/null 2>&1; then
    mkdir -p "$STATE/prometheus-data"
    start prometheus prometheus --config.file="$ROOT/deploy/prometheus-stack.yml" \
      --storage.tsdb.path="$STATE/prometheus-data" --web.listen-address="$HOST:9090" \
      --web.enable-lifecycle
    wait_http prometheus "http://$HOST:9090/-/ready"
    prom="Prometheus       http://$HOST:9090   (scrapes the Collector and an app on :8000)"
  else
    prom="Prometheus       not installed (Debian: apt-get install prometheus); skipped"
  fi
  cat <<MSG
The stack is up (logs in $STATE):
  Jaeger UI        http://$HOST:16686
  VictoriaLogs     http://$HOST:9428/select/vmui (query API: http://$HOST:9428/select/logsql/query)
  $prom
  OTLP in          http://$HOST:4318 (http/protobuf), $HOST:4317 (grpc)
  Collector        http://$HOST:13133 (health), http://$HOST:8888/metrics (its own), http://$HOST:8889/metrics (span metrics)
Point an app at it:
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://$HOST:4318
Stop it with: bash scripts/stack.sh down
MSG
}

down() {
  local name pid
  for name in prometheus otelcol victorialogs jaeger; do
    if running "$name"; then
      pid="$(cat "$STATE/$name.pid")"
      kill -TERM "$pid"
      for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
      alive "$pid" && kill -KILL "$pid"
      echo "stack.sh: stopped $name"
    fi
    rm -f "$STATE/$name.pid"
  done
}

status() {
  for name in "${NAMES[@]}"; do
    if running "$name"; then echo "$name: up (pid $(cat "$STATE/$name.pid"))"; else echo "$name: down"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: bash scripts/stack.sh up|down|status" >&2; exit 2 ;;
esac
