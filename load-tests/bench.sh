#!/usr/bin/env bash
# Core proxy benchmark: wrk against a fixed-response backend directly, and through nginx,
# a bare Pingora proxy and Siger, each proxy pinned alone on CPU 1 with one worker, wrk and the
# backend pinned on CPU 0. Targets alternate over ROUNDS rounds; medians and ratios are printed.
#
# The figure that ranks proxies here is CPU-µs per request (utime+stime of the proxy's
# processes from /proc, divided by requests completed): wrk + backend saturate CPU 0 first, so
# req/s mostly measures them.
#
#   load-tests/bench.sh                 # defaults: DURATION=10 CONNS=64 ROUNDS=3
#   DURATION=20 ROUNDS=5 load-tests/bench.sh
#   SIGER_CONFIG_EXTRA=path.yaml ...    # extra YAML appended to Siger's bench config
#   SIGER_SERVER_EXTRA="work_stealing: false" ...   # extra keys in Siger's server: section
#   SIGER_BIN=/path/to/siger ...        # compare another build (e.g. --no-default-features)
#
# Everything listens on 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-19100}
TARGETS=${TARGETS:-"direct nginx bare-pingora siger"}
BACKEND_PORT=$((BASE_PORT + 1))
declare -A PORT=([direct]=$BACKEND_PORT [nginx]=$((BASE_PORT + 2)) [bare-pingora]=$((BASE_PORT + 3)) [siger]=$((BASE_PORT + 4)))
ADMIN_PORT=$((BASE_PORT + 5))

./scripts/install-deps nginx wrk
for tool in taskset nginx wrk; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done

SIGER_BIN=${SIGER_BIN:-./target/release/siger}   # e.g. a build with other features
echo "building release binaries..." >&2
cargo build --release --quiet --bin siger --example bare-pingora

WORK=$(mktemp -d /tmp/siger-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "port $1 never opened" >&2
  exit 1
}

# Fixed-response backend: nginx `return 200`, one worker on CPU 0.
mkdir -p "$WORK/backend" "$WORK/nginx"
cat > "$WORK/backend/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$BACKEND_PORT;
    keepalive_requests 1000000;
    location / { return 200 "ok\n"; }
  }
}
NGX
taskset -c 0 nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" &
PIDS+=($!)

# nginx as a proxy: one worker, upstream keep-alive.
cat > "$WORK/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:${PORT[nginx]};
    keepalive_requests 1000000;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGX
taskset -c 1 nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=($NGINX_PID)

taskset -c 1 ./target/release/examples/bare-pingora "127.0.0.1:${PORT[bare-pingora]}" "127.0.0.1:$BACKEND_PORT" 1 2>"$WORK/bare.log" &
BARE_PID=$!
PIDS+=($BARE_PID)

# Siger: one worker, a proxied route with routing, request ids, forwarded headers, access log
# (to a file) and metrics — everything a production request pays for.
cat > "$WORK/siger.yaml" <<YAML
server: {threads: 1, pid_file: $WORK/siger.pid, upgrade_sock: $WORK/siger.sock, grace_period: 0s, graceful_shutdown_timeout: 1s${SIGER_SERVER_EXTRA:+, $SIGER_SERVER_EXTRA}}
listen: ["127.0.0.1:${PORT[siger]}"]
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
limits: {idle_timeout: 60s}
services:
  backend: {targets: ["127.0.0.1:$BACKEND_PORT"], lb: round_robin}
routes:
  - {name: bench, path: /, service: backend, auth: public}
YAML
if [ -n "${SIGER_CONFIG_EXTRA:-}" ]; then cat "$SIGER_CONFIG_EXTRA" >> "$WORK/siger.yaml"; fi
taskset -c 1 "$SIGER_BIN" -c "$WORK/siger.yaml" 2>"$WORK/siger.log" &
SIGER_PID=$!
PIDS+=($SIGER_PID)

for p in "${PORT[@]}"; do wait_port "$p"; done
sleep 0.5
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')

proxy_pids() {
  case $1 in
    nginx) echo "$NGINX_PID $NGINX_WORKERS" ;;
    bare-pingora) echo "$BARE_PID" ;;
    siger) echo "$SIGER_PID" ;;
    *) echo "" ;;
  esac
}

# utime+stime in clock ticks, summed over the given PIDs (all threads included).
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    if [ -r "/proc/$pid/stat" ]; then
      total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    fi
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

# Latency figure in ms from a wrk value like 512.00us / 1.23ms / 2.00s.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000
    printf "%.3f", n }'
}

declare -A RPS P50 P99 CPU ERRS
run_one() {
  local target=$1 round=$2 port=${PORT[$1]} out pids before after reqs
  pids=$(proxy_pids "$target")
  before=$(cpu_ticks $pids)
  out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
  after=$(cpu_ticks $pids)
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  RPS[$target,$round]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  P50[$target,$round]=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  P99[$target,$round]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  ERRS[$target,$round]=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' <<<"$out")
  if [ -n "$pids" ] && [ "$reqs" -gt 0 ]; then
    CPU[$target,$round]=$(awk -v t=$((after - before)) -v hz="$HZ" -v r="$reqs" 'BEGIN {printf "%.2f", t * 1e6 / hz / r}')
  else
    CPU[$target,$round]="-"
  fi
  printf "round %d %-13s %8s req/s  p50 %7s ms  p99 %7s ms  cpu %6s us/req %s\n" "$round" "$target" \
    "${RPS[$target,$round]}" "${P50[$target,$round]}" "${P99[$target,$round]}" "${CPU[$target,$round]}" "${ERRS[$target,$round]}" >&2
}

median() { tr ' ' '\n' | grep -v '^-*$' | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print a[int((NR + 1) / 2)]}'; }

read -r -a TLIST <<<"$TARGETS"
echo "warm-up..." >&2
for t in "${TLIST[@]}"; do taskset -c 0 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:${PORT[$t]}/" >/dev/null; done

for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round so drift on a shared machine does not favour one target.
  n=${#TLIST[@]}
  for i in $(seq 0 $((n - 1))); do
    run_one "${TLIST[$(((i + round - 1) % n))]}" "$round"
  done
done

declare -A M_RPS M_P50 M_P99 M_CPU
for t in "${TLIST[@]}"; do
  M_RPS[$t]=$(for r in $(seq 1 "$ROUNDS"); do printf "%s " "${RPS[$t,$r]}"; done | median)
  M_P50[$t]=$(for r in $(seq 1 "$ROUNDS"); do printf "%s " "${P50[$t,$r]}"; done | median)
  M_P99[$t]=$(for r in $(seq 1 "$ROUNDS"); do printf "%s " "${P99[$t,$r]}"; done | median)
  M_CPU[$t]=$(for r in $(seq 1 "$ROUNDS"); do printf "%s " "${CPU[$t,$r]}"; done | median)
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2fx", a / b }'; }
echo
echo "medians of $ROUNDS rounds, ${DURATION}s each, $CONNS connections (proxy alone on CPU 1, wrk + backend on CPU 0)"
printf "%-13s %10s %9s %9s %12s %10s %10s\n" target req/s p50_ms p99_ms cpu_us/req vs_nginx vs_bare
for t in "${TLIST[@]}"; do
  printf "%-13s %10s %9s %9s %12s %10s %10s\n" "$t" "${M_RPS[$t]}" "${M_P50[$t]}" "${M_P99[$t]}" "${M_CPU[$t]}" \
    "$(ratio "${M_CPU[$t]}" "${M_CPU[nginx]:--}")" "$(ratio "${M_CPU[$t]}" "${M_CPU[bare-pingora]:--}")"
done
lines=$(grep -c '"request_id"' "$WORK/siger.log" || true)
echo "siger access-log lines written: $lines"
