#!/usr/bin/env bash
# Jobs throughput: raw async-nats JetStream publish-with-ack vs POST /jobs/submit through the
# gateway, same concurrency, same nats-server, same stream (file storage, 2 min dedup window).
#
#   load-tests/jobs-bench.sh [concurrency] [seconds]      (defaults: 32 10)
#
# Env: SIGER_THREADS (gateway worker threads, default 2; 1 with PIN, one per core it gets), BENCH_THREADS (load-generator
# threads, default 1), ACCESS_LOG (true|false, default true), SKIP_BUILD=1, BIN (binaries dir),
# PIN=1 (taskset: nats-server and the load generator share CPU 0, the gateway gets CPU 1 —
# the gateway on its own core, as in production, instead of all three fighting over two).
# Everything listens on 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

C=${1:-32}
D=${2:-10}
if [ -n "${PIN:-}" ]; then SIGER_THREADS=${SIGER_THREADS:-1}; else SIGER_THREADS=${SIGER_THREADS:-2}; fi
BENCH_THREADS=${BENCH_THREADS:-1}
ACCESS_LOG=${ACCESS_LOG:-true}
PIN_SHARED=(); PIN_GATEWAY=()
if [ -n "${PIN:-}" ]; then PIN_SHARED=(taskset -c 0); PIN_GATEWAY=(taskset -c 1); fi
SECRET="bench-secret-0123456789abcdef0123456789"

command -v nats-server >/dev/null || ./scripts/install-deps
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet --bin siger --bin siger-jobs-bench
fi
BIN=${BIN:-target/release}

source load-tests/lib.sh
NATS_PORT=$(free_port); HTTP_PORT=$(free_port); ADMIN_PORT=$(free_port)
TMP=$WORK

${PIN_SHARED[@]+"${PIN_SHARED[@]}"} nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$TMP/js" -l "$TMP/nats.log" &
PIDS+=($!)

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
RUST_LOG=warn ${PIN_GATEWAY[@]+"${PIN_GATEWAY[@]}"} "$BIN/siger" -c "$TMP/siger.yaml" 2> "$TMP/siger.log" &
PIDS+=($!)

# Ready = NATS connected and the stream created (the raw run needs it too).
wait_ready "$ADMIN_PORT"

# CPU seconds (utime + stime) a process has used; sampled around each run.
TCK=$(getconf CLK_TCK)
cpu() { awk -v t="$TCK" '{ sub(/.*\) /, ""); print ($12 + $13) / t }' "/proc/$1/stat"; }
NATS_PID=${PIDS[0]}; SIGER_PID=${PIDS[1]}

common=(--concurrency "$C" --duration "$D" --threads "$BENCH_THREADS")
n0=$(cpu "$NATS_PID"); g0=$(cpu "$SIGER_PID")
raw=$(${PIN_SHARED[@]+"${PIN_SHARED[@]}"} "$BIN/siger-jobs-bench" raw --nats "nats://127.0.0.1:$NATS_PORT" --subject jobs.submitted "${common[@]}")
n1=$(cpu "$NATS_PID"); g1=$(cpu "$SIGER_PID")
http=$(${PIN_SHARED[@]+"${PIN_SHARED[@]}"} "$BIN/siger-jobs-bench" http --url "http://127.0.0.1:$HTTP_PORT/jobs/submit" --secret "$SECRET" --issuer siger "${common[@]}")
n2=$(cpu "$NATS_PID"); g2=$(cpu "$SIGER_PID")

python3 - "$raw" "$http" "$n0 $n1 $n2" "$g0 $g1 $g2" <<'PY'
import json, sys
raw, http = json.loads(sys.argv[1]), json.loads(sys.argv[2])
n = [float(x) for x in sys.argv[3].split()]
g = [float(x) for x in sys.argv[4].split()]
cpu = {  # CPU microseconds per acknowledged job, warm-up included
    "raw": (raw["client_cpu_s"], n[1] - n[0], g[1] - g[0], raw["total_ok"]),
    "gateway": (http["client_cpu_s"], n[2] - n[1], g[2] - g[1], http["total_ok"]),
}
print(f"concurrency {raw['concurrency']}, {raw['seconds']} s measured per run (after a warm-up)")
print(f"{'':8}{'jobs/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}   CPU us/job: {'client':>7}{'nats':>7}{'siger':>7}")
for name, r in (("raw", raw), ("gateway", http)):
    c, ns, gs, total = cpu[name]
    per = lambda s: s / total * 1e6 if total else 0
    print(f"{name:8}{r['rate_per_s']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}"
          f"   {'':12}{per(c):>7.1f}{per(ns):>7.1f}{per(gs):>7.1f}")
ratio = http["rate_per_s"] / raw["rate_per_s"] if raw["rate_per_s"] else 0
print(f"gateway / raw = {ratio:.1%}  (target >= 80%)")
PY
