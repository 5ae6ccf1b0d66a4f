#!/usr/bin/env bash
# Hostile load (issue 18): a normal client measured by wrk while SLOW slowloris connections
# (one head byte every 500 ms) and IDLE silent keep-alive connections press on a gateway with
# `limits.max_connections: 4096`. First wrk alone (the unattacked baseline), then wrk during
# the attack for DURATION seconds; every wrk run is 30 s. Reports the normal client's req/s and
# errors in both, the ratio, what the gateway did to the attackers (408s, evictions, refusals)
# and Siger's peak RSS, sampled every second.
#
# As in bench.sh, the gateway runs alone on CPU 1 and everything else (wrk, the backend, the
# attackers) on CPU 0, the attackers at a lower priority than wrk: the figure is what the
# gateway itself keeps for normal clients while it handles the attack; on a real edge the
# attackers do not run on the gateway's machine. PIN=0 runs all processes unpinned on both
# cores (the attack client then takes CPU from the gateway and wrk alike).
#
# Attackers re-open a closed or refused connection REOPEN ms later (default 1000: a connection
# flood on top of the slow heads; slowloris tools re-open once per round, e.g. REOPEN=15000).
# The unattacked figure is the median of BASE_RUNS wrk runs (this VM's run-to-run spread is
# ±10 %). GATEWAY=nginx puts nginx in Siger's place, configured alike (one worker, room for
# MAX client connections, client_header_timeout 10s, keepalive_timeout 60s, upstream
# keep-alive): the same attack against the reference edge.
#
#   load-tests/slow-clients.sh   # SLOW=5000 IDLE=2000 DURATION=600 CONNS=32 PIN=1 REOPEN=1000 BASE_RUNS=3 GATEWAY=siger
set -euo pipefail
cd "$(dirname "$0")/.."
source load-tests/lib.sh
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
SLOW=${SLOW:-5000}
IDLE=${IDLE:-2000}
DURATION=${DURATION:-600}
CONNS=${CONNS:-32}
MAX=${MAX:-4096}
PIN=${PIN:-1}
REOPEN=${REOPEN:-1000}
BASE_RUNS=${BASE_RUNS:-3}
GATEWAY=${GATEWAY:-siger}
case "$GATEWAY" in siger | nginx) ;; *) echo "GATEWAY must be siger or nginx" >&2; exit 1 ;; esac
CPU0=() CPU1=()
if [ "$PIN" = 1 ]; then CPU0=(taskset -c 0) CPU1=(taskset -c 1); fi

./scripts/install-deps nginx wrk
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building release binaries..." >&2
  cargo build --release --quiet --bin siger --example slow-clients
fi

BACKEND=$(free_port)
if [ "$PIN" = 1 ]; then start_nginx_backend "$BACKEND" 0; else start_nginx_backend "$BACKEND"; fi
wait_port "$BACKEND"
PORT=$(free_port)
if [ "$GATEWAY" = siger ]; then
  ADMIN=$(free_port)
  cat > "$WORK/siger.yaml" <<YAML
server: {threads: 1, pid_file: $WORK/s.pid, upgrade_sock: $WORK/s.sock, grace_period: 0s, graceful_shutdown_timeout: 1s}
listen: ["127.0.0.1:$PORT"]
admin: {listen: "127.0.0.1:$ADMIN"}
access_log: {enabled: false}
limits: {max_connections: $MAX, header_timeout: 10s, idle_timeout: 60s}
services:
  backend: {targets: ["127.0.0.1:$BACKEND"]}
routes:
  - {path: /, service: backend, auth: public}
YAML
  "${CPU1[@]}" ./target/release/siger -c "$WORK/siger.yaml" 2>"$WORK/siger.log" &
  GW=$!
  PIDS+=("$GW")
  wait_ready "$ADMIN"
else
  # worker_connections counts upstream connections too: room for MAX clients and the
  # upstream keep-alive pool.
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" <<NGX
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections $((MAX + 64)); }
http {
  access_log off;
  client_header_timeout 10s;
  keepalive_timeout 60s;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$PORT;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
  "${CPU1[@]}" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
  PIDS+=($!)
  wait_port "$PORT"
  GW=$(pgrep -P "${PIDS[-1]}" | head -1) # the worker
fi

peak_rss() { awk '/^VmHWM:/ {print $2}' "/proc/$GW/status"; }
metric() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
open_connections() {
  if [ "$GATEWAY" = siger ]; then metric siger_connections_open; else
    ss -Htn state established "( sport = :$PORT )" | wc -l
  fi
}

wrk_run() { # label
  "${CPU0[@]}" wrk -t1 -c"$CONNS" -d30s "http://127.0.0.1:$PORT/" > "$WORK/wrk-$1.txt"
  local rps errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk-$1.txt")
  errors=$(awk '/Socket errors|Non-2xx/ {print}' "$WORK/wrk-$1.txt" | tr '\n' ' ')
  echo "$1: ${rps} req/s ${errors:-0 errors}" >&2
  echo "$rps"
}

echo "rss before any load: $(peak_rss) KiB" >&2
BASES=()
for i in $(seq "$BASE_RUNS"); do BASES+=("$(wrk_run "unattacked-$i")"); done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
BASE=$(median "${BASES[@]}")
END=$(( $(date +%s) + DURATION ))
"${CPU0[@]}" nice -n 10 ./target/release/examples/slow-clients "127.0.0.1:$PORT" "$SLOW" "$IDLE" "$DURATION" 500 "$REOPEN" > "$WORK/attack.log" 2>&1 &
ATTACK=$!
PIDS+=("$ATTACK")
# Let the attackers connect (about 500 per second), then measure the normal client in turns.
sleep $(( (SLOW + IDLE) / 500 + 5 ))
RATES=()
while kill -0 "$ATTACK" 2>/dev/null && [ $(( $(date +%s) + 35 )) -lt "$END" ]; do
  RATES+=("$(wrk_run "attacked-${#RATES[@]}")")
  echo "  open client connections $(open_connections), peak RSS $(peak_rss) KiB" >&2
done
wait "$ATTACK" || true
tail -n 3 "$WORK/attack.log"
MEDIAN=$(median "${RATES[@]}")
MIN=$(printf '%s\n' "${RATES[@]}" | sort -n | head -1)
echo "$GATEWAY: normal client unattacked $BASE req/s (median of ${#BASES[@]}); under attack median $MEDIAN, lowest $MIN req/s over ${#RATES[@]} runs"
awk -v b="$BASE" -v m="$MEDIAN" -v l="$MIN" 'BEGIN {printf "ratio under attack: median %.2f, lowest %.2f of unattacked\n", m / b, l / b}'
if [ "$GATEWAY" = siger ]; then
  for series in siger_connections_evicted_total 'siger_connections_refused_total{reason="max_connections"}' \
    'siger_request_timeouts_total{phase="header"}'; do
    echo "$series $(metric "$series")"
  done
else
  echo "nginx error log: $(grep -c "worker_connections are not enough" "$WORK/nginx/error.log") lines \"worker_connections are not enough\""
fi
echo "$GATEWAY peak RSS: $(peak_rss) KiB (max_connections $MAX)"
grep -h "Socket errors\|Non-2xx" "$WORK"/wrk-*.txt || echo "wrk: 0 socket errors, 0 non-2xx in every run"
