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
//! - `POST /__control/status/<code>` makes every answer but `/health` and `/__control/*` use
//!   that status from now on (`0` restores normal answers); `POST /__control/delay/<ms>` delays
//!   them; `GET /__control/served` → `{"served": n}`, the requests answered (control and
//!   health excluded) — tests tell a backend to fail and count what reached it
//! - `?respond_header=Name:Value` (repeatable) sets a response header on any answer
//!
//! Usage: `siger-echo --listen 127.0.0.1:0 --name b1 [--delay-ms N]`; prints `listening on <addr>` on stdout.
//! With `--tls-cert F --tls-key F` it serves HTTPS (HTTP/1.1, and HTTP/2 with `--h2`); with
//! `--client-ca F` it asks for a client certificate and reports its subject as `tls_client`.

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
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Echo {
    name: String,
    /// Added to every answer except `/health` (a uniformly slow backend).
    delay: Duration,
    /// `/__control/status`: a status every answer takes (0: none).
    forced_status: AtomicU16,
    /// `/__control/delay`: milliseconds added to every answer.
    forced_delay_ms: AtomicU64,
    /// Requests answered, control and health excluded.
    served: AtomicU64,
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

async fn control_status(State(echo): State<Arc<Echo>>, Path(code): Path<u16>) -> Response {
    echo.forced_status.store(code, Ordering::Relaxed);
    axum::Json(serde_json::json!({"status": code})).into_response()
}

async fn control_delay(State(echo): State<Arc<Echo>>, Path(ms): Path<u64>) -> Response {
    echo.forced_delay_ms.store(ms, Ordering::Relaxed);
    axum::Json(serde_json::json!({"delay_ms": ms})).into_response()
}

async fn control_served(State(echo): State<Arc<Echo>>) -> Response {
    axum::Json(serde_json::json!({"served": echo.served.load(Ordering::Relaxed)})).into_response()
}

/// Counts answered requests and applies what `/__control` asked for.
async fn misbehave(State(echo): State<Arc<Echo>>, req: Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    if path == "/health" || path.starts_with("/__control/") {
        return next.run(req).await;
    }
    echo.served.fetch_add(1, Ordering::Relaxed);
    let delay = echo.forced_delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let forced = echo.forced_status.load(Ordering::Relaxed);
    let extra: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("respond_header="))
        .filter_map(|h| {
            let h = h.replace("%20", " ");
            h.split_once(':').map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let mut resp = next.run(req).await;
    for (name, value) in extra {
        if let (Ok(n), Ok(v)) = (axum::http::HeaderName::try_from(name), axum::http::HeaderValue::try_from(value)) {
            resp.headers_mut().insert(n, v);
        }
    }
    if let Some(status) = StatusCode::from_u16(forced).ok().filter(|_| forced != 0) {
        *resp.status_mut() = status;
    }
    resp
}

/// The verified client certificate's subject of a TLS connection (a request extension).
#[derive(Clone)]
struct TlsClient(Option<String>);

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
    let tls_client = req.extensions().get::<TlsClient>().map(|c| c.0.clone());
    let version = format!("{:?}", req.version());
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
        "version": version,
        "tls": tls_client.is_some(),
        "tls_client": tls_client.flatten(),
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
    let state = Arc::new(Echo {
        name,
        delay,
        forced_status: AtomicU16::new(0),
        forced_delay_ms: AtomicU64::new(0),
        served: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/bytes/{n}", get(bytes))
        .route("/upload", any(upload))
        .route("/ws", get(ws))
        .route("/status/{code}", any(status))
        .route("/__control/status/{code}", axum::routing::post(control_status))
        .route("/__control/delay/{ms}", axum::routing::post(control_delay))
        .route("/__control/served", get(control_served))
        .fallback(echo)
        .layer(axum::middleware::from_fn_with_state(state.clone(), misbehave))
        .with_state(state);
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    match arg(&args, "--tls-cert") {
        None => axum::serve(listener, app).await,
        Some(cert) => {
            let key = arg(&args, "--tls-key").unwrap_or_else(|| cert.clone());
            let config =
                tls_config(&cert, &key, arg(&args, "--client-ca").as_deref(), args.iter().any(|a| a == "--h2"))?;
            serve_tls(listener, app, tokio_rustls::TlsAcceptor::from(Arc::new(config))).await
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
}

/// A rustls server config from PEM files; with a client CA, client certificates are asked
/// for (and verified) but not required, so the answer can say whether one came.
fn tls_config(cert: &str, key: &str, client_ca: Option<&str>, h2: bool) -> std::io::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).map_err(invalid)?.collect::<Result<_, _>>().map_err(invalid)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(invalid)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(invalid)? {
                roots.add(c.map_err(invalid)?).map_err(invalid)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(invalid)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(invalid)?;
    config.alpn_protocols = if h2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(config)
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    acceptor: tokio_rustls::TlsAcceptor,
) -> std::io::Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let subject = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|der| {
                x509_parser::parse_x509_certificate(der.as_ref()).ok().map(|(_, c)| c.subject().to_string())
            });
            let app = app.layer(axum::Extension(TlsClient(subject)));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
