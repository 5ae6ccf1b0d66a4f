#!/usr/bin/env bash
# Edge-security overhead benchmark (issue 3): req/s of a plain proxied route against the same
# route with JWT authentication + a local rate limit checked on every request (HS256 and ES256),
# with the validation cache on (default) and off. Standalone: starts its own siger-echo and
# release siger on 127.0.0.1, pins siger to one core and wrk/echo to the other when `taskset`
# exists, and stops everything it started. Not a test: it prints figures.
#
#   load-tests/auth-bench.sh                 # 10 s per scenario, 64 connections
#   DURATION=20 CONNECTIONS=128 load-tests/auth-bench.sh
#
# Needs: wrk, openssl, python3 (token signing), cargo (builds the release binaries if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

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
  rm -rf "$work"
}
trap cleanup EXIT

pin() { # core, command...
  local core=$1; shift
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then taskset -c "$core" "$@"; else "$@"; fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

pin 1 "$ECHO" --listen 127.0.0.1:0 --name bench >"$work/echo.out" 2>/dev/null &
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
  pin 0 "$SIGER" -c "$work/$name.yaml" 2>"$work/$name.log" &
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

run() { # url [header] -> req/s
  local url=$1; shift
  pin 1 wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" >/dev/null
  pin 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$@" "$url" | tee -a "$work/wrk.txt" | awk '/Requests\/sec/ {print $2}'
}
check() { # url header -> status
  curl -s -o /dev/null -w '%{http_code}' -H "$2" "$1"
}

start_gateway cached 10000
cached_port=$port
start_gateway uncached 0
uncached_port=$port
hs=$("$SIGER" token -c "$work/cached.yaml" --sub bench --ttl 1h)
es=$(es256_token)
for p in $cached_port $uncached_port; do
  for t in "$hs" "$es"; do
    code=$(check "http://127.0.0.1:$p/jwt?fixed" "Authorization: Bearer $t")
    [ "$code" = 200 ] || { echo "token check on port $p answered $code" >&2; cat "$work"/*.log >&2; exit 1; }
  done
done

echo "siger auth benchmark: ${DURATION}s per scenario, ${CONNECTIONS} connections, 1 worker thread, $(nproc) cores"
printf '%-34s %12s %10s\n' scenario "req/s" overhead
plain=$(run "http://127.0.0.1:$cached_port/plain?fixed")
printf '%-34s %12.0f %10s\n' "plain route (public)" "$plain" "-"
row() { # label value
  printf '%-34s %12.0f %9.1f%%\n' "$1" "$2" "$(python3 -c "print((1 - $2 / $plain) * 100)")"
}
row "HS256 + rate limit, cache on" "$(run "http://127.0.0.1:$cached_port/jwt?fixed" -H "Authorization: Bearer $hs")"
row "ES256 + rate limit, cache on" "$(run "http://127.0.0.1:$cached_port/jwt?fixed" -H "Authorization: Bearer $es")"
row "HS256 + rate limit, cache off" "$(run "http://127.0.0.1:$uncached_port/jwt?fixed" -H "Authorization: Bearer $hs")"
row "ES256 + rate limit, cache off" "$(run "http://127.0.0.1:$uncached_port/jwt?fixed" -H "Authorization: Bearer $es")"
