#!/usr/bin/env bash
# Resilience under paced load (release build, loopback): three siger-echo backends behind one
# Siger, one of them answering 500 to everything, 1000 requests/s for DURATION seconds:
#   plain      the service without outlier detection (round robin: a third of requests fail)
#   outlier    the same backends with outlier detection (the failing one is ejected)
#   retried    outlier detection plus retry_on 500 within a 20 % budget
# then a service whose only backend fails, its circuit breaker opened, paced the same way:
# latency of the open circuit's 503s (client-side, p99).
#
#   load-tests/resilience.sh            # DURATION=20 RATE=1000
set -euo pipefail
cd "$(dirname "$0")/.."
source load-tests/lib.sh
DURATION=${DURATION:-20}
RATE=${RATE:-1000}

echo "building release binaries..." >&2
cargo build --release --quiet --bin siger --bin siger-echo --example paced
ECHO=./target/release/siger-echo
PACED=./target/release/examples/paced

declare -A BACKEND
for name in b1 b2 b3 lonely; do
  port=$(free_port)
  "$ECHO" --listen "127.0.0.1:$port" --name "$name" >/dev/null 2>&1 &
  PIDS+=($!)
  BACKEND[$name]=$port
done
for name in b1 b2 b3 lonely; do wait_port "${BACKEND[$name]}"; done
POOL="[\"127.0.0.1:${BACKEND[b1]}\", \"127.0.0.1:${BACKEND[b2]}\", \"127.0.0.1:${BACKEND[b3]}\"]"

PORT=$(free_port)
ADMIN=$(free_port)
cat > "$WORK/siger.yaml" <<YAML
server: {threads: 2, pid_file: $WORK/siger.pid, upgrade_sock: $WORK/siger.sock, grace_period: 0s}
listen: ["127.0.0.1:$PORT"]
admin: {listen: "127.0.0.1:$ADMIN"}
# The access log is on: the open circuit's answers are timed server-side from it too.
services:
  plain: {targets: $POOL, retries: 0}
  outlier:
    targets: $POOL
    retries: 0
    outlier_detection: {consecutive_failures: 5, base_ejection: 30s, max_ejected_percent: 50}
  retried:
    targets: $POOL
    retries: 2
    retry_on: [connect, 500]
    retry_budget: 20%
    outlier_detection: {consecutive_failures: 5, base_ejection: 30s, max_ejected_percent: 50}
  breaker:
    targets: ["127.0.0.1:${BACKEND[lonely]}"]
    retries: 0
    circuit_breaker: {failure_rate: 50%, min_requests: 20, window: 10s, open_for: 600s}
routes:
  - {path: /plain, service: plain, auth: public}
  - {path: /outlier, service: outlier, auth: public}
  - {path: /retried, service: retried, auth: public}
  - {path: /breaker, service: breaker, auth: public}
YAML
./target/release/siger -c "$WORK/siger.yaml" 2>"$WORK/siger.log" &
PIDS+=($!)
wait_ready "$ADMIN"

for name in b1 lonely; do
  curl -fsS -X POST "http://127.0.0.1:${BACKEND[$name]}/__control/status/500" >/dev/null
done

for route in plain outlier retried; do
  result=$("$PACED" "127.0.0.1:$PORT" "/$route/x?fixed" "$RATE" "$DURATION")
  echo "$route: $result"
done

# Open the breaker, then measure its answers.
for _ in $(seq 1 25); do curl -s -o /dev/null "http://127.0.0.1:$PORT/breaker/x"; done
state=$(curl -fsS "http://127.0.0.1:$ADMIN/metrics" | awk '/^siger_circuit_state\{service="breaker"\}/ {print $2}')
echo "breaker state after 25 failures: $state (1 = open)"
before=$(curl -fsS "http://127.0.0.1:${BACKEND[lonely]}/__control/served" | sed 's/[^0-9]//g')
result=$("$PACED" "127.0.0.1:$PORT" "/breaker/x" "$RATE" 5)
after=$(curl -fsS "http://127.0.0.1:${BACKEND[lonely]}/__control/served" | sed 's/[^0-9]//g')
echo "breaker (open): $result"
echo "requests that reached the backend while open: $((after - before))"
# Server-side time of the open circuit's 503s (the access log's duration_ms): the client's
# figure above includes the paced generator's own scheduling lateness (≈ 1 ms).
sleep 1
grep '"path":"/breaker/x"' "$WORK/siger.log" | grep '"status":503' | sed 's/.*"duration_ms":\([0-9.]*\).*/\1/' | sort -g |
  awk '{a[NR] = $1} END {if (NR) printf "breaker (open), server-side duration_ms over %d answers: p50 %.3f, p99 %.3f, max %.3f\n", NR, a[int(NR * 0.5)], a[int(NR * 0.99)], a[NR]}'
