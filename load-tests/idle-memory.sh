#!/usr/bin/env bash
# Memory per idle keep-alive connection (release build), nginx beside in the same run: each
# server alone behind a fixed-response nginx backend, COUNT connections opened by
# `idle-conns` (one request each, then silent), RSS before and after (all processes of the
# server), the difference divided by COUNT. Siger is measured with `limits.read_buffer` at its
# default (4 KiB) and at Pingora's 64 KiB.
#
#   load-tests/idle-memory.sh                  # COUNT=3000 HOLD=15
set -euo pipefail
cd "$(dirname "$0")/.."
source load-tests/lib.sh
# Thousands of sockets on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
COUNT=${COUNT:-3000}
HOLD=${HOLD:-15}

./scripts/install-deps nginx
echo "building release binaries..." >&2
cargo build --release --quiet --bin siger --example idle-conns

BACKEND=$(free_port)
start_nginx_backend "$BACKEND"
wait_port "$BACKEND"

rss_kib() { # pids…
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
  done
  echo "$total"
}

measure() { # name port pids…
  local name=$1 port=$2
  shift 2
  local before after
  ./target/release/examples/idle-conns "127.0.0.1:$port" 50 1 >/dev/null
  sleep 1
  before=$(rss_kib "$@")
  ./target/release/examples/idle-conns "127.0.0.1:$port" "$COUNT" "$HOLD" >"$WORK/idle-$name.log" 2>&1 &
  local client=$!
  sleep $((HOLD / 2 + 2))
  after=$(rss_kib "$@")
  wait "$client" || true
  awk -v n="$name" -v b="$before" -v a="$after" -v c="$COUNT" \
    'BEGIN {printf "%-22s RSS %7.1f MiB -> %7.1f MiB: %6.1f KiB per idle connection (%s)\n", n, b / 1024, a / 1024, (a - b) / c, c}'
}

# nginx as the proxy, one worker, as in bench.sh.
NGINX_PORT=$(free_port)
mkdir -p "$WORK/proxy"
cat > "$WORK/proxy/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $WORK/proxy/nginx.pid;
error_log $WORK/proxy/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_timeout 120s;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
nginx -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf" &
PIDS+=($!)
NGINX=$!
wait_port "$NGINX_PORT"
measure nginx "$NGINX_PORT" "$NGINX" $(pgrep -P "$NGINX")

for buffer in 4KiB 64KiB; do
  port=$(free_port)
  admin=$(free_port)
  cat > "$WORK/siger-$buffer.yaml" <<YAML
server: {threads: 1, pid_file: $WORK/s-$buffer.pid, upgrade_sock: $WORK/s-$buffer.sock, grace_period: 0s, graceful_shutdown_timeout: 1s}
listen: ["127.0.0.1:$port"]
admin: {listen: "127.0.0.1:$admin"}
access_log: {enabled: false}
limits: {read_buffer: $buffer, idle_timeout: 120s}
services:
  backend: {targets: ["127.0.0.1:$BACKEND"]}
routes:
  - {path: /, service: backend, auth: public}
YAML
  ./target/release/siger -c "$WORK/siger-$buffer.yaml" 2>/dev/null &
  PIDS+=($!)
  pid=$!
  wait_ready "$admin"
  measure "siger read_buffer $buffer" "$port" "$pid"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
