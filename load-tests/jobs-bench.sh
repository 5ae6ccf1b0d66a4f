#!/usr/bin/env bash
# Jobs throughput: raw async-nats JetStream publish-with-ack vs POST /jobs/submit through the
# gateway, same concurrency, same nats-server, same stream (file storage, 2 min dedup window).
#
#   load-tests/jobs-bench.sh [concurrency] [seconds]      (defaults: 32 10)
#
# Env: SIGER_THREADS (gateway worker threads, default 2), BENCH_THREADS (load-generator
# threads, default 1), ACCESS_LOG (true|false, default true), SKIP_BUILD=1, BIN (binaries dir).
# Everything listens on 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

C=${1:-32}
D=${2:-10}
SIGER_THREADS=${SIGER_THREADS:-2}
BENCH_THREADS=${BENCH_THREADS:-1}
ACCESS_LOG=${ACCESS_LOG:-true}
SECRET="bench-secret-0123456789abcdef0123456789"

command -v nats-server >/dev/null || ./scripts/install-deps
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet --bin siger --bin siger-jobs-bench
fi
BIN=${BIN:-target/release}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NATS_PORT=$(free_port); HTTP_PORT=$(free_port); ADMIN_PORT=$(free_port)
TMP=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$TMP/js" -l "$TMP/nats.log" &
pids+=($!)

cat > "$TMP/siger.yaml" <<YAML
server:
  threads: $SIGER_THREADS
  pid_file: $TMP/siger.pid
  upgrade_sock: $TMP/upgrade.sock
  grace_period: 1s
  graceful_shutdown_timeout: 2s
listen: ["127.0.0.1:$HTTP_PORT"]
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
access_log: {enabled: $ACCESS_LOG}
auth:
  jwt: {algorithms: [HS256], secret: "$SECRET", issuer: siger}
nats: {url: "nats://127.0.0.1:$NATS_PORT"}
jobs:
  subject: jobs.submitted
  stream: {name: JOBS, subjects: ["jobs.>"]}
  roles: [user]
  ack_timeout: 5s
services:
  none: {targets: ["127.0.0.1:9"]}
routes:
  - {path: /other, service: none, auth: public}
YAML
RUST_LOG=warn "$BIN/siger" -c "$TMP/siger.yaml" 2> "$TMP/siger.log" &
pids+=($!)

# Ready = NATS connected and the stream created (the raw run needs it too).
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -sf "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null || { cat "$TMP/siger.log"; echo "gateway not ready" >&2; exit 1; }

common=(--concurrency "$C" --duration "$D" --threads "$BENCH_THREADS")
raw=$("$BIN/siger-jobs-bench" raw --nats "nats://127.0.0.1:$NATS_PORT" --subject jobs.submitted "${common[@]}")
http=$("$BIN/siger-jobs-bench" http --url "http://127.0.0.1:$HTTP_PORT/jobs/submit" --secret "$SECRET" --issuer siger "${common[@]}")
stored=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^siger_jobs_published_total/ {print $2}')

python3 - "$raw" "$http" "$stored" <<'PY'
import json, sys
raw, http, stored = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
print(f"concurrency {raw['concurrency']}, {raw['seconds']} s measured per run")
print(f"{'':8}{'jobs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
for name, r in (("raw", raw), ("gateway", http)):
    print(f"{name:8}{r['rate_per_s']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>8}")
ratio = http['rate_per_s'] / raw['rate_per_s'] if raw['rate_per_s'] else 0
print(f"gateway / raw = {ratio:.1%}  (target >= 80%)   gateway jobs acknowledged (incl. warm-up): {stored}")
PY
