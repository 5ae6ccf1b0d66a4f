#!/usr/bin/env bash
# Core proxy benchmark: wrk against a fixed-response backend directly, and through nginx, HAProxy,
# a bare Pingora proxy and Siger, each proxy pinned alone on CPU 1 with one worker, wrk and the backend
# pinned on CPU 0. Targets alternate over ROUNDS rounds; medians and ratios are printed.
#
# Siger runs three ways: `siger` (a public route: routing, request ids, forwarded headers, access
# log, metrics), `siger-hs256` and `siger-es256` (the same plus JWT verification and a local rate
# limit on every request; the validation cache on). `siger-resilient` (name it in TARGETS, or
# SUITE=resilience) is `siger` with outlier detection, a circuit breaker, retry_on and a retry
# budget on its service: what those cost when nothing fails.
#
# The figure that ranks proxies is CPU-µs per request (utime+stime of the proxy's processes from
# /proc, divided by requests completed): wrk + backend can saturate CPU 0 first, and then req/s
# measures them rather than the proxy. `kernel_us` is the stime part of it.
#
#   load-tests/bench.sh                        # DURATION=10 CONNS=64 ROUNDS=3
#   TARGETS="bare-pingora siger" ROUNDS=5 load-tests/bench.sh
#   SIGER_SERVER_EXTRA="work_stealing: false" load-tests/bench.sh   # extra server: keys
#   SIGER_BIN=/path/to/other/siger load-tests/bench.sh              # e.g. --no-default-features
#   SKIP_BUILD=1 load-tests/bench.sh                                 # the release binaries as built
#   SUITE=tls load-tests/bench.sh
#   SYSCALLS=1 TARGETS="nginx siger" load-tests/bench.sh   # system calls per request (perf)
#
# TLS (`SUITE=tls`, or name the targets): nginx and Siger terminate TLS with the same ECDSA P-256
# certificate (made at start), TLS 1.3, one worker each, pinned alike:
#   nginx-https / siger-https          HTTPS keep-alive requests (wrk)
#   nginx-handshake / siger-handshake  a new TLS connection per request (wrk, Connection: close):
#                                      CPU-µs per request ≈ per full handshake (no resumption)
#   nginx-h2 / siger-h2                HTTP/2 over TLS, 16 connections × 16 streams (h2load)
#   haproxy / haproxy-https / haproxy-handshake / haproxy-h2
#                                      HAProxy (nbthread 1, server keep-alive `http-reuse always`,
#                                      no TLS session cache or tickets) doing the same
# Each TLS target's ratio is to its nginx counterpart (vs_nginx).
#
# The side-by-side engine run (issue 33): the plain route, TLS keep-alive and HTTP/2 against
# both nginx and HAProxy in one run:
#   SUITE=engine load-tests/bench.sh
#
# Edge policies (`SUITE=policies`): nginx with proxy_cache and gzip configured like Siger's
# `siger-edge` process (routes with a cache, gzip level 6, header rules + CORS):
#   nginx-cache-hit / siger-cache-hit    a cached answer ("ok\n", always warm)
#   nginx-cache-miss / siger-cache-miss  a new cache key per request (looked up, fetched, stored)
#   nginx-gzip / siger-gzip              10 KiB of JSON compressed with gzip level 6 per request
#   siger-policies                       two header rules + CORS (an Origin on every request),
#                                        to be compared with the plain route (vs_siger)
#
# Body transformation (`SUITE=transform`, issue 28): a 2 KiB JSON answer filtered by `allow`
# with two fields renamed, against the same answer untransformed (the same siger-edge process;
# the ratio is printed below the table):
#   siger-json2k / siger-transform
#
# Request inspection (`SUITE=waf`, issue 30): `POST` of a 1 KiB JSON order
# (`load-tests/order-1k.json`) to the same siger-waf process on a route without inspection and
# on one with `waf: block` (Debian's CRS 3.3.4 at paranoia level 1); the ratio is printed below
# the table. Fewer connections than the inspector's queue (64 per CPU) keep it from refusing:
#   CONNS=16 SUITE=waf load-tests/bench.sh             # siger-waf-off / siger-waf
#
# Tracing (`SUITE=tracing`): the plain route with `tracing` on, exporting to an OTLP/HTTP
# collector (the tests' receiver, `load-tests/otlp-sink.rs`, which decodes every export) on
# CPU 0; compare with `siger` (vs_siger):
#   siger-trace-all                      sample_ratio 1.0 (every request: 2 spans exported)
#   siger-trace-1pct                     sample_ratio 0.01 (every request: trace context and a
#                                        traceparent upstream; 1 % exported)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source load-tests/lib.sh

DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
case ${SUITE:-} in
  tls) DEFAULT_TARGETS="nginx siger nginx-https siger-https nginx-handshake siger-handshake nginx-h2 siger-h2" ;;
  engine) DEFAULT_TARGETS="direct nginx haproxy bare-pingora siger nginx-https haproxy-https siger-https nginx-h2 haproxy-h2 siger-h2" ;;
  resilience) DEFAULT_TARGETS="bare-pingora siger siger-resilient" ;;
  policies) DEFAULT_TARGETS="nginx siger nginx-cache-hit siger-cache-hit nginx-cache-miss siger-cache-miss nginx-gzip siger-gzip siger-policies" ;;
  tracing) DEFAULT_TARGETS="bare-pingora siger siger-trace-all siger-trace-1pct" ;;
  transform) DEFAULT_TARGETS="siger-json2k siger-transform" ;;
  waf) DEFAULT_TARGETS="siger-waf-off siger-waf" ;;
  *) DEFAULT_TARGETS="direct nginx bare-pingora siger siger-hs256 siger-es256" ;;
esac
TARGETS=${TARGETS:-$DEFAULT_TARGETS}
SIGER_BIN=${SIGER_BIN:-./target/release/siger}

./scripts/install-deps nginx haproxy wrk h2load:nghttp2-client openssl
[ -z "${SYSCALLS:-}" ] || ./scripts/install-deps --only perf:linux-perf
for tool in taskset nginx haproxy wrk curl h2load openssl; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building release binaries..." >&2
  cargo build --release --quiet --bin siger --example bare-pingora --example otlp-sink
fi

BACKEND=$(free_port)
declare -A PORT PID
PORT[direct]=$BACKEND
start_nginx_backend "$BACKEND" 0

# nginx as a proxy: one worker, upstream keep-alive.
PORT[nginx]=$(free_port)
PORT[nginx-tls]=$(free_port)
mkdir -p "$WORK/nginx"
# One ECDSA P-256 certificate for both TLS terminators.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/tls.key" \
  -out "$WORK/tls.pem" -days 2 -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" 2>/dev/null
cat > "$WORK/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; }
  proxy_cache_path $WORK/nginx/cache levels=1:2 keys_zone=bench:32m max_size=256m;
  server {
    listen 127.0.0.1:${PORT[nginx]};
    keepalive_requests 1000000;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location /cached/ {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      proxy_cache_valid 200 10m;
      proxy_cache_lock on;
      add_header X-Cache \$upstream_cache_status;
    }
    location = /json10k {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      gzip on;
      gzip_comp_level 6;
      gzip_types application/json;
      gzip_proxied any;
      gzip_min_length 1024;
    }
  }
  server {
    listen 127.0.0.1:${PORT[nginx-tls]} ssl http2;
    ssl_certificate $WORK/tls.pem;
    ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    # Clients here never resume; neither server keeps sessions or tickets for them.
    ssl_session_cache off;
    ssl_session_tickets off;
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
PIDS+=($!)
PID[nginx]=$!

# HAProxy as a proxy, configured like nginx: one thread, server connections kept and reused,
# TLS 1.2/1.3 with the same certificate and no session resumption, h2 by ALPN.
PORT[haproxy]=$(free_port)
PORT[haproxy-tls]=$(free_port)
mkdir -p "$WORK/haproxy"
cat "$WORK/tls.pem" "$WORK/tls.key" > "$WORK/haproxy/tls.pem"
cat > "$WORK/haproxy/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 8192
  pidfile $WORK/haproxy/haproxy.pid
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  http-reuse always
frontend plain
  bind 127.0.0.1:${PORT[haproxy]}
  default_backend nginx_backend
frontend tls
  bind 127.0.0.1:${PORT[haproxy-tls]} ssl crt $WORK/haproxy/tls.pem alpn h2,http/1.1
  default_backend nginx_backend
backend nginx_backend
  server backend 127.0.0.1:$BACKEND maxconn 4096
HAP
haproxy -c -q -f "$WORK/haproxy/haproxy.cfg"
taskset -c 1 haproxy -db -f "$WORK/haproxy/haproxy.cfg" 2>"$WORK/haproxy/haproxy.log" &
PIDS+=($!)
PID[haproxy]=$!

PORT[bare-pingora]=$(free_port)
taskset -c 1 ./target/release/examples/bare-pingora "127.0.0.1:${PORT[bare-pingora]}" "127.0.0.1:$BACKEND" 1 2>"$WORK/bare.log" &
PIDS+=($!)
PID[bare-pingora]=$!

SECRET="bench-secret-0123456789abcdef0123456789abcdef"
# Args: name, auth section (YAML or empty). A limit far above the offered load: every request
# pays for the check, none is refused.
siger_config() {
  local name=$1 auth=$2 service_extra=${3:-} admin listen
  admin=$(free_port)
  PORT[$name]=$(free_port)
  ADMIN[$name]=$admin
  listen="\"127.0.0.1:${PORT[$name]}\""
  if [ "$name" = siger-tls ]; then listen="{addr: \"127.0.0.1:${PORT[$name]}\", cert: $WORK/tls.pem, key: $WORK/tls.key}"; fi
  cat > "$WORK/$name.yaml" <<YAML
server: {threads: 1, pid_file: $WORK/$name.pid, upgrade_sock: $WORK/$name.sock, grace_period: 0s, graceful_shutdown_timeout: 1s${SIGER_SERVER_EXTRA:+, $SIGER_SERVER_EXTRA}}
listen: [$listen]
admin: {listen: "127.0.0.1:$admin"}
$auth
services:
  backend: {targets: ["127.0.0.1:$BACKEND"], lb: round_robin$service_extra}
routes:
  - {name: bench, path: /, service: backend, auth: $( [ -n "$auth" ] && echo required || echo public )}
YAML
}
declare -A ADMIN TOKEN
siger_config siger ""
siger_config siger-tls ""
siger_config siger-resilient "" ", retry_on: [connect, 502, 503], retry_budget: 20%,
    outlier_detection: {consecutive_failures: 5}, circuit_breaker: {max_in_flight: 100000}"
siger_config siger-hs256 "auth: {jwt: {algorithms: [HS256], secret: \"$SECRET\", issuer: bench}}
rate_limit: {store: local, default: {requests: 1000000000, per: 1m, key: consumer}}"
siger_config siger-es256 "auth: {jwt: {algorithms: [ES256], jwks_file: \"$ROOT/tests/fixtures/jwt/jwks-ec1.json\", issuer: bench}}
rate_limit: {store: local, default: {requests: 1000000000, per: 1m, key: consumer}}"
siger_config siger-edge ""
OTLP_SINK=$(free_port)
taskset -c 0 ./target/release/examples/otlp-sink "127.0.0.1:$OTLP_SINK" >"$WORK/otlp-sink.log" 2>&1 &
PIDS+=($!)
siger_config siger-trace-all ""
echo "tracing: {otlp_endpoint: \"http://127.0.0.1:$OTLP_SINK/v1/traces\", sample_ratio: 1.0}" >>"$WORK/siger-trace-all.yaml"
siger_config siger-trace-1pct ""
echo "tracing: {otlp_endpoint: \"http://127.0.0.1:$OTLP_SINK/v1/traces\", sample_ratio: 0.01}" >>"$WORK/siger-trace-1pct.yaml"
cat >> "$WORK/siger-edge.yaml" <<YAML
  - {name: cached, path: /cached, service: backend, auth: public, cache: {ttl: 10m}}
  - {name: gzip, path: /json10k, service: backend, auth: public, compress: {algorithms: [gzip], level: 6}}
  - name: policies
    path: /policies
    service: backend
    auth: public
    request_headers: {set: {X-Route: "\$route"}}
    response_headers: {set: {X-Response-Time: "\$duration_ms"}}
    cors: {origins: ["https://app.example.com"], expose: [X-Request-Id]}
  - {name: json2k, path: /json2k, service: backend, auth: public}
  - name: transform
    path: /transformed
    service: backend
    auth: public
    strip_prefix: true
    transform: {response: {allow: [/id, /status, /created_at, /items], rename: {/status: /state, /created_at: /createdAt}}}
cache: {max_memory: 256MiB}
YAML
# Request inspection: started only when measured (loading the CRS takes a second and 20 MiB).
if [[ " $TARGETS " == *" siger-waf"* ]]; then
  siger_config siger-waf ""
  cat >> "$WORK/siger-waf.yaml" <<YAML
  - {name: nowaf, path: /nowaf, service: backend, auth: public}
  - {name: waf, path: /waf, service: backend, auth: public, waf: block}
waf: {}
YAML
  cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$(cat "$ROOT/load-tests/order-1k.json")]]
LUA
fi
# A new cache key for every request (cache-miss targets).
cat > "$WORK/unique.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/cached/miss?n=" .. counter .. "-" .. math.random(1000000000))
end
LUA
TOKEN[siger-hs256]=$("$SIGER_BIN" token -c "$WORK/siger-hs256.yaml" --sub bench --ttl 2h)
TOKEN[siger-es256]=$("$SIGER_BIN" token -c "$WORK/siger-es256.yaml" --sub bench --ttl 2h \
  --private-key "$ROOT/tests/fixtures/jwt/ec1.key.pem" --kid ec1)
# The access log is on and written (formatted, buffered, write(2)); it goes to /dev/null so
# gigabytes of page cache and writeback do not add disk noise to the CPU figures.
SIGERS="siger siger-tls siger-resilient siger-edge siger-hs256 siger-es256 siger-trace-all siger-trace-1pct"
if [ -n "${PORT[siger-waf]:-}" ]; then SIGERS+=" siger-waf"; fi
for name in $SIGERS; do
  taskset -c 1 "$SIGER_BIN" -c "$WORK/$name.yaml" 2>/dev/null &
  PIDS+=($!)
  PID[$name]=$!
done

for t in direct nginx nginx-tls haproxy haproxy-tls bare-pingora $SIGERS; do wait_port "${PORT[$t]}"; done
for name in $SIGERS; do wait_ready "${ADMIN[$name]}"; done
NGINX_WORKERS=$(pgrep -P "${PID[nginx]}" | tr '\n' ' ')

# The server process behind a target (TLS targets share one per proxy).
server_of() {
  case $1 in
    nginx-*) echo nginx ;;
    haproxy-*) echo haproxy ;;
    siger-https | siger-handshake | siger-h2) echo siger-tls ;;
    siger-cache-hit | siger-cache-miss | siger-gzip | siger-policies | siger-json2k | siger-transform) echo siger-edge ;;
    siger-waf-off) echo siger-waf ;;
    *) echo "$1" ;;
  esac
}

proxy_pids() {
  case $(server_of "$1") in
    direct) echo "" ;;
    nginx) echo "${PID[nginx]} $NGINX_WORKERS" ;;
    *) echo "${PID[$(server_of "$1")]}" ;;
  esac
}

# The URL a target is measured on.
url_of() {
  case $1 in
    nginx-cache-* | siger-cache-*) echo "http://127.0.0.1:${PORT[$(server_of "$1")]}/cached/" ;;
    nginx-gzip | siger-gzip) echo "http://127.0.0.1:${PORT[$(server_of "$1")]}/json10k" ;;
    siger-policies) echo "http://127.0.0.1:${PORT[siger-edge]}/policies" ;;
    siger-json2k) echo "http://127.0.0.1:${PORT[siger-edge]}/json2k" ;;
    siger-transform) echo "http://127.0.0.1:${PORT[siger-edge]}/transformed/json2k" ;;
    siger-waf-off) echo "http://127.0.0.1:${PORT[siger-waf]}/nowaf/orders" ;;
    siger-waf) echo "http://127.0.0.1:${PORT[siger-waf]}/waf/orders" ;;
    nginx-*) echo "https://127.0.0.1:${PORT[nginx-tls]}/" ;;
    haproxy-*) echo "https://127.0.0.1:${PORT[haproxy-tls]}/" ;;
    siger-https | siger-handshake | siger-h2) echo "https://127.0.0.1:${PORT[siger-tls]}/" ;;
    *) echo "http://127.0.0.1:${PORT[$1]}/" ;;
  esac
}

# Latency in ms from a wrk value like 512.00us / 1.23ms / 2.00s.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000
    printf "%.3f", n }'
}

wrk_run() { # target duration [extra wrk args…]
  local target=$1 duration=$2
  shift 2
  local auth=()
  if [ -n "${TOKEN[$target]:-}" ]; then auth=(-H "Authorization: Bearer ${TOKEN[$target]}"); fi
  case $target in
    *-handshake) auth=(-H "Connection: close") ;;
    *-gzip) auth=(-H "Accept-Encoding: gzip") ;;
    *-cache-miss) auth=(-s "$WORK/unique.lua") ;;
    siger-policies) auth=(-H "Origin: https://app.example.com") ;;
    siger-waf | siger-waf-off) auth=(-s "$WORK/post.lua") ;;
  esac
  taskset -c 0 wrk -t1 -c"$CONNS" -d"$duration" "${auth[@]}" "$@" "$(url_of "$target")"
}

# h2load over TLS for `duration` seconds, printed in wrk's words (requests, Requests/sec and
# latency percentiles) so run_one reads both alike.
h2_run() { # target duration
  local out
  out=$(taskset -c 0 h2load -t1 -c16 -m16 -D "$2" "$(url_of "$1")" 2>&1)
  awk '/^requests:/ {print $8 " requests in"} /^finished in/ {gsub(",", ""); print "Requests/sec: " $4}
       /^time for request:/ {print "50% " $6; print "99% " $5}' <<<"$out"
  awk '/^requests:/ && $10 + 0 > 0 {print "Socket errors: " $10 " failed"}' <<<"$out"
}

# SYSCALLS=1: count the proxy's system calls (and context switches) per request with perf's
# tracepoints during each run (perf must be allowed to read them; the counting costs a little).
SYSCALL_EVENTS=${SYSCALL_EVENTS:-raw_syscalls:sys_enter,context-switches,page-faults}
for call in read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_pwait epoll_ctl futex \
  sched_yield accept4 close clock_gettime getsockopt setsockopt ioctl; do
  SYSCALL_EVENTS+=",syscalls:sys_enter_$call"
done
declare -A RPS P50 P99 CPU SYS ERRS
run_one() {
  local target=$1 round=$2 out pids before after sys_before sys_after reqs
  pids=$(proxy_pids "$target")
  before=$(cpu_ticks $pids)
  sys_before=$(sys_ticks $pids)
  local counting=""
  if [ -n "${SYSCALLS:-}" ] && [ -n "$pids" ]; then
    perf stat -x, -o "$WORK/syscalls-$target-$round" -e "$SYSCALL_EVENTS" -p "$(tr ' ' ',' <<<"${pids% }")" &
    counting=$!
  fi
  if [[ $target == *-h2 ]]; then
    out=$(h2_run "$target" "$DURATION")
  else
    out=$(wrk_run "$target" "${DURATION}s" --latency)
  fi
  after=$(cpu_ticks $pids)
  sys_after=$(sys_ticks $pids)
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  if [ -n "$counting" ]; then
    kill -INT "$counting" && wait "$counting" || true
    # Each counted event per request, largest first.
    awk -F, -v r="$reqs" -v t="$target" '$1 ~ /^[0-9]+$/ && $1 > 0 {printf "  %-16s %-32s %8.2f per request\n", t, $3, $1 / r}' \
      "$WORK/syscalls-$target-$round" | sort -k3 -g -r >&2
  fi
  RPS[$target,$round]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  P50[$target,$round]=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  P99[$target,$round]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  ERRS[$target,$round]=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' <<<"$out")
  if [ -n "$pids" ] && [ "$reqs" -gt 0 ]; then
    CPU[$target,$round]=$(awk -v t=$((after - before)) -v hz="$HZ" -v r="$reqs" 'BEGIN {printf "%.2f", t * 1e6 / hz / r}')
    SYS[$target,$round]=$(awk -v t=$((sys_after - sys_before)) -v hz="$HZ" -v r="$reqs" 'BEGIN {printf "%.2f", t * 1e6 / hz / r}')
  else
    CPU[$target,$round]="-"
    SYS[$target,$round]="-"
  fi
  printf "round %d %-15s %8s req/s  p50 %7s ms  p99 %7s ms  cpu %6s us/req (kernel %6s) %s\n" "$round" "$target" \
    "${RPS[$target,$round]}" "${P50[$target,$round]}" "${P99[$target,$round]}" "${CPU[$target,$round]}" "${SYS[$target,$round]}" "${ERRS[$target,$round]}" >&2
}

median() { tr ' ' '\n' | { grep -v '^-*$' || true; } | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print a[int((NR + 1) / 2)]}'; }

read -r -a TLIST <<<"$TARGETS"
echo "warm-up..." >&2
for t in "${TLIST[@]}"; do
  if [[ $t == *-h2 ]]; then h2_run "$t" 2 >/dev/null; else wrk_run "$t" 2s >/dev/null; fi
done

for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round so drift on a shared machine does not favour one target.
  n=${#TLIST[@]}
  for i in $(seq 0 $((n - 1))); do
    run_one "${TLIST[$(((i + round - 1) % n))]}" "$round"
  done
done

declare -A M_RPS M_P50 M_P99 M_CPU M_SYS
for t in "${TLIST[@]}"; do
  M_RPS[$t]=$(for r in $(seq 1 "$ROUNDS"); do printf "%s " "${RPS[$t,$r]}"; done | median)
  M_P50[$t]=$(for r in $(seq 1 "$ROUNDS"); do printf "%s " "${P50[$t,$r]}"; done | median)
  M_P99[$t]=$(for r in $(seq 1 "$ROUNDS"); do printf "%s " "${P99[$t,$r]}"; done | median)
  M_CPU[$t]=$(for r in $(seq 1 "$ROUNDS"); do printf "%s " "${CPU[$t,$r]}"; done | median)
  M_SYS[$t]=$(for r in $(seq 1 "$ROUNDS"); do printf "%s " "${SYS[$t,$r]}"; done | median)
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2fx", a / b }'; }
echo
echo "medians of $ROUNDS rounds, ${DURATION}s each, $CONNS connections (proxy alone on CPU 1, wrk + backend on CPU 0)"
printf "%-17s %10s %9s %9s %12s %10s %9s %10s %9s %9s\n" target req/s p50_ms p99_ms cpu_us/req kernel_us vs_nginx vs_haproxy vs_bare vs_siger
# A TLS target is compared with nginx doing the same (siger-h2 with nginx-h2, …).
nginx_peer() {
  case $1 in
    siger-https | siger-handshake | siger-h2 | siger-cache-* | siger-gzip) echo "nginx-${1#siger-}" ;;
    haproxy-*) echo "nginx-${1#haproxy-}" ;;
    nginx-*) echo "$1" ;;
    *) echo nginx ;;
  esac
}
# … and with HAProxy doing the same (siger-https with haproxy-https, …).
haproxy_peer() {
  case $1 in
    siger-https | siger-handshake | siger-h2) echo "haproxy-${1#siger-}" ;;
    nginx-* | haproxy-*) echo "haproxy-${1#*-}" ;;
    *) echo haproxy ;;
  esac
}
for t in "${TLIST[@]}"; do
  printf "%-17s %10s %9s %9s %12s %10s %9s %10s %9s %9s\n" "$t" "${M_RPS[$t]}" "${M_P50[$t]}" "${M_P99[$t]}" "${M_CPU[$t]}" "${M_SYS[$t]}" \
    "$(ratio "${M_CPU[$t]}" "${M_CPU[$(nginx_peer "$t")]:--}")" "$(ratio "${M_CPU[$t]}" "${M_CPU[$(haproxy_peer "$t")]:--}")" \
    "$(ratio "${M_CPU[$t]}" "${M_CPU[bare-pingora]:--}")" \
    "$(ratio "${M_CPU[$t]}" "${M_CPU[siger]:--}")"
done
if [[ " ${TLIST[*]} " == *" siger-cache-hit "* ]] && [[ " ${TLIST[*]} " == *" siger-cache-miss "* ]]; then
  echo "siger cache hit / miss: $(ratio "${M_CPU[siger-cache-hit]}" "${M_CPU[siger-cache-miss]}"); hit / plain proxied: $(ratio "${M_CPU[siger-cache-hit]}" "${M_CPU[siger]:--}")"
  curl -fsS "http://127.0.0.1:${ADMIN[siger-edge]}/metrics" | grep -E '^siger_cache_(requests_total|bytes|entries)' || true
fi
if [[ " ${TLIST[*]} " == *" siger-transform "* ]] && [[ " ${TLIST[*]} " == *" siger-json2k "* ]]; then
  echo "siger transform / untransformed (2 KiB JSON): $(ratio "${M_CPU[siger-transform]}" "${M_CPU[siger-json2k]}") in CPU-µs per request"
fi
if [[ " ${TLIST[*]} " == *" siger-waf "* ]] && [[ " ${TLIST[*]} " == *" siger-waf-off "* ]]; then
  echo "siger waf: block / no inspection (POST 1 KiB JSON): $(ratio "${M_CPU[siger-waf]}" "${M_CPU[siger-waf-off]}") in CPU-µs per request"
  curl -fsS "http://127.0.0.1:${ADMIN[siger-waf]}/metrics" | grep -E '^siger_waf_matches_total' || echo "siger_waf_matches_total: none (no request refused)"
fi
for name in siger-trace-all siger-trace-1pct; do
  if [[ " ${TLIST[*]} " == *" $name "* ]]; then
    echo "$name: $(curl -fsS "http://127.0.0.1:${ADMIN[$name]}/metrics" | grep -E '^siger_trace_spans_(exported|dropped)_total' | tr '\n' ' ')"
  fi
done
if [[ " ${TLIST[*]} " == *" siger-trace-"* ]]; then echo "collector: $(tail -1 "$WORK/otlp-sink.log")"; fi
for name in siger siger-resilient siger-hs256 siger-es256; do
  if [[ " ${TLIST[*]} " == *" $name "* ]]; then
    served=$(curl -fsS "http://127.0.0.1:${ADMIN[$name]}/metrics" | awk '/^siger_requests_total/ {n += $2} END {print n + 0}')
    echo "$name answered $served requests (siger_requests_total), each access-logged"
  fi
done
