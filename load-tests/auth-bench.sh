#!/usr/bin/env bash
# Edge-security overhead benchmark (issue 3): req/s of a plain proxied route against the same
# route with JWT authentication + a local rate limit checked on every request (HS256 and ES256),
# with the validation cache on (default) and off. Standalone: starts its own siger-echo and
# release siger on 127.0.0.1, pins siger to one core and wrk/echo to the other when `taskset`
# exists, and stops everything it started. Not a test: it prints figures.
#
#   load-tests/auth-bench.sh                 # 10 s per scenario, 64 connections
#   DURATION=20 CONNECTIONS=128 load-tests/auth-bench.sh
#   MODE=callgrind load-tests/auth-bench.sh  # instructions per request under valgrind: exact and
#                                            # immune to other load on the machine, but ~50x slower
#
# Needs: wrk, openssl, python3 (token signing), cargo (builds the release binaries if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-wrk}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
(( DURATION <= 120 )) || { echo "DURATION is capped at 120 s" >&2; exit 2; }
command -v wrk >/dev/null || ./scripts/install-deps wrk

[ -x target/release/siger ] && [ -x target/release/siger-echo ] || cargo build --release --bins
SIGER=$PWD/target/release/siger
ECHO=$PWD/target/release/siger-echo
KEYS=$PWD/tests/fixtures/jwt

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Command prefixes pinning to core 0 (siger) and core 1 (wrk, echo). Background processes are
# started directly (not through a function) so $! is the process itself and cleanup reaches it.
PIN0=() PIN1=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN0=(taskset -c 0) PIN1=(taskset -c 1); fi
if [ "$MODE" = callgrind ]; then
  command -v valgrind >/dev/null || ./scripts/install-deps valgrind
  PIN0+=(valgrind --tool=callgrind "--callgrind-out-file=$work/cg.%p" --dump-instr=no)
  CONNECTIONS=${CONNECTIONS_CALLGRIND:-8}
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

"${PIN1[@]}" "$ECHO" --listen 127.0.0.1:0 --name bench >"$work/echo.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$work/echo.out" 2>/dev/null && break; sleep 0.1; done
backend=$(sed -n 's/^listening on //p' "$work/echo.out")

secret="bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
start_gateway() { # name, cache_size -> sets $port
  local name=$1 cache=$2
  port=$(free_port); local admin; admin=$(free_port)
  cat >"$work/$name.yaml" <<YAML
server: {threads: 1, pid_file: $work/$name.pid, upgrade_sock: $work/$name.sock, grace_period: 0s, graceful_shutdown_timeout: 1s}
listen: ["127.0.0.1:$port"]
admin: {listen: "127.0.0.1:$admin"}
access_log: {enabled: false}
auth:
  jwt:
    algorithms: [HS256, ES256]
    secret: "$secret"
    public_key_file: $KEYS/ec1.pub.pem
    issuer: siger
    audience: api
    cache_size: $cache
    forward: {sub: X-User-Id}
services:
  echo: {targets: ["$backend"]}
routes:
  - {path: /plain, service: echo, auth: public}
  - {path: /jwt, service: echo, rate_limit: {requests: 1000000000, per: 1s, key: consumer}}
YAML
  "${PIN0[@]}" "$SIGER" -c "$work/$name.yaml" 2>"$work/$name.log" &
  pids+=($!)
  wait_port "$port"
}

b64url() { python3 -c 'import base64,sys; print(base64.urlsafe_b64encode(sys.stdin.buffer.read()).decode().rstrip("="))'; }
es256_token() { # ES256 with the test key ec1: openssl signs, python turns DER (r,s) into raw r||s.
  local now; now=$(date +%s)
  local h p
  h=$(printf '{"alg":"ES256","typ":"JWT"}' | b64url)
  p=$(printf '{"sub":"bench","iss":"siger","aud":"api","iat":%d,"exp":%d}' "$now" $((now + 3600)) | b64url)
  local sig
  sig=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$KEYS/ec1.key.pem" | python3 -c '
import sys, base64
der = sys.stdin.buffer.read()
def take(b, i):
    assert b[i] == 2; n = b[i+1]; return b[i+2:i+2+n], i+2+n
i = 2 if der[1] < 0x80 else 3
r, i = take(der, i); s, _ = take(der, i)
raw = r.lstrip(b"\0").rjust(32, b"\0") + s.lstrip(b"\0").rjust(32, b"\0")
print(base64.urlsafe_b64encode(raw).decode().rstrip("="))')
  printf '%s.%s.%s' "$h" "$p" "$sig"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Instructions executed by siger while one wrk run lasts (callgrind counters zeroed, then dumped).
instructions() { # pid, wrk args... -> "requests instructions"
  local pid=$1; shift
  callgrind_control -z "$pid" >/dev/null
  "${PIN1[@]}" wrk -t1 -c"$CONNECTIONS" --timeout 30s -d"${DURATION}s" "$@" >"$work/wrk.txt"
  callgrind_control -d "$pid" >/dev/null
  local dump; dump=$(ls -t "$work"/cg."$pid".* | head -1)
  echo "$(awk '/requests in/ {print $1}' "$work/wrk.txt") $(awk '/^(summary|totals):/ {print $2; exit}' "$dump")"
}
run() { # siger pid, url [wrk args] -> "req/s cpu-µs-per-request" (siger's own CPU time)
  local pid=$1 url=$2; shift 2
  "${PIN1[@]}" wrk -t1 -c"$CONNECTIONS" --timeout 30s -d"${WARMUP}s" "$@" "$url" >/dev/null
  if [ "$MODE" = callgrind ]; then
    local counts; counts=$(instructions "$pid" "$@" "$url")
    # Columns stay "throughput cost": here instructions per request, twice.
    python3 -c "r, i = map(float, '$counts'.split()); print(i / r, i / r / 1000)"
    return
  fi
  local before; before=$(cpu_ticks "$pid")
  "${PIN1[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$@" "$url" >"$work/wrk.txt"
  local after; after=$(cpu_ticks "$pid")
  local requests rps
  requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
  if grep -q "Non-2xx" "$work/wrk.txt"; then echo "non-2xx answers:" >&2; cat "$work/wrk.txt" >&2; exit 1; fi
  echo "$rps $(python3 -c "print(($after - $before) / $(getconf CLK_TCK) * 1e6 / $requests)")"
}
check() { # url header -> status
  curl -s -m 30 -o /dev/null -w '%{http_code}' -H "$2" "$1"
}

start_gateway cached 10000
cached_port=$port cached_pid=${pids[-1]}
start_gateway uncached 0
uncached_port=$port uncached_pid=${pids[-1]}
hs=$("$SIGER" token -c "$work/cached.yaml" --sub bench --ttl 1h)
es=$(es256_token)
for p in $cached_port $uncached_port; do
  for t in "$hs" "$es"; do
    code=$(check "http://127.0.0.1:$p/jwt?fixed" "Authorization: Bearer $t")
    [ "$code" = 200 ] || { echo "token check on port $p answered $code" >&2; cat "$work"/*.log >&2; exit 1; }
  done
done

# Scenarios are interleaved over ROUNDS rounds so a burst of load from elsewhere on the machine
# hits all of them alike; costs are medians of per-round ratios against that round's plain run. CPU µs per request (siger's utime + stime
# over the run / requests) is the steadier figure on a shared machine.
ROUNDS=${ROUNDS:-3}
(( ROUNDS <= 10 )) || { echo "ROUNDS is capped at 10" >&2; exit 2; }
names=("plain route (public)" "HS256 + rate limit, cache on" "ES256 + rate limit, cache on"
       "HS256 + rate limit, cache off" "ES256 + rate limit, cache off")
: >"$work/results"
for round in $(seq "$ROUNDS"); do
  echo "0 $round $(run "$cached_pid" "http://127.0.0.1:$cached_port/plain?fixed")" >>"$work/results"
  echo "1 $round $(run "$cached_pid" "http://127.0.0.1:$cached_port/jwt?fixed" -H "Authorization: Bearer $hs")" >>"$work/results"
  echo "2 $round $(run "$cached_pid" "http://127.0.0.1:$cached_port/jwt?fixed" -H "Authorization: Bearer $es")" >>"$work/results"
  echo "3 $round $(run "$uncached_pid" "http://127.0.0.1:$uncached_port/jwt?fixed" -H "Authorization: Bearer $hs")" >>"$work/results"
  echo "4 $round $(run "$uncached_pid" "http://127.0.0.1:$uncached_port/jwt?fixed" -H "Authorization: Bearer $es")" >>"$work/results"
  echo "round $round/$ROUNDS done" >&2
done

echo "siger auth benchmark: ${DURATION}s x ${ROUNDS} rounds per scenario, ${CONNECTIONS} connections, 1 worker thread (pinned), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work/results" "$MODE" "${names[@]}" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
mode = sys.argv[2]
names = sys.argv[3:]
# rows: scenario round throughput cost-per-request
val = {(int(r[0]), int(r[1])): (float(r[2]), float(r[3])) for r in rows}
rounds = sorted({k[1] for k in val})
def med(i, col):
    return statistics.median(val[(i, r)][col] for r in rounds)
def ratio(i, col):
    return statistics.median(val[(i, r)][col] / val[(0, r)][col] for r in rounds)
if mode == "callgrind":
    print(f"{'scenario':32} {'instructions/req':>17} {'cost':>9}")
    for i, name in enumerate(names):
        print(f"{name:32} {med(i, 0):17.0f} {'-' if i == 0 else f'+{(ratio(i, 0) - 1) * 100:.1f}%':>9}")
    sys.exit(0)
print(f"{'scenario':32} {'req/s (median)':>15} {'req/s cost':>11} {'CPU µs/req':>11} {'CPU cost':>9}")
for i, name in enumerate(names):
    cost = '-' if i == 0 else f"{(1 - ratio(i, 0)) * 100:.1f}%"
    ccost = '-' if i == 0 else f"{(ratio(i, 1) - 1) * 100:+.1f}%"
    print(f"{name:32} {med(i, 0):15.0f} {cost:>11} {med(i, 1):11.1f} {ccost:>9}")
PY
