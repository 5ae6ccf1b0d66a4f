#!/usr/bin/env bash
# Deterministic per-request cost: user-space instructions per request under callgrind, for the
# bare Pingora proxy and Siger routes, each with one worker thread behind a fixed-response nginx
# backend. Unlike CPU time on a shared VM, the count is repeatable (the same binary and inputs
# give the same figure whatever else the machine does); kernel time (loopback TCP, ≈ 45 % of a
# request here) is not counted and is the same for every proxy.
#
#   load-tests/instructions.sh                         # N=20000 requests, 8 connections
#   TARGETS="bare-pingora siger" load-tests/instructions.sh
#   SKIP_BUILD=1 SIGER_BIN=/path/to/other/siger load-tests/instructions.sh   # compare a build
#   SKIP_BUILD=1 BARE_BIN=/path/to/other/bare-pingora …                       # (bare Pingora too)
#   KEEP_CALLGRIND=profiles load-tests/instructions.sh         # keep profiles for callgrind_annotate
#   SIGER_SERVER_EXTRA="work_stealing: false" load-tests/instructions.sh   # extra server: keys
#
# A request body (every target POSTs it as JSON; nginx answers POST like GET), fewer requests
# and a shorter warm-up for expensive routes, e.g. request inspection (docs/waf.md, "Cost"):
#   BODY_FILE=order-1k.json N=500 WARM=50 TARGETS="siger siger-waf" load-tests/instructions.sh
#
# Extra Siger targets are named siger-<variant>, with their YAML in SIGER_VARIANT_<variant>
# (routes and policies added to the plain config), e.g.
#   SIGER_VARIANT_hs256='auth: …' TARGETS="siger siger-hs256" load-tests/instructions.sh
# A variant may send another request: REQUEST_PATH_<variant> and REQUEST_BODY_<variant> (a JSON
# text, sent as POST). Built in: siger-json (POST /shop.v1.Orders/GetOrder with a JSON body,
# proxied to nginx's JSON answer) and siger-grpc (the same request transcoded to gRPC for
# siger-grpc-echo; the backend's own work is not counted), e.g.
#   TARGETS="siger-json siger-grpc" load-tests/instructions.sh
# Also siger-transform (GET /json2k, a 2 KiB JSON answer filtered by `allow` with two fields
# renamed) and siger-json2k (the same answer untransformed), the issue-28 comparison:
#   TARGETS="siger-json2k siger-transform" load-tests/instructions.sh
# And siger-plan (docs/plans.md): siger-hs256's route with its consumer on a plan — a monthly
# quota and the plan's rate limit instead of the route's, usage metered — against siger-hs256
# (the same route with only a rate limit), both with local stores:
#   TARGETS="siger-hs256 siger-plan" load-tests/instructions.sh
# With `rate_limit.store: redis` a request of siger-plan costs two Redis round trips (the
# plan's rate limit and the quota, one script each) where siger-hs256's costs one; usage adds
# none per request (one script per consumer and day, and one per day, every flush_interval).
# TLS, on the plain route's config with a TLS listener (an ECDSA P-256 certificate made at start,
# TLS 1.3): siger-https (HTTP/1.1 keep-alive over TLS) and siger-h2 (HTTP/2 by ALPN, H2_STREAMS
# concurrent streams per connection, 16 unless told), e.g.
#   TARGETS="siger siger-https siger-h2" load-tests/instructions.sh
set -euo pipefail
# Paths given relative to where the script was started, before it moves to the repository.
[ -z "${BODY_FILE:-}" ] || BODY_FILE=$(realpath "$BODY_FILE")
[ -z "${KEEP_CALLGRIND:-}" ] || KEEP_CALLGRIND=$(realpath -m "$KEEP_CALLGRIND")
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source load-tests/lib.sh

N=${N:-20000}
WARM=${WARM:-2000}
CONNS=${CONNS:-8}
TARGETS=${TARGETS:-"bare-pingora siger siger-hs256"}
SIGER_BIN=$(realpath "${SIGER_BIN:-./target/release/siger}")
BARE_BIN=$(realpath "${BARE_BIN:-./target/release/examples/bare-pingora}")

./scripts/install-deps nginx valgrind h2load:nghttp2-client openssl
for tool in nginx valgrind callgrind_control h2load openssl; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building release binaries..." >&2
  cargo build --release --quiet --bin siger --example bare-pingora
fi

BACKEND=$(free_port)
start_nginx_backend "$BACKEND"
wait_port "$BACKEND"
SECRET="bench-secret-0123456789abcdef0123456789abcdef"
SIGER_VARIANT_hs256=${SIGER_VARIANT_hs256:-"auth: {jwt: {algorithms: [HS256], secret: \"$SECRET\", issuer: bench}}
rate_limit: {store: local, default: {requests: 1000000000, per: 1m, key: consumer}}"}
# The same route and consumer on a plan: a quota and a rate limit (docs/plans.md).
SIGER_VARIANT_plan=${SIGER_VARIANT_plan:-"auth: {jwt: {algorithms: [HS256], secret: \"$SECRET\", issuer: bench}}
rate_limit: {store: local}
plans:
  bench: {quota: {requests: 1000000000, per: month}, rate_limit: {requests: 1000000000, per: 1m}}
consumers: {default_plan: bench}
usage: {store: local}"}
# Outlier detection, a circuit breaker, retry_on and a retry budget on the service.
SIGER_VARIANT_resilient=${SIGER_VARIANT_resilient:-"services:
  backend: {targets: [\"{{BACKEND}}\"], retry_on: [connect, 502, 503], retry_budget: 20%, outlier_detection: {consecutive_failures: 5}, circuit_breaker: {max_in_flight: 100000}}
routes:
  - {name: bench, path: /, service: backend, auth: public}"}
# Request inspection: Debian's CRS 3.3.4 at paranoia level 1 on the route, in block mode.
# (waf.timeout raised: under callgrind one inspection takes seconds, and a block route fails closed.)
SIGER_VARIANT_waf=${SIGER_VARIANT_waf:-"waf: {max_body: 128KiB, timeout: 10m}
services:
  backend: {targets: [\"{{BACKEND}}\"]}
routes:
  - {name: bench, path: /, service: backend, auth: public, waf: block}"}
# Two header rules and CORS on the route.
SIGER_VARIANT_policies=${SIGER_VARIANT_policies:-"services:
  backend: {targets: [\"{{BACKEND}}\"]}
routes:
  - {name: bench, path: /, service: backend, auth: public, request_headers: {set: {X-Route: \"\$route\"}}, response_headers: {remove: [Server]}, cors: {origins: [\"https://app.example.com\"]}}"}

# Transcoding: the same JSON request, proxied plainly (json) and transcoded to gRPC (grpc).
GET_ORDER='{"id":"42","shop":"s1"}'
SIGER_VARIANT_json=${SIGER_VARIANT_json:-"services:
  backend: {targets: [\"{{BACKEND}}\"]}
routes:
  - {name: bench, path: /, service: backend, auth: public}"}
REQUEST_PATH_json=/shop.v1.Orders/GetOrder
REQUEST_BODY_json=$GET_ORDER
SIGER_VARIANT_grpc=${SIGER_VARIANT_grpc:-"services:
  orders: {targets: [\"{{GRPC_BACKEND}}\"], http2: true}
routes:
  - {name: bench, path: /, service: orders, auth: public, grpc_transcode: {descriptors: {{DESCRIPTORS}}, services: [shop.v1.Orders]}}"}
REQUEST_PATH_grpc=/shop.v1.Orders/GetOrder
REQUEST_BODY_grpc=$GET_ORDER
# Body transformation (docs/transform.md): a 2 KiB JSON order filtered with `allow` and two
# fields renamed (transform), against the same route untransformed (json2k).
SIGER_VARIANT_transform=${SIGER_VARIANT_transform:-"services:
  backend: {targets: [\"{{BACKEND}}\"]}
routes:
  - {name: bench, path: /, service: backend, auth: public, transform: {response: {allow: [/id, /status, /created_at, /items], rename: {/status: /state, /created_at: /createdAt}}}}"}
REQUEST_PATH_transform=/json2k
SIGER_VARIANT_json2k=${SIGER_VARIANT_json2k:-"services:
  backend: {targets: [\"{{BACKEND}}\"]}
routes:
  - {name: bench, path: /, service: backend, auth: public}"}
REQUEST_PATH_json2k=/json2k
if [[ " $TARGETS " == *" siger-grpc "* ]]; then
  [ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --bin siger-grpc-echo
  ./tests/fixtures/grpc/descriptors "$WORK/shop.pb"
  ./target/release/siger-grpc-echo --descriptors "$WORK/shop.pb" > "$WORK/grpc-echo.out" &
  PIDS+=($!)
  for _ in $(seq 1 100); do grep -q "listening on" "$WORK/grpc-echo.out" 2>/dev/null && break; sleep 0.1; done
  GRPC_BACKEND=$(awk '/listening on/ {print $3}' "$WORK/grpc-echo.out")
fi

# Instructions (Ir) callgrind counted since its last zeroing, from a dump of process $1.
dump_ir() {
  local pid=$1 before after file
  callgrind_control --dump "$pid" >/dev/null
  sleep 1
  file=$(ls -t "$WORK"/callgrind.out.* 2>/dev/null | head -1)
  awk '/^(summary|totals):/ {print $2; exit}' "$file"
}

if [[ " $TARGETS " == *" siger-https "* || " $TARGETS " == *" siger-h2 "* ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/tls.key" \
    -out "$WORK/tls.pem" -days 2 -subj "/CN=bench.test" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
fi

declare -A IPR
for target in $TARGETS; do
  port=$(free_port)
  auth=()
  variant=""
  scheme=http
  # HTTP/1.1 unless the target speaks HTTP/2.
  protocol=(--h1)
  listen="\"127.0.0.1:$port\""
  case $target in
    siger-https | siger-h2)
      scheme=https
      listen="{addr: \"127.0.0.1:$port\", cert: $WORK/tls.pem, key: $WORK/tls.key}"
      [ "$target" = siger-h2 ] && protocol=(-m "${H2_STREAMS:-16}")
      ;;
  esac
  case $target in
    bare-pingora)
      cmd=("$BARE_BIN" "127.0.0.1:$port" "127.0.0.1:$BACKEND" 1)
      ;;
    siger*)
      variant=${target#siger}
      variant=${variant#-}
      extra=""
      if [ -n "$variant" ]; then
        var="SIGER_VARIANT_${variant//-/_}"
        extra=${!var:-}
      fi
      admin=$(free_port)
      cat > "$WORK/$target.yaml" <<YAML
server: {threads: 1, pid_file: $WORK/$target.pid, upgrade_sock: $WORK/$target.sock, grace_period: 0s, graceful_shutdown_timeout: 1s${SIGER_SERVER_EXTRA:+, $SIGER_SERVER_EXTRA}}
listen: [$listen]
admin: {listen: "127.0.0.1:$admin"}
$extra
YAML
      # A variant that brings its own services and routes replaces the plain ones ({{BACKEND}}
      # is the backend's address).
      if [[ "$extra" == *"services:"* ]]; then
        sed -i -e "s/{{BACKEND}}/127.0.0.1:$BACKEND/g" -e "s/{{GRPC_BACKEND}}/${GRPC_BACKEND:-}/g" \
          -e "s#{{DESCRIPTORS}}#$WORK/shop.pb#g" "$WORK/$target.yaml"
      else
        cat >> "$WORK/$target.yaml" <<YAML
services:
  backend: {targets: ["127.0.0.1:$BACKEND"]}
routes:
  - {name: bench, path: /, service: backend, auth: $( [[ "$extra" == *"jwt:"* ]] && echo required || echo public )}
YAML
      fi
      if [[ "$extra" == *"jwt:"* ]]; then
        auth=(-H "Authorization: Bearer $("$SIGER_BIN" token -c "$WORK/$target.yaml" --sub bench --ttl 2h)")
      fi
      if [[ "$extra" == *"cors:"* ]]; then
        auth+=(-H "Origin: https://app.example.com")
      fi
      cmd=("$SIGER_BIN" -c "$WORK/$target.yaml")
      ;;
  esac
  url_path=/
  if [ -n "${variant:-}" ]; then
    path_var="REQUEST_PATH_${variant//-/_}"
    body_var="REQUEST_BODY_${variant//-/_}"
    url_path=${!path_var:-/}
    if [ -n "${!body_var:-}" ]; then
      printf '%s' "${!body_var}" > "$WORK/$target.body"
      auth+=(-d "$WORK/$target.body" -H "Content-Type: application/json")
    fi
  fi
  if [ -n "${BODY_FILE:-}" ]; then
    auth+=(-d "$BODY_FILE" -H "Content-Type: application/json")
  fi
  (cd "$WORK" && exec valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" "${cmd[@]}" 2>"$WORK/$target.log" >/dev/null) &
  PIDS+=($!)
  vg=$!
  # Up to 10 minutes: compiling the CRS under callgrind takes minutes.
  for _ in $(seq 1 6000); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  # The valgrind process is the target process (valgrind execs in place).
  h2load "${protocol[@]}" -n "$WARM" -c "$CONNS" ${auth[@]+"${auth[@]}"} "$scheme://127.0.0.1:$port$url_path" >/dev/null
  callgrind_control --zero "$vg" >/dev/null
  h2load "${protocol[@]}" -n "$N" -c "$CONNS" ${auth[@]+"${auth[@]}"} "$scheme://127.0.0.1:$port$url_path" > "$WORK/$target.h2load"
  served=$(awk '/^requests:/ {print $8}' "$WORK/$target.h2load")
  ir=$(dump_ir "$vg")
  # KEEP_CALLGRIND=dir keeps each target's profile for callgrind_annotate.
  if [ -n "${KEEP_CALLGRIND:-}" ]; then
    mkdir -p "$KEEP_CALLGRIND"
    cp "$(ls -t "$WORK"/callgrind.out.* | head -1)" "$KEEP_CALLGRIND/$target.callgrind"
  fi
  IPR[$target]=$(awk -v ir="$ir" -v n="$served" 'BEGIN {printf "%.1f", ir / n / 1000}')
  echo "$target: $served requests, $ir instructions → ${IPR[$target]} k instructions/request" >&2
  kill "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
done

echo
printf "%-16s %14s %10s\n" target k_instr/req vs_bare
for target in $TARGETS; do
  printf "%-16s %14s %10s\n" "$target" "${IPR[$target]}" \
    "$(awk -v a="${IPR[$target]}" -v b="${IPR[bare-pingora]:-0}" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }')"
done
