#!/usr/bin/env bash
# Live configuration under measurement (ARCHITECTURE §7.1): a release Siger in front of a
# fixed-response nginx backend.
#
#   1. Reload latency, 20 times each way: file written → first request answered by the route
#      the new file adds (server.watch_config), and SIGHUP sent → the same. Median and max.
#   2. Latency under reloads: wrk (keep-alive) for DURATION seconds of steady state, then the
#      same while the config is swapped between two versions every 1.5 s; p50/p99 side by side,
#      and any non-2xx or socket error (there must be none).
#
#   load-tests/reload.sh                     # DURATION=30 CONNS=32
set -euo pipefail
cd "$(dirname "$0")/.."
source load-tests/lib.sh

DURATION=${DURATION:-30}
CONNS=${CONNS:-32}
SIGER_BIN=${SIGER_BIN:-./target/release/siger}

./scripts/install-deps nginx wrk
for tool in taskset nginx wrk curl python3; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
echo "building the release binary..." >&2
cargo build --release --quiet --bin siger

BACKEND=$(free_port)
start_nginx_backend "$BACKEND" 0
PORT=$(free_port)
ADMIN=$(free_port)
CONF="$WORK/siger.yaml"

# Version $1 of the config: route /v$1 added, and the / route's limit alternating so the limit
# tables are re-planned on every reload.
write_config() {
  local v=$1 tmp="$WORK/.siger.yaml.tmp"
  cat > "$tmp" <<YAML
server: {threads: 1, pid_file: $WORK/siger.pid, upgrade_sock: $WORK/siger.sock, grace_period: 0s, graceful_shutdown_timeout: 1s, watch_config: ${WATCH:-true}}
listen: ["127.0.0.1:$PORT"]
admin: {listen: "127.0.0.1:$ADMIN"}
access_log: {enabled: false}
services:
  backend: {targets: ["127.0.0.1:$BACKEND"]}
  other: {targets: ["127.0.0.1:$BACKEND"], lb: least_conn}
routes:
  - {path: /, service: backend, auth: public, rate_limit: {requests: $((100000000 + v % 2)), per: 1m, key: ip}}
  - {path: /v$v, service: other, auth: public}
YAML
  mv "$tmp" "$CONF"
}

write_config 0
taskset -c 1 "$SIGER_BIN" -c "$CONF" 2>"$WORK/siger.log" &
PIDS+=($!)
SIGER=$!
wait_port "$PORT"
wait_ready "$ADMIN"

# Milliseconds from now until GET /v$1 answers 200 (polled back to back, 10 s at most).
until_answered() {
  python3 - "$PORT" "$1" <<'PY'
import socket, sys, time
port, v = int(sys.argv[1]), sys.argv[2]
start = time.monotonic()
while time.monotonic() - start < 10:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /v{v} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
    status = s.recv(12)[9:12]
    s.close()
    if status == b"200":
        print(f"{(time.monotonic() - start) * 1000:.1f}")
        sys.exit(0)
print("timeout")
PY
}

stats() { sort -g | awk '{a[NR]=$1} END {printf "median %.1f ms, max %.1f ms (n=%d)", a[int((NR+1)/2)], a[NR], NR}'; }

echo "reload latency with watch_config (file write → new route answers)..." >&2
watch_ms=()
for v in $(seq 1 20); do
  write_config "$v"
  watch_ms+=("$(until_answered "$v")")
  sleep 0.3
done

echo "reload latency with SIGHUP (signal → new route answers)..." >&2
WATCH=false write_config 100
sleep 1.5
hup_ms=()
for v in $(seq 101 120); do
  WATCH=false write_config "$v"
  kill -HUP "$SIGER"
  hup_ms+=("$(until_answered "$v")")
done

to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000; printf "%.3f", n }'
}
wrk_once() {
  taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$PORT/"
}
summary() {
  local out=$1
  printf "%s req/s, p50 %s ms, p99 %s ms, errors: %s" \
    "$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")" \
    "$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")" \
    "$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")" \
    "$(awk '/Non-2xx|Socket errors/ {printf "%s; ", $0}' <<<"$out" | sed 's/; $//' || true)"
}

echo "steady state, ${DURATION}s..." >&2
WATCH=false write_config 0
kill -HUP "$SIGER"
sleep 1
steady=$(wrk_once)

echo "the same while reloading every 1.5 s..." >&2
(
  v=0
  end=$((SECONDS + DURATION))
  while [ "$SECONDS" -lt "$end" ]; do
    sleep 1.5
    v=$((v + 1))
    WATCH=false write_config "$v"
    curl -fsS -X POST -H "Content-Type: application/json" "http://127.0.0.1:$ADMIN/config/reload" >/dev/null
  done
) &
RELOADER=$!
during=$(wrk_once)
wait "$RELOADER"
generation=$(curl -fsS "http://127.0.0.1:$ADMIN/config" | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])')
failed=$(curl -fsS "http://127.0.0.1:$ADMIN/metrics" | awk '/^siger_config_reloads_total\{result="failed"\}/ {print $2}')

echo
echo "reload latency, watch_config: $(printf '%s\n' "${watch_ms[@]}" | stats)"
echo "reload latency, SIGHUP:       $(printf '%s\n' "${hup_ms[@]}" | stats)"
echo "steady:          $(summary "$steady")"
echo "during reloads:  $(summary "$during")"
echo "generation at the end: $generation; failed reloads: ${failed:-0}"
