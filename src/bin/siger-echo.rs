//! siger-echo: the demo and test backend. Answers JSON describing what it received, so a client
//! can see exactly what the gateway forwarded (method, raw path, headers, body size).
//!
//! Endpoints:
//! - `GET /health` → `{"status":"ok"}`
//! - `/bytes/<n>` → `n` bytes of a deterministic pattern (byte i = (i·31 + 7) mod 256), streamed
//! - `/upload` (any method) → `{"bytes": n, "sha256": hex}` of the streamed request body
//! - `/ws` → WebSocket echo
//! - `/status/<code>` → that status with the echo body
//! - anything else → echo; `?delay_ms=N` delays the answer, `?fixed` returns a tiny fixed body
//!
//! Usage: `siger-echo --listen 127.0.0.1:0 --name b1 [--delay-ms N]`; prints `listening on <addr>` on stdout.

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

struct Echo {
    name: String,
    /// Added to every answer except `/health` (a uniformly slow backend).
    delay: Duration,
}

/// The byte at offset `i` of `/bytes/<n>` (tests recompute it to check integrity).
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7) % 256) as u8
}

async fn health() -> impl IntoResponse {
    ([("content-type", "application/json")], "{\"status\":\"ok\"}\n")
}

async fn bytes(Path(n): Path<u64>) -> Response {
    const CHUNK: u64 = 64 * 1024;
    let stream = futures::stream::unfold(0u64, move |offset| async move {
        if offset >= n {
            return None;
        }
        let len = CHUNK.min(n - offset);
        let chunk: Vec<u8> = (offset..offset + len).map(pattern).collect();
        Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), offset + len))
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

async fn upload(State(echo): State<Arc<Echo>>, req: Request) -> Response {
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut stream = req.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                total += c.len() as u64;
                hasher.update(&c);
            }
            Err(e) => return (StatusCode::BAD_REQUEST, format!("body error: {e}\n")).into_response(),
        }
    }
    let body = serde_json::json!({"backend": echo.name, "bytes": total, "sha256": hex::encode(hasher.finalize())});
    axum::Json(body).into_response()
}

async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            let reply = match msg {
                Message::Text(t) => Message::Text(t),
                Message::Binary(b) => Message::Binary(b),
                Message::Close(_) => break,
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}

async fn echo(State(echo): State<Arc<Echo>>, req: Request) -> Response {
    echo_with_status(echo, req, StatusCode::OK).await
}

async fn status(State(echo): State<Arc<Echo>>, Path(code): Path<u16>, req: Request) -> Response {
    echo_with_status(echo, req, StatusCode::from_u16(code).unwrap_or(StatusCode::OK)).await
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

async fn echo_with_status(echo: Arc<Echo>, req: Request, status: StatusCode) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    if !echo.delay.is_zero() {
        tokio::time::sleep(echo.delay).await;
    }
    if let Some(ms) = query_param(&query, "delay_ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if query_param(&query, "fixed").is_some() {
        return (status, [("content-type", "text/plain")], "ok\n").into_response();
    }
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let path = req.uri().path().to_string();
    let headers = header_map(req.headers());
    let body = axum::body::to_bytes(req.into_body(), 16 << 20).await.unwrap_or_default();
    let value = serde_json::json!({
        "backend": echo.name,
        "method": method,
        "target": target,
        "path": path,
        "query": query,
        "headers": headers,
        "body_bytes": body.len(),
        "body": String::from_utf8_lossy(&body[..body.len().min(4096)]),
    });
    (status, axum::Json(value)).into_response()
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        out.entry(k.as_str().to_string()).or_default().push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    out
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: siger-echo [--listen 127.0.0.1:0] [--name NAME] [--delay-ms N]");
        return Ok(());
    }
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let name = arg(&args, "--name").unwrap_or_else(|| "echo".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    let delay = Duration::from_millis(arg(&args, "--delay-ms").and_then(|d| d.parse().ok()).unwrap_or(0));
    let state = Arc::new(Echo { name, delay });
    let app = Router::new()
        .route("/health", get(health))
        .route("/bytes/{n}", get(bytes))
        .route("/upload", any(upload))
        .route("/ws", get(ws))
        .route("/status/{code}", any(status))
        .fallback(echo)
        .with_state(state);
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    axum::serve(listener, app).await
}
