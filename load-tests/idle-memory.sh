#!/usr/bin/env bash
# Memory per idle keep-alive connection (release build), nginx beside in the same run: each
# server alone behind a fixed-response nginx backend, COUNT connections opened by
# `idle-conns` (one request each, then silent), RSS before and after (all processes of the
# server), the difference divided by COUNT. Siger is measured with `limits.read_buffer` at its
# default (4 KiB) and at Pingora's 64 KiB, and with each, 256 MiB uploaded and downloaded
# through it (curl, to and from a siger-echo backend) to show large bodies keep their speed.
#
#   load-tests/idle-memory.sh                  # COUNT=3000 HOLD=15 BUFFERS="4KiB 64KiB"
set -euo pipefail
cd "$(dirname "$0")/.."
source load-tests/lib.sh
# Thousands of sockets on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
COUNT=${COUNT:-3000}
HOLD=${HOLD:-15}

./scripts/install-deps nginx
echo "building release binaries..." >&2
cargo build --release --quiet --bin siger --bin siger-echo --example idle-conns

BACKEND=$(free_port)
start_nginx_backend "$BACKEND"
wait_port "$BACKEND"
ECHO_PORT=$(free_port)
./target/release/siger-echo --listen "127.0.0.1:$ECHO_PORT" --name big >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$ECHO_PORT"
head -c $((256 << 20)) /dev/zero > "$WORK/256m"

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

for buffer in ${BUFFERS:-4KiB 64KiB}; do
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
  big: {targets: ["127.0.0.1:$ECHO_PORT"], read_timeout: 60s}
routes:
  - {path: /, service: backend, auth: public}
  - {path: /big, service: big, auth: public, strip_prefix: true, max_body: 512MiB}
YAML
  ./target/release/siger -c "$WORK/siger-$buffer.yaml" 2>/dev/null &
  PIDS+=($!)
  pid=$!
  wait_ready "$admin"
  measure "siger read_buffer $buffer" "$port" "$pid"
  for round in 1 2 3; do
    up=$(curl -s -o /dev/null -w '%{speed_upload}' -T "$WORK/256m" -X POST "http://127.0.0.1:$port/big/upload")
    down=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$port/big/bytes/$((256 << 20))")
    awk -v b="$buffer" -v r="$round" -v u="$up" -v d="$down" \
      'BEGIN {printf "siger read_buffer %-6s round %d: 256 MiB upload %7.1f MiB/s, download %7.1f MiB/s\n", b, r, u / 1048576, d / 1048576}'
  done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
