//! JWT helpers for tests: the fixture keys (tests/fixtures/jwt, made by scripts/gen-test-keys),
//! token signing, and a tiny JWKS HTTP server whose answers a test can change.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::http1;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The HMAC secret of test configs (≥ 32 bytes, as the config demands).
pub const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(name)
}

pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims for `sub` with `roles`, issuer `siger`, audience `api`, valid for 10 minutes.
pub fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({"sub": sub, "roles": roles, "iss": "siger", "aud": "api", "iat": now(), "exp": now() + 600})
}

/// HS256 with [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// Sign with a fixture private key (`rsa`, `ec1`, `ec2`, `ed`), optionally naming a `kid`.
pub fn sign(alg: Algorithm, key: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = std::fs::read(fixture(&format!("{key}.key.pem"))).unwrap();
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The `auth.jwt` section used by most tests (HS256), with `extra` lines appended (4-space indent).
pub fn hs_auth(extra: &str) -> String {
    format!(
        "auth:\n  jwt:\n    algorithms: [HS256]\n    secret: \"{SECRET}\"\n    issuer: siger\n    audience: api\n    leeway: 5s\n    roles_claim: roles\n    forward: {{sub: X-User-Id, roles: X-User-Roles}}\n{extra}"
    )
}

/// A JWKS endpoint on 127.0.0.1 answering `GET /jwks` with the current document (or an error
/// status), counting requests.
pub struct JwksServer {
    pub addr: SocketAddr,
    pub fetches: Arc<AtomicU32>,
    body: Arc<Mutex<String>>,
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl JwksServer {
    pub fn start(body: &str) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = JwksServer {
            addr,
            fetches: Arc::new(AtomicU32::new(0)),
            body: Arc::new(Mutex::new(body.to_string())),
            status: Arc::new(AtomicU16::new(200)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (fetches, body, status, stop) =
            (server.fetches.clone(), server.body.clone(), server.status.clone(), server.stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                // Answered whatever was asked (one request, then the connection closes).
                let _ = http1::read_request(&mut BufReader::new(&mut stream));
                fetches.fetch_add(1, Ordering::SeqCst);
                let code = status.load(Ordering::SeqCst);
                let text = body.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    pub fn set_body(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_string();
    }

    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    pub fn fetch_count(&self) -> u32 {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}
