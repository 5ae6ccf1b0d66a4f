#!/usr/bin/env bash
# Composition and validation under measurement (release build, loopback, ARCHITECTURE §7.5):
#
#   1. Aggregation: an aggregate route of 3 parts on 3 siger-echo backends (the slowest part
#      answers after 5 ms), paced at RATE requests/s for DURATION s, against the slowest part
#      alone proxied through the same gateway: p50/p99 side by side (client-side, the paced
#      generator's scheduling lateness included in both).
#   2. Validation: wrk POSTing a 2 KiB JSON body to a route with a JSON Schema and to the same
#      route without one, Siger pinned alone on CPU 1: CPU-µs per request of each.
#
#   load-tests/composition.sh               # RATE=500 DURATION=20 WRK_SECONDS=10
set -euo pipefail
cd "$(dirname "$0")/.."
source load-tests/lib.sh
RATE=${RATE:-500}
DURATION=${DURATION:-20}
WRK_SECONDS=${WRK_SECONDS:-10}

./scripts/install-deps wrk
echo "building release binaries..." >&2
cargo build --release --quiet --bin siger --bin siger-echo --example paced
ECHO=./target/release/siger-echo
PACED=./target/release/examples/paced

declare -A BACKEND
for name in users wallets orders; do
  port=$(free_port)
  taskset -c 0 "$ECHO" --listen "127.0.0.1:$port" --name "$name" >/dev/null 2>&1 &
  PIDS+=($!)
  BACKEND[$name]=$port
done
for name in users wallets orders; do wait_port "${BACKEND[$name]}"; done

cat > "$WORK/order.json" <<'JSON'
{"type": "object", "required": ["customer", "items"],
 "properties": {
   "customer": {"type": "string", "minLength": 1},
   "items": {"type": "array", "minItems": 1, "items": {
     "type": "object", "required": ["sku", "qty", "price"],
     "properties": {"sku": {"type": "string", "pattern": "^[A-Z]+-[0-9]+$"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "number", "minimum": 0}}}}}}
JSON
# A 2 KiB order.
python3 - "$WORK/order-body.json" <<'PY'
import json, sys
items = [{"sku": f"SKU-{i:05d}", "qty": i % 7 + 1, "price": round(3.5 * i, 2)} for i in range(40)]
body = {"customer": "acme", "items": items}
while len(json.dumps(body)) < 2048:
    items.append({"sku": "PAD-1", "qty": 1, "price": 0})
open(sys.argv[1], "w").write(json.dumps(body)[:4096])
PY
echo "order body: $(wc -c < "$WORK/order-body.json") bytes" >&2

PORT=$(free_port)
ADMIN=$(free_port)
cat > "$WORK/siger.yaml" <<YAML
server: {threads: 1, pid_file: $WORK/siger.pid, upgrade_sock: $WORK/siger.sock, grace_period: 0s}
listen: ["127.0.0.1:$PORT"]
admin: {listen: "127.0.0.1:$ADMIN"}
services:
  users: {targets: ["127.0.0.1:${BACKEND[users]}"]}
  wallets: {targets: ["127.0.0.1:${BACKEND[wallets]}"]}
  orders: {targets: ["127.0.0.1:${BACKEND[orders]}"]}
routes:
  - path: /dashboard
    auth: public
    aggregate:
      timeout: 2s
      parts:
        - {key: user, service: users, path: /users/1}
        - {key: wallet, service: wallets, path: /wallets/1}
        - {key: orders, service: orders, path: "/orders?delay_ms=5"}
  - {path: /orders, service: orders, auth: public}
  - {path: /checked, service: orders, auth: public, strip_prefix: true, validate: {schema: $WORK/order.json}}
  - {path: /unchecked, service: orders, auth: public, strip_prefix: true}
YAML
./target/release/siger -t -c "$WORK/siger.yaml"
taskset -c 1 ./target/release/siger -c "$WORK/siger.yaml" 2>/dev/null &
PIDS+=($!)
SIGER=$!
wait_ready "$ADMIN"

echo "aggregation: 3 parts (slowest 5 ms) vs the slowest part alone, $RATE req/s for ${DURATION}s each"
curl -fsS "http://127.0.0.1:$PORT/dashboard" | head -c 200; echo
alone=$(taskset -c 0 "$PACED" "127.0.0.1:$PORT" "/orders?delay_ms=5" "$RATE" "$DURATION")
echo "slowest part alone: $alone"
aggregate=$(taskset -c 0 "$PACED" "127.0.0.1:$PORT" "/dashboard" "$RATE" "$DURATION")
echo "aggregate of 3:     $aggregate"

cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$WORK/order-body.json", "rb")
wrk.body = f:read("*a")
f:close()
LUA
cpu_per_request() { # path
  local before after out reqs
  before=$(cpu_ticks "$SIGER")
  out=$(taskset -c 0 wrk -t1 -c32 -d"${WRK_SECONDS}s" -s "$WORK/post.lua" "http://127.0.0.1:$PORT$1/upload")
  after=$(cpu_ticks "$SIGER")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  if grep -q 'Non-2xx' <<<"$out"; then echo "non-2xx answers on $1: $(grep Non-2xx <<<"$out")" >&2; fi
  awk -v t=$((after - before)) -v hz="$HZ" -v r="$reqs" 'BEGIN {printf "%.2f", t * 1e6 / hz / r}'
}
echo "validation of a $(wc -c < "$WORK/order-body.json")-byte body, CPU-µs/request of Siger (3 rounds each, alternating):"
for round in 1 2 3; do
  u=$(cpu_per_request /unchecked)
  c=$(cpu_per_request /checked)
  echo "round $round: without schema $u, with schema $c, ratio $(awk -v a="$c" -v b="$u" 'BEGIN {printf "%.2f", a / b}')"
done
