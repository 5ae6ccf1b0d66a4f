#!/usr/bin/env bash
# N gateways acting as one (ARCHITECTURE.md §7.7): three Siger processes behind no balancer (the
# load generator spreads requests over them itself), sharing rate limits through a Redis master +
# replica watched by three sentinels, and publishing jobs to an R3 stream on a three-node NATS
# JetStream cluster. All on loopback ports; every process started here is stopped by PID.
#
# Phase 1, limit accuracy: CLIENTS clients (own X-Client each) send BURST requests, spread
# round-robin over the three gateways, inside one window of a LIMIT-per-10 s limit: admitted
# vs the limit (over-admission).
# Phase 2, jobs and node losses: JOBS jobs from 8 workers (Idempotency-Key each, a 503 retried on
# the next gateway) while, one after the other, the NATS stream leader is killed (SIGKILL) and
# restarted and the Redis master is killed (the sentinels promote the replica); limited requests
# keep flowing meanwhile. Reports jobs accepted vs stored (the stream's count from the NATS
# monitoring endpoint), duplicates, and requests that failed during the losses.
# Phase 3: once every gateway uses the promoted replica, phase 1 again with new clients.
#
#   load-tests/three-gateways.sh                  # CLIENTS=40 BURST=150 LIMIT=100 JOBS=6000
#   SKIP_BUILD=1 JOBS=10000 load-tests/three-gateways.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CLIENTS=${CLIENTS:-40}
BURST=${BURST:-150}
LIMIT=${LIMIT:-100}
JOBS=${JOBS:-6000}

./scripts/install-deps nginx
command -v redis-server >/dev/null && command -v nats-server >/dev/null && command -v python3 >/dev/null
if [ -z "${SKIP_BUILD:-}" ]; then cargo build --release --quiet --bin siger; fi
SIGER=$ROOT/target/release/siger
source load-tests/lib.sh

BACKEND=$(free_port)
start_nginx_backend "$BACKEND"

# Redis: master, replica, three sentinels (down after 1 s, failover timeout 3 s).
MASTER=$(free_port)
REPLICA=$(free_port)
redis_node() { # port [extra args…]
  local port=$1
  shift
  mkdir -p "$WORK/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/redis-$port" "$@" >/dev/null &
  PIDS+=($!)
}
redis_node "$MASTER"
MASTER_PID=$!
redis_node "$REPLICA" --replicaof 127.0.0.1 "$MASTER"
SENTINELS=()
for _ in 1 2 3; do
  port=$(free_port)
  mkdir -p "$WORK/sentinel-$port"
  cat > "$WORK/sentinel-$port/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
dir $WORK/sentinel-$port
sentinel monitor siger 127.0.0.1 $MASTER 2
sentinel down-after-milliseconds siger 1000
sentinel failover-timeout siger 3000
CONF
  redis-server "$WORK/sentinel-$port/sentinel.conf" --sentinel >/dev/null &
  PIDS+=($!)
  SENTINELS+=("\"127.0.0.1:$port\"")
done

# NATS: three JetStream nodes in one cluster, each with a monitoring port.
declare -a NATS_PORT NATS_MON NATS_PID
ROUTES=()
for i in 0 1 2; do ROUTES+=("nats://127.0.0.1:$(free_port)"); done
route_list=$(IFS=,; echo "${ROUTES[*]}")
for i in 0 1 2; do
  NATS_PORT[i]=$(free_port)
  NATS_MON[i]=$(free_port)
  mkdir -p "$WORK/nats-$i"
done
start_nats() { # index
  local i=$1
  nats-server -js -a 127.0.0.1 -p "${NATS_PORT[i]}" -m "${NATS_MON[i]}" -sd "$WORK/nats-$i" -n "n$i" \
    --cluster_name siger --cluster "${ROUTES[i]}" --routes "$route_list" >"$WORK/nats-$i.log" 2>&1 &
  NATS_PID[i]=$!
  PIDS+=($!)
}
for i in 0 1 2; do start_nats "$i"; done
NATS_URLS="\"nats://127.0.0.1:${NATS_PORT[0]}\", \"nats://127.0.0.1:${NATS_PORT[1]}\", \"nats://127.0.0.1:${NATS_PORT[2]}\""

SECRET="three-gateways-secret-0123456789abcdef"
declare -a GW_PORT GW_ADMIN
for g in 0 1 2; do
  GW_PORT[g]=$(free_port)
  GW_ADMIN[g]=$(free_port)
  cat > "$WORK/siger-$g.yaml" <<YAML
server: {threads: 1, pid_file: $WORK/siger-$g.pid, upgrade_sock: $WORK/siger-$g.sock, grace_period: 0s, graceful_shutdown_timeout: 1s}
listen: ["127.0.0.1:${GW_PORT[g]}"]
admin: {listen: "127.0.0.1:${GW_ADMIN[g]}"}
access_log: {enabled: false}
auth:
  jwt: {algorithms: [HS256], secret: "$SECRET"}
rate_limit:
  store: redis
  redis: {sentinels: [$(IFS=,; echo "${SENTINELS[*]}")], master_name: siger, timeout: 100ms}
  on_store_error: allow
nats:
  url: [$NATS_URLS]
jobs:
  subject: jobs.submitted
  stream: {name: JOBS, subjects: ["jobs.>"], replicas: 3, duplicate_window: 10m}
  ack_timeout: 2s
services:
  backend: {targets: ["127.0.0.1:$BACKEND"]}
routes:
  - {path: /limited, service: backend, auth: public, rate_limit: {requests: $LIMIT, per: 10s, key: "header:X-Client"}}
YAML
  "$SIGER" -t -c "$WORK/siger-$g.yaml" >&2
  "$SIGER" -c "$WORK/siger-$g.yaml" 2>"$WORK/siger-$g.log" &
  PIDS+=($!)
done
for g in 0 1 2; do wait_port "${GW_PORT[g]}"; done
for g in 0 1 2; do
  for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:${GW_ADMIN[g]}/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  wait_ready "${GW_ADMIN[g]}"
done
TOKEN=$("$SIGER" token -c "$WORK/siger-0.yaml" --sub loadtest --ttl 2h)
echo "three gateways on ${GW_PORT[*]}; redis master $MASTER, replica $REPLICA; nats ${NATS_PORT[*]}" >&2

# The JOBS stream as a node that knows its leader reports it (NATS monitoring endpoint): prints
# `<leader index> <messages>`.
jobs_stream() {
  local i
  for i in 0 1 2; do
    curl -fsS "http://127.0.0.1:${NATS_MON[i]}/jsz?streams=true" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
for a in d.get("account_details", []):
    for s in a.get("stream_detail", []):
        if s["name"] == "JOBS" and s.get("cluster", {}).get("leader"):
            print(s["cluster"]["leader"][1:], s["state"]["messages"]); sys.exit(0)
sys.exit(1)' && return 0
  done
  echo "? ?"
}

# The load generator: keep-alive HTTP/1.1 from threads, bounded in count and time.
cat > "$WORK/load.py" <<'PY'
import http.client, json, sys, threading, time
ports = [int(p) for p in sys.argv[2].split(",")]
mode = sys.argv[1]

def conn(port):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=10)

def send(conns, i, method, path, headers, body=None):
    port = ports[i % len(ports)]
    for attempt in range(2):
        c = conns.setdefault(port, conn(port))
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            return r.status, data
        except Exception:
            c.close()
            conns.pop(port, None)
    return 0, b""

if mode == "limits":
    clients, burst, prefix = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    admitted = [0] * clients
    other = [0] * clients
    def run(k):
        conns = {}
        for n in range(burst):
            s, _ = send(conns, n + k, "GET", "/limited/x", {"X-Client": prefix + str(k)})
            if s == 200: admitted[k] += 1
            elif s != 429: other[k] += 1
    ts = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    t0 = time.time()
    [t.start() for t in ts]; [t.join() for t in ts]
    print(json.dumps({"admitted": admitted, "other": sum(other), "seconds": time.time() - t0}))
elif mode == "jobs":
    total, token, deadline = int(sys.argv[3]), sys.argv[4], time.time() + float(sys.argv[5])
    lock = threading.Lock()
    stats = {"accepted": 0, "retried": 0, "gave_up": 0, "ids": [], "limited_failed": 0, "limited_ok": 0}
    def worker(w):
        conns = {}
        for j in range(w, total, 8):
            key = "job-%d" % j
            attempt = 0
            while True:
                s, body = send(conns, j + attempt, "POST", "/jobs/submit",
                               {"Authorization": "Bearer " + token, "Content-Type": "application/json",
                                "Idempotency-Key": key}, json.dumps({"n": j}))
                if s == 202:
                    with lock:
                        stats["accepted"] += 1; stats["ids"].append(json.loads(body)["job_id"])
                    break
                attempt += 1
                with lock: stats["retried"] += 1
                if time.time() > deadline:
                    with lock: stats["gave_up"] += 1
                    break
                time.sleep(0.1)
            # A limited request beside each job: limits keep working while nodes fail.
            s, _ = send(conns, j, "GET", "/limited/y", {"X-Client": "bg-%d" % (j % 1000)})
            with lock:
                if s in (200, 429): stats["limited_ok"] += 1
                else: stats["limited_failed"] += 1
    ts = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    t0 = time.time()
    [t.start() for t in ts]; [t.join() for t in ts]
    ids = stats.pop("ids")
    stats["distinct_job_ids"] = len(set(ids)); stats["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(stats))
PY
PORTS=$(IFS=,; echo "${GW_PORT[*]}")

echo "phase 1: $CLIENTS clients x $BURST requests over three gateways, limit $LIMIT per 10 s" >&2
limits_phase() { # client-prefix
  python3 "$WORK/load.py" limits "$PORTS" "$CLIENTS" "$BURST" "$1" > "$WORK/limits.json"
  python3 - "$WORK/limits.json" "$LIMIT" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); limit = int(sys.argv[2]); a = d["admitted"]
over = [x - limit for x in a]
print("limits: admitted per client min %d / median %d / max %d for a limit of %d; over-admission max %+d (%.1f%%), mean %+.2f; %d other statuses; %.1f s"
      % (min(a), sorted(a)[len(a) // 2], max(a), limit, max(over), 100.0 * max(over) / limit, sum(over) / len(over), d["other"], d["seconds"]))
PY
}
limits_phase before-

echo "phase 2: $JOBS jobs; the NATS stream leader and then the Redis master are killed meanwhile" >&2
python3 "$WORK/load.py" jobs "$PORTS" "$JOBS" "$TOKEN" 120 > "$WORK/jobs.json" &
LOAD=$!
sleep 2
leader=$(jobs_stream | awk '{print $1}')
[ "$leader" != "?" ] || leader=0
echo "killing NATS stream leader n$leader (SIGKILL)" >&2
kill -KILL "${NATS_PID[leader]}"
sleep 3
start_nats "$leader"
sleep 2
echo "killing the Redis master (SIGKILL)" >&2
kill -KILL "$MASTER_PID"
wait "$LOAD"
sleep 2
python3 - "$WORK/jobs.json" "$(jobs_stream | awk '{print $2}')" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); stored = sys.argv[2]
print("jobs: %d accepted (202), %s stored in the R3 stream, %d distinct job ids, %d submissions retried after a 503, %d gave up; %.1f s"
      % (d["accepted"], stored, d["distinct_job_ids"], d["retried"], d["gave_up"], d["seconds"]))
print("limited requests during the node losses: %d answered 200/429, %d failed" % (d["limited_ok"], d["limited_failed"]))
PY
node_of() { curl -fsS "http://127.0.0.1:${GW_ADMIN[$1]}/metrics" | awk -F'"' '/^siger_rate_limit_redis_node\{/ && / 1$/ {print $2}'; }
# Checks find the new master on their next try after a failure: nudge each gateway until all
# three use the replica (bounded).
for _ in $(seq 1 150); do
  for g in 0 1 2; do curl -s -o /dev/null -H "X-Client: probe" "http://127.0.0.1:${GW_PORT[g]}/limited/z"; done
  all=1
  for g in 0 1 2; do [ "$(node_of "$g")" = "127.0.0.1:$REPLICA" ] || all=0; done
  [ "$all" = 1 ] && break
  sleep 0.1
done
for g in 0 1 2; do
  echo "gateway $g: node in use $(node_of "$g"), $(curl -fsS "http://127.0.0.1:${GW_ADMIN[g]}/metrics" | awk '/^siger_rate_limit_store_errors_total/ {print $2}') store errors"
done
echo "phase 3: limits again on the promoted replica" >&2
limits_phase after-
