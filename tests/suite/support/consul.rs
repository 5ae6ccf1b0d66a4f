//! A fake Consul (agent + catalog in one process) for tests, implementing the part of Consul's
//! HTTP API that Siger relies on *as Consul documents it*, so tests exercise our client against
//! the documented behaviour rather than against itself:
//!
//! - `GET /v1/health/service/<name>`: entries `{Node, Service, Checks}` shaped like Consul's
//!   sample response; `passing` (only entries whose checks are all passing), repeatable `tag`
//!   (all must match), `dc` (another datacenter → 500 "No path to datacenter"); blocking
//!   semantics: with `index` > 0 the request is held while the service's index is ≤ `index`,
//!   for at most `wait` (default 5m, capped at 10m) plus a random extra of up to `wait/16`;
//!   `X-Consul-Index`, `X-Consul-KnownLeader`, `X-Consul-LastContact` headers. A service that
//!   does not exist answers `[]` with the catalog's index.
//! - `PUT /v1/agent/service/register` (PascalCase or snake_case keys; `Name` required, `ID`
//!   defaults to it; one `Check` with `HTTP`/`Interval`/`Timeout`/
//!   `DeregisterCriticalServiceAfter`/`Status`), `GET /v1/agent/service/<id>` (404 when
//!   unknown), `PUT /v1/agent/service/deregister/<id>`. HTTP checks run like Consul's: first
//!   run within one interval, then every interval; 2xx passing, 429 warning, else critical.
//!   A critical service is reaped after `DeregisterCriticalServiceAfter` (at least 1 minute).
//! - ACLs (when tokens are required): the token comes from `X-Consul-Token`, `?token=` or
//!   `Authorization: Bearer`; an unknown token → 403 "ACL not found"; no token = anonymous,
//!   which (default deny) sees no instances — the answer is `[]` with
//!   `X-Consul-Results-Filtered-By-ACLs: true` — and may not register (403).
//! - Wrong method on an agent endpoint → 405.
//!
//! Not implemented (Siger does not use them): `filter`, `near`, `node-meta`, consistency modes
//! (`stale`, `consistent`), hash-based blocking on agent endpoints, namespaces/partitions,
//! multiple checks per service, and real leader election (`fail_with(500)` stands in for it).
//!
//! Control from tests: register/deregister catalog instances, flip checks, change weights,
//! go down (connections refused, open ones cut) and come back on the same port, answer every
//! request with an error status, and inspect every request received.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::http1;
use super::ports::Reserved;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest `wait` Consul honours.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// `wait` when none is given.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// The agent's own node (where agent-registered services live).
pub const AGENT_NODE: &str = "agent-node";

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn params(&self, name: &str) -> Vec<&str> {
        self.query.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// An HTTP check run by the fake agent.
#[derive(Debug, Clone)]
struct HttpCheck {
    url: String,
    interval: Duration,
    timeout: Duration,
    deregister_after: Option<Duration>,
    next_run: Instant,
}

/// A service instance in the catalog.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub node: String,
    /// `Service.Address` ("" → clients use the node's address).
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub weight_passing: i64,
    pub weight_warning: i64,
    pub meta: BTreeMap<String, String>,
    /// Status of the instance's service check; `None` = no service check.
    pub check: Option<String>,
    critical_since: Option<Instant>,
    http_check: Option<HttpCheck>,
    local: bool,
    create_index: u64,
    modify_index: u64,
}

impl Instance {
    /// An instance of `name` with id `id` at `addr`, on node `node-1`, with a passing check.
    pub fn new(name: &str, id: &str, addr: SocketAddr) -> Instance {
        Instance {
            id: id.into(),
            name: name.into(),
            node: "node-1".into(),
            address: addr.ip().to_string(),
            port: addr.port(),
            tags: Vec::new(),
            weight_passing: 1,
            weight_warning: 1,
            meta: BTreeMap::new(),
            check: Some("passing".into()),
            critical_since: None,
            http_check: None,
            local: false,
            create_index: 0,
            modify_index: 0,
        }
    }

    pub fn tags(mut self, tags: &[&str]) -> Instance {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }

    pub fn weight(mut self, passing: i64) -> Instance {
        self.weight_passing = passing;
        self
    }

    /// Leave `Service.Address` empty so clients must use `Node.Address`.
    pub fn node_address(mut self, node: &str) -> Instance {
        self.address = String::new();
        self.node = node.into();
        self
    }

    pub fn status(mut self, status: &str) -> Instance {
        self.check = Some(status.into());
        self
    }

    fn passing(&self, nodes: &BTreeMap<String, Node>) -> bool {
        let serf = nodes.get(&self.node).map_or("critical", |n| n.serf.as_str());
        serf == "passing" && self.check.as_deref().is_none_or(|s| s == "passing")
    }
}

#[derive(Debug, Clone)]
struct Node {
    address: String,
    serf: String,
}

struct State {
    raft_index: u64,
    /// Per service name, the index of its last change (kept after deletion, like Consul's
    /// tombstones, so a blocking query wakes when the last instance goes).
    service_index: HashMap<String, u64>,
    nodes: BTreeMap<String, Node>,
    instances: BTreeMap<String, Instance>,
    datacenter: String,
    tokens: Option<HashSet<String>>,
    down: bool,
    fail_status: Option<u16>,
    log: Vec<Recorded>,
    stopped: bool,
    /// Blocking queries being held, per service.
    waiting: HashMap<String, usize>,
}

impl State {
    fn bump(&mut self, service: &str) {
        self.raft_index += 1;
        self.service_index.insert(service.to_string(), self.raft_index);
    }

    fn index_of(&self, service: &str) -> u64 {
        self.service_index.get(service).copied().unwrap_or(self.raft_index)
    }
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    addr: SocketAddr,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fake Consul. Stops on drop.
pub struct FakeConsul {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
    /// Its port, held while it is down so that it can come back there.
    _port: Reserved,
}

fn rand_unit() -> f64 {
    rand::random::<f64>()
}

impl FakeConsul {
    /// Start on an ephemeral 127.0.0.1 port, datacenter `dc1`, with one node `node-1` and the
    /// agent's node, both at 127.0.0.1.
    pub fn start() -> FakeConsul {
        let port = Reserved::new();
        let addr = port.addr();
        let listener = TcpListener::bind(addr).unwrap();
        let mut nodes = BTreeMap::new();
        for name in ["node-1", AGENT_NODE] {
            nodes.insert(name.to_string(), Node { address: "127.0.0.1".into(), serf: "passing".into() });
        }
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                raft_index: 10,
                service_index: HashMap::new(),
                nodes,
                instances: BTreeMap::new(),
                datacenter: "dc1".into(),
                tokens: None,
                down: false,
                fail_status: None,
                log: Vec::new(),
                stopped: false,
                waiting: HashMap::new(),
            }),
            changed: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            addr,
        });
        let accept = inner.clone();
        std::thread::spawn(move || accept_loop(accept, listener));
        let checker = inner.clone();
        std::thread::spawn(move || check_loop(checker));
        FakeConsul { inner, addr, _port: port }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn write(&self, f: impl FnOnce(&mut State)) {
        let mut st = self.inner.lock();
        f(&mut st);
        drop(st);
        self.inner.changed.notify_all();
    }

    /// Add (or replace) a catalog instance.
    pub fn register(&self, mut instance: Instance) {
        self.write(|st| {
            st.raft_index += 1;
            instance.create_index = st.instances.get(&instance.id).map_or(st.raft_index, |i| i.create_index);
            instance.modify_index = st.raft_index;
            st.service_index.insert(instance.name.clone(), st.raft_index);
            st.instances.insert(instance.id.clone(), instance);
        });
    }

    /// Remove an instance.
    pub fn deregister(&self, id: &str) {
        self.write(|st| {
            if let Some(i) = st.instances.remove(id) {
                st.bump(&i.name);
            }
        });
    }

    /// Set an instance's service check status (`passing`, `warning`, `critical`).
    pub fn set_check(&self, id: &str, status: &str) {
        self.write(|st| {
            let Some(i) = st.instances.get_mut(id) else { return };
            i.check = Some(status.into());
            i.critical_since = (status == "critical").then(Instant::now);
            let name = i.name.clone();
            st.bump(&name);
            let idx = st.raft_index;
            if let Some(i) = st.instances.get_mut(id) {
                i.modify_index = idx;
            }
        });
    }

    /// Change an instance's `Weights.Passing`.
    pub fn set_weight(&self, id: &str, passing: i64) {
        self.write(|st| {
            let Some(i) = st.instances.get_mut(id) else { return };
            i.weight_passing = passing;
            let name = i.name.clone();
            st.bump(&name);
        });
    }

    /// An idempotent write: the service's index moves, its data does not (Consul's blocking
    /// queries may return without a change, e.g. after anti-entropy syncs).
    pub fn touch(&self, service: &str) {
        self.write(|st| st.bump(service));
    }

    /// Lower every index (like a snapshot restore): clients must notice it went backwards.
    pub fn rewind_index(&self, to: u64) {
        self.write(|st| {
            st.raft_index = to;
            for v in st.service_index.values_mut() {
                *v = to;
            }
        });
    }

    /// Require ACL tokens (default deny for anonymous requests).
    pub fn require_tokens(&self, tokens: &[&str]) {
        self.write(|st| st.tokens = Some(tokens.iter().map(|t| t.to_string()).collect()));
    }

    /// Stop accepting and cut every open connection (like a crashed or stopped agent).
    pub fn go_down(&self) {
        self.write(|st| st.down = true);
        for (_, conn) in self.inner.conns.lock().unwrap().drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// Listen again on the same address (state is kept, like an agent restart with its data).
    pub fn come_back(&self) {
        self.write(|st| st.down = false);
        let ok = super::eventually(Duration::from_secs(5), || TcpStream::connect(self.addr).is_ok());
        assert!(ok, "fake consul did not come back on {}", self.addr);
    }

    /// Answer every request with this status (e.g. 500 "No cluster leader"), or normally again.
    pub fn fail_with(&self, status: Option<u16>) {
        self.write(|st| st.fail_status = status);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().log.clone()
    }

    /// `GET /v1/health/service/<name>` requests received.
    pub fn health_queries(&self, service: &str) -> Vec<Recorded> {
        let path = format!("/v1/health/service/{service}");
        self.requests().into_iter().filter(|r| r.method == "GET" && r.path == path).collect()
    }

    /// A registered instance by id (catalog or agent-local).
    pub fn instance(&self, id: &str) -> Option<Instance> {
        self.inner.lock().instances.get(id).cloned()
    }

    /// Current raft index.
    pub fn index(&self) -> u64 {
        self.inner.lock().raft_index
    }

    /// Blocking queries on `service` being held now (waiting for a change or their `wait`).
    pub fn waiting(&self, service: &str) -> usize {
        self.inner.lock().waiting.get(service).copied().unwrap_or(0)
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.write(|st| {
            st.stopped = true;
            st.down = true;
        });
        for (_, conn) in self.inner.conns.lock().unwrap().drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut listener = Some(listener);
    loop {
        let (down, stopped) = {
            let st = inner.lock();
            (st.down, st.stopped)
        };
        if stopped {
            return;
        }
        if down {
            listener = None;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if listener.is_none() {
            // std sets SO_REUSEADDR on Unix, so the old port can be bound again at once.
            match TcpListener::bind(inner.addr) {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some(l) = listener.as_ref() else { continue };
        l.set_nonblocking(true).unwrap();
        match l.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
                if let Ok(clone) = stream.try_clone() {
                    inner.conns.lock().unwrap().insert(id, clone);
                }
                let conn = inner.clone();
                std::thread::spawn(move || {
                    serve_connection(&conn, stream);
                    conn.conns.lock().unwrap().remove(&id);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Runs due HTTP checks and reaps services critical for too long.
fn check_loop(inner: Arc<Inner>) {
    let client = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let due: Vec<(String, HttpCheck)> = {
            let mut st = inner.lock();
            if st.stopped {
                return;
            }
            let now = Instant::now();
            // Reap first (Consul: at least one minute critical).
            let reap: Vec<String> = st
                .instances
                .values()
                .filter(|i| match (&i.http_check, i.critical_since) {
                    (Some(HttpCheck { deregister_after: Some(after), .. }), Some(since)) => {
                        now.duration_since(since) >= (*after).max(Duration::from_secs(60))
                    }
                    _ => false,
                })
                .map(|i| i.id.clone())
                .collect();
            for id in reap {
                if let Some(i) = st.instances.remove(&id) {
                    st.bump(&i.name);
                }
            }
            let mut due = Vec::new();
            for i in st.instances.values_mut() {
                if let Some(c) = i.http_check.as_mut().filter(|c| c.next_run <= now) {
                    c.next_run = now + c.interval;
                    due.push((i.id.clone(), c.clone()));
                }
            }
            due
        };
        if due.is_empty() {
            continue;
        }
        for (id, check) in due {
            let status = match client.get(&check.url).timeout(check.timeout).send() {
                Ok(r) if r.status().is_success() => "passing",
                Ok(r) if r.status().as_u16() == 429 => "warning",
                _ => "critical",
            };
            let mut st = inner.lock();
            let Some(i) = st.instances.get_mut(&id) else { continue };
            if i.check.as_deref() != Some(status) {
                i.check = Some(status.into());
                i.critical_since = (status == "critical").then(Instant::now);
                let name = i.name.clone();
                st.bump(&name);
            }
        }
        inner.changed.notify_all();
    }
}

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn json(status: u16, value: &Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(value).unwrap(),
        }
    }
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The next request on the connection; `None` when it ends or sends what HTTP/1 cannot frame
/// (the connection is then closed).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let request = http1::read_request(reader).ok()??;
    let query = request
        .query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    Some(Request {
        method: request.method.clone(),
        path: percent_decode(&request.path, false),
        query,
        close: !request.keep_alive(),
        headers: request.headers,
        body: request.body,
    })
}

fn serve_connection(inner: &Inner, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader) {
        let Some(resp) = handle(inner, &req) else { return };
        let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
        for (k, v) in &resp.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
        if req.close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&resp.body);
        if writer.write_all(&bytes).is_err() || req.close {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// A Go duration (`10s`, `5m`, `1500ms`, `1m30s`).
fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ns" => value / 1e9,
            "us" | "µs" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(secs);
    }
    Some(total)
}

enum Caller {
    /// ACLs off, or a valid token.
    Allowed,
    Anonymous,
}

fn handle(inner: &Inner, req: &Request) -> Option<Response> {
    let caller = {
        let mut st = inner.lock();
        if st.down {
            return None;
        }
        st.log.push(Recorded {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            body: req.body.clone(),
            at: Instant::now(),
        });
        if let Some(status) = st.fail_status {
            return Some(Response::text(status, "No cluster leader"));
        }
        let header = |n: &str| req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
        let token = header("X-Consul-Token")
            .or_else(|| req.query.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone()))
            .or_else(|| header("Authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string)))
            .filter(|t| !t.is_empty());
        match (&st.tokens, token) {
            (None, _) => Caller::Allowed,
            (Some(_), None) => Caller::Anonymous,
            (Some(valid), Some(t)) if valid.contains(&t) => Caller::Allowed,
            (Some(_), Some(_)) => return Some(Response::text(403, "ACL not found")),
        }
    };
    let path = req.path.as_str();
    if let Some(service) = path.strip_prefix("/v1/health/service/") {
        if req.method != "GET" {
            return Some(Response::text(405, &format!("method {} not allowed", req.method)));
        }
        return health_service(inner, service, req, matches!(caller, Caller::Anonymous));
    }
    if path == "/v1/agent/service/register" {
        if req.method != "PUT" {
            return Some(Response::text(405, &format!("method {} not allowed", req.method)));
        }
        if matches!(caller, Caller::Anonymous) {
            return Some(Response::text(403, "Permission denied: anonymous token lacks permission 'service:write'"));
        }
        return Some(agent_register(inner, &req.body));
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        if req.method != "PUT" {
            return Some(Response::text(405, &format!("method {} not allowed", req.method)));
        }
        if matches!(caller, Caller::Anonymous) {
            return Some(Response::text(403, "Permission denied: anonymous token lacks permission 'service:write'"));
        }
        let mut st = inner.lock();
        if st.instances.get(id).is_some_and(|i| i.local) {
            if let Some(i) = st.instances.remove(id) {
                st.bump(&i.name);
            }
        }
        drop(st);
        inner.changed.notify_all();
        return Some(Response { status: 200, headers: Vec::new(), body: Vec::new() });
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/") {
        if req.method != "GET" {
            return Some(Response::text(405, &format!("method {} not allowed", req.method)));
        }
        let st = inner.lock();
        let Some(i) = st.instances.get(id).filter(|i| i.local) else {
            return Some(Response::text(404, &format!("unknown service ID: {id}")));
        };
        if matches!(caller, Caller::Anonymous) {
            return Some(Response::text(403, "Permission denied: anonymous token lacks permission 'service:read'"));
        }
        return Some(Response::json(200, &agent_service_json(i, &st)));
    }
    Some(Response::text(404, "Invalid URL path: not a recognized HTTP API endpoint"))
}

fn agent_service_json(i: &Instance, st: &State) -> Value {
    json!({
        "Kind": "",
        "ID": i.id,
        "Service": i.name,
        "Tags": i.tags,
        "Meta": i.meta,
        "Port": i.port,
        "Address": i.address,
        "TaggedAddresses": {},
        "Weights": {"Passing": i.weight_passing, "Warning": i.weight_warning},
        "EnableTagOverride": false,
        "ContentHash": format!("{:016x}", i.modify_index),
        "Datacenter": st.datacenter,
    })
}

fn entry_json(i: &Instance, st: &State) -> Value {
    let node = st.nodes.get(&i.node).cloned().unwrap_or(Node { address: String::new(), serf: "critical".into() });
    let check = |id: &str, name: &str, status: &str, service_id: &str, service_name: &str, tags: &[String]| {
        json!({
            "Node": i.node, "CheckID": id, "Name": name, "Status": status, "Notes": "", "Output": "",
            "ServiceID": service_id, "ServiceName": service_name, "ServiceTags": tags, "Type": "",
            "Namespace": "default", "CreateIndex": i.create_index, "ModifyIndex": i.modify_index,
        })
    };
    let mut checks = vec![check("serfHealth", "Serf Health Status", &node.serf, "", "", &[])];
    if let Some(status) = &i.check {
        let kind = if i.http_check.is_some() { "http" } else { "ttl" };
        let mut c = check(
            &format!("service:{}", i.id),
            &format!("Service '{}' check", i.name),
            status,
            &i.id,
            &i.name,
            &i.tags,
        );
        c["Type"] = json!(kind);
        checks.push(c);
    }
    json!({
        "Node": {
            "ID": format!("00000000-0000-0000-0000-{:012x}", i.node.len()),
            "Node": i.node,
            "Address": node.address,
            "Datacenter": st.datacenter,
            "TaggedAddresses": {"lan": node.address, "wan": node.address},
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": 5, "ModifyIndex": 5,
        },
        "Service": {
            "ID": i.id,
            "Service": i.name,
            "Tags": if i.tags.is_empty() { Value::Null } else { json!(i.tags) },
            "Address": i.address,
            "Meta": i.meta,
            "Port": i.port,
            "Weights": {"Passing": i.weight_passing, "Warning": i.weight_warning},
            "EnableTagOverride": false,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "Namespace": "default",
            "CreateIndex": i.create_index,
            "ModifyIndex": i.modify_index,
        },
        "Checks": checks,
    })
}

fn health_service(inner: &Inner, service: &str, req: &Request, anonymous: bool) -> Option<Response> {
    let param = |n: &str| req.query.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let wait = param("wait").map(parse_go_duration);
    let wait = match wait {
        Some(None) => return Some(Response::text(400, "Invalid wait time")),
        Some(Some(w)) => w.min(MAX_WAIT),
        None => DEFAULT_WAIT,
    };
    let index: u64 = match param("index").map(str::parse) {
        Some(Ok(i)) => i,
        Some(Err(_)) => return Some(Response::text(400, "Invalid index")),
        None => 0,
    };
    let passing = param("passing").is_some_and(|v| v != "false" && v != "0");
    let tags: Vec<&str> = req.query.iter().filter(|(k, _)| k == "tag").map(|(_, v)| v.as_str()).collect();
    let deadline = Instant::now() + wait + wait.mul_f64(rand_unit() / 16.0);
    let mut st = inner.lock();
    if let Some(dc) = param("dc").filter(|dc| !dc.is_empty()) {
        if dc != st.datacenter {
            return Some(Response::text(500, "No path to datacenter"));
        }
    }
    if index > 0 {
        *st.waiting.entry(service.to_string()).or_default() += 1;
        let held = loop {
            if st.down {
                break false;
            }
            let now = Instant::now();
            if st.index_of(service) > index || now >= deadline {
                break true;
            }
            st = inner.changed.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        };
        *st.waiting.entry(service.to_string()).or_default() -= 1;
        if !held {
            return None;
        }
    }
    let matching: Vec<&Instance> = st
        .instances
        .values()
        .filter(|i| i.name == service)
        .filter(|i| tags.iter().all(|t| i.tags.iter().any(|it| it == t)))
        .filter(|i| !passing || i.passing(&st.nodes))
        .collect();
    let filtered = anonymous && !matching.is_empty();
    let entries: Vec<Value> =
        if anonymous { Vec::new() } else { matching.iter().map(|i| entry_json(i, &st)).collect() };
    let mut resp = Response::json(200, &Value::Array(entries));
    resp.headers.push(("X-Consul-Index".into(), st.index_of(service).to_string()));
    resp.headers.push(("X-Consul-KnownLeader".into(), "true".into()));
    resp.headers.push(("X-Consul-LastContact".into(), "0".into()));
    resp.headers.push(("X-Consul-Effective-Consistency".into(), "leader".into()));
    if filtered {
        resp.headers.push(("X-Consul-Results-Filtered-By-ACLs".into(), "true".into()));
    }
    Some(resp)
}

/// A key of a registration body in either spelling Consul accepts (`DeregisterCriticalServiceAfter`
/// or `deregister_critical_service_after`).
fn field<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    let want: String = name.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect();
    obj.as_object()?.iter().find_map(|(k, v)| {
        let key: String = k.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect();
        (key == want).then_some(v)
    })
}

fn agent_register(inner: &Inner, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Response::text(400, "Request decode failed: invalid JSON");
    };
    let Some(name) = field(&v, "Name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return Response::text(400, "Invalid Service Meta: missing service name");
    };
    let id = field(&v, "ID").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or(name).to_string();
    let str_list = |key: &str| -> Vec<String> {
        field(&v, key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut instance = Instance {
        id: id.clone(),
        name: name.to_string(),
        node: AGENT_NODE.into(),
        address: field(&v, "Address").and_then(Value::as_str).unwrap_or("").to_string(),
        port: field(&v, "Port").and_then(Value::as_u64).unwrap_or(0) as u16,
        tags: str_list("Tags"),
        weight_passing: field(&v, "Weights").and_then(|w| field(w, "Passing")).and_then(Value::as_i64).unwrap_or(1),
        weight_warning: field(&v, "Weights").and_then(|w| field(w, "Warning")).and_then(Value::as_i64).unwrap_or(1),
        meta: field(&v, "Meta")
            .and_then(Value::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
            .unwrap_or_default(),
        check: None,
        critical_since: None,
        http_check: None,
        local: true,
        create_index: 0,
        modify_index: 0,
    };
    if instance.weight_passing < 1 {
        return Response::text(400, "Invalid Weights: Passing must be greater than 0");
    }
    if let Some(check) = field(&v, "Check").filter(|c| c.is_object()) {
        let dur = |key: &str| field(check, key).and_then(Value::as_str).and_then(parse_go_duration);
        let status = field(check, "Status").and_then(Value::as_str).unwrap_or("critical").to_string();
        if let Some(url) = field(check, "HTTP").and_then(Value::as_str) {
            let Some(interval) = dur("Interval") else {
                return Response::text(400, "Invalid check: HTTP checks require an interval");
            };
            let first = interval.mul_f64(rand_unit());
            instance.http_check = Some(HttpCheck {
                url: url.to_string(),
                interval,
                timeout: dur("Timeout").unwrap_or(Duration::from_secs(10)),
                deregister_after: dur("DeregisterCriticalServiceAfter"),
                next_run: Instant::now() + first,
            });
        }
        instance.critical_since = (status == "critical").then(Instant::now);
        instance.check = Some(status);
    }
    let mut st = inner.lock();
    st.raft_index += 1;
    instance.create_index = st.instances.get(&id).map_or(st.raft_index, |i| i.create_index);
    instance.modify_index = st.raft_index;
    let index = st.raft_index;
    st.service_index.insert(instance.name.clone(), index);
    st.instances.insert(id, instance);
    drop(st);
    inner.changed.notify_all();
    Response { status: 200, headers: Vec::new(), body: Vec::new() }
}
