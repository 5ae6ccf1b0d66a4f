#!/usr/bin/env bash
# Bounded soak: Siger (release) in front of a fixed-response backend for DURATION seconds
# (default 600) under wrk with keep-alive, wrk with a new connection per request, and IDLE
# (default 2000) idle keep-alive connections that the gateway's idle timeout keeps closing and
# the client keeps replacing; RSS sampled every 10 s. Passes when the last sample is ≤ 1.2 ×
# the first sample after WARMUP seconds (default 60: one idle timeout and some) and the
# gateway closed idle connections.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
IDLE=${IDLE:-2000}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-30s}
WARMUP=${WARMUP:-60}
source load-tests/lib.sh
BACKEND=$(free_port); GW=$(free_port); ADMIN=$(free_port)

./scripts/install-deps nginx wrk
cargo build --release --quiet --bin siger --example idle-conns
ulimit -n 65536 2>/dev/null || true

start_nginx_backend "$BACKEND"

cat > "$WORK/siger.yaml" <<YAML
server: {threads: 2, pid_file: $WORK/siger.pid, upgrade_sock: $WORK/siger.sock, grace_period: 0s, graceful_shutdown_timeout: 1s}
listen: ["127.0.0.1:$GW"]
admin: {listen: "127.0.0.1:$ADMIN"}
limits: {idle_timeout: $IDLE_TIMEOUT}
services:
  backend: {targets: ["127.0.0.1:$BACKEND"]}
routes:
  - {name: soak, path: /, service: backend, auth: public}
YAML
./target/release/siger -c "$WORK/siger.yaml" 2>"$WORK/siger.log" &
SIGER=$!
PIDS+=($SIGER)
wait_ready "$ADMIN"

rss() { awk '/VmRSS/ {print $2}' "/proc/$SIGER/status"; }
echo "soak: ${DURATION}s, wrk keep-alive + wrk new-connection + $IDLE idle connections (idle_timeout $IDLE_TIMEOUT)"

./target/release/examples/idle-conns "127.0.0.1:$GW" "$IDLE" "$DURATION" >"$WORK/idle.log" 2>&1 &
PIDS+=($!)
wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:$GW/" >"$WORK/wrk-keepalive.txt" 2>&1 &
PIDS+=($!)
wrk -t1 -c10 -d"${DURATION}s" -H "Connection: close" "http://127.0.0.1:$GW/" >"$WORK/wrk-close.txt" 2>&1 &
WRK_CLOSE=$!
PIDS+=($WRK_CLOSE)

SAMPLES=()
t=0
while [ "$t" -lt "$DURATION" ] && kill -0 "$WRK_CLOSE" 2>/dev/null; do
  sleep 10
  t=$((t + 10))
  s=$(rss)
  SAMPLES+=("$s")
  echo "t=${t}s rss=${s}KiB $(tail -1 "$WORK/idle.log" 2>/dev/null)"
done
wait "$WRK_CLOSE" 2>/dev/null || true
sleep 1

echo "--- wrk keep-alive";  grep -E "Requests/sec|requests in|Latency|Socket errors|Non-2xx" "$WORK/wrk-keepalive.txt" || true
echo "--- wrk new connections"; grep -E "Requests/sec|requests in|Latency|Socket errors|Non-2xx" "$WORK/wrk-close.txt" || true
echo "--- idle connections"; tail -2 "$WORK/idle.log"
warm_index=$((WARMUP / 10 - 1))
warm=${SAMPLES[$warm_index]:-${SAMPLES[0]}}
last=${SAMPLES[-1]}
echo "RSS series (KiB): ${SAMPLES[*]}"
if awk -v l="$last" -v w="$warm" 'BEGIN {exit !(l <= 1.2 * w)}'; then
  echo "PASS: last RSS ${last}KiB <= 1.2 x ${warm}KiB at t=${WARMUP}s"
else
  echo "FAIL: last RSS ${last}KiB > 1.2 x ${warm}KiB at t=${WARMUP}s"
  exit 1
fi
