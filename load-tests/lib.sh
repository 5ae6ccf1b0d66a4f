# shellcheck shell=bash
# Shared by the load-test scripts: process bookkeeping (everything started is stopped by PID on
# exit), ports, readiness, CPU accounting and a fixed-response nginx backend. Loopback only.

PIDS=()
WORK=$(mktemp -d -t siger-load.XXXXXX)
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nothing listens on now (the bind happens later, so collisions are only unlikely).
# Picked below the kernel's ephemeral range: after a run that opened millions of client
# connections, ports in that range can still be held by TIME_WAIT sockets and fail to bind.
free_port() {
  local p low
  low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  for p in $(shuf -i "10000-$((low - 1))" -n 200); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "no free port found" >&2
  return 1
}

wait_port() {
  local _
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "port $1 never opened" >&2
  exit 1
}

# Wait for Siger's admin /ready (200) on port $1.
wait_ready() {
  local _
  for _ in $(seq 1 200); do
    if curl -fsS "http://127.0.0.1:$1/ready" >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "siger (admin port $1) never became ready; /ready says: $(curl -sS "http://127.0.0.1:$1/ready" 2>&1)" >&2
  tail -n 20 "$WORK"/siger*.log >&2 2>/dev/null || true
  exit 1
}

# utime+stime in clock ticks, summed over the given PIDs (all threads included).
cpu_ticks() { stat_ticks '$12 + $13' "$@"; }
# stime alone (time in the kernel), the same way.
sys_ticks() { stat_ticks '$13' "$@"; }
stat_ticks() { # awk expression over /proc/PID/stat's fields after the command name, PIDs…
  local expr=$1 total=0 pid
  shift
  for pid in "$@"; do
    if [ -r "/proc/$pid/stat" ]; then
      total=$((total + $(awk "{ sub(/.*\\) /, \"\"); print $expr }" "/proc/$pid/stat")))
    fi
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

# Fixed-response backend: nginx `return 200 "ok"`, one worker. Args: port [cpu].
# Call directly (not in $(…)) so the PID lands in PIDS.
start_nginx_backend() {
  local port=$1 cpu=${2:-}
  mkdir -p "$WORK/backend-$port"
  cat > "$WORK/backend-$port/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $WORK/backend-$port/nginx.pid;
error_log $WORK/backend-$port/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$port;
    keepalive_requests 1000000;
    location / { return 200 "ok\n"; }
    # The JSON a transcoded GetOrder answers (instructions.sh: siger-json vs siger-grpc).
    location = /shop.v1.Orders/GetOrder { default_type application/json; return 200 '{"id":"42","shop":"s1","status":"PENDING"}'; }
    # 10 KiB of JSON for compression benchmarks (gzip, br, zstd).
    location = /json10k { default_type application/json; alias $WORK/backend-$port/10k.json; }
    # A 2 KiB JSON object (an order with items) for body transformation (instructions.sh:
    # siger-transform vs siger-json2k).
    location = /json2k { default_type application/json; alias $WORK/backend-$port/2k.json; }
  }
}
NGX
  # An order: a few top-level fields, items until about 2 KiB, and fields a filter drops.
  awk 'BEGIN { srand(11); printf "{\"id\":\"ord-42\",\"status\":\"PENDING\",\"created_at\":\"2026-12-07T00:00:00Z\",\"internal\":{\"shard\":7,\"trace\":\"abc\"},\"items\":["; n = 140
    for (i = 0; n < 2040; i++) {
      r = sprintf("%s{\"id\":%d,\"name\":\"item-%06d\",\"price\":%.2f,\"qty\":%d}", i ? "," : "", i, int(rand() * 1e6), rand() * 100, 1 + int(rand() * 5))
      printf "%s", r; n += length(r) }
    printf "],\"debug\":\"%s\"}", "x" }' > "$WORK/backend-$port/2k.json"
  # Records with varied ids, names and amounts: about as compressible as an API's JSON.
  awk 'BEGIN { srand(7); printf "["; n = 0
    while (n < 10240 - 120) {
      r = sprintf("%s{\"id\":%d,\"name\":\"user-%06d\",\"email\":\"u%d@example.com\",\"balance\":%.2f,\"active\":%s}",
        n ? "," : "", n, int(rand() * 1e6), int(rand() * 1e5), rand() * 1e4, rand() < 0.5 ? "true" : "false")
      printf "%s", r; n += length(r) }
    printf "]" }' > "$WORK/backend-$port/10k.json"
  # nginx workers run as nobody: the file must be readable through mktemp's 0700 directory.
  chmod 755 "$WORK" "$WORK/backend-$port"
  chmod 644 "$WORK/backend-$port/10k.json" "$WORK/backend-$port/2k.json"
  if [ -n "$cpu" ]; then
    taskset -c "$cpu" nginx -p "$WORK/backend-$port" -c "$WORK/backend-$port/nginx.conf" &
  else
    nginx -p "$WORK/backend-$port" -c "$WORK/backend-$port/nginx.conf" &
  fi
  PIDS+=($!)
}
