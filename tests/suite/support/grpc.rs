//! A gRPC echo backend and client over HTTP/2 (the `h2` crate), in TLS (ALPN h2) or plain
//! prior-knowledge h2c — enough gRPC to prove what matters to a proxy: length-prefixed
//! messages in DATA frames and the call's outcome in trailers.
//!
//! Methods: `/echo.Echo/Unary` answers the request message; `/echo.Echo/Stream` answers it
//! three times, as three messages; anything else gets a trailers-only `grpc-status: 12`.
//! Every answer ends with the trailers `grpc-status: 0` and `x-echo-trailer: done`.
#![allow(dead_code)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A running echo backend (stops when dropped).
pub struct GrpcEcho {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for GrpcEcho {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_pair(
    cert: &Path,
    key: &Path,
) -> (Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>) {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap().map(|c| c.unwrap()).collect();
    (certs, rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap())
}

impl GrpcEcho {
    /// Serve over TLS with this certificate (ALPN `h2` only).
    pub fn start_tls(cert: &Path, key: &Path) -> GrpcEcho {
        let (certs, key) = load_pair(cert, key);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self::start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    /// Serve h2c (prior knowledge).
    pub fn start_plain() -> GrpcEcho {
        Self::start(None)
    }

    fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> GrpcEcho {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            let tls = tls.clone();
                            tokio::spawn(async move {
                                match tls {
                                    Some(acceptor) => {
                                        if let Ok(stream) = acceptor.accept(tcp).await {
                                            serve(stream).await;
                                        }
                                    }
                                    None => serve(tcp).await,
                                }
                            });
                        }
                    }
                }
            });
        });
        GrpcEcho { addr, stop: Some(stop), thread: Some(thread) }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S) {
    let Ok(mut conn) = h2::server::handshake(io).await else { return };
    while let Some(Ok((req, respond))) = conn.accept().await {
        tokio::spawn(answer(req, respond));
    }
}

async fn answer(req: http::Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let path = req.uri().path().to_string();
    let saw_te = req.headers().get("te").map(|v| v.to_str().unwrap_or("").to_string()).unwrap_or_default();
    let mut body = req.into_body();
    let mut received = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    let messages = decode(received.freeze());
    let copies = match path.as_str() {
        "/echo.Echo/Unary" => 1,
        "/echo.Echo/Stream" => 3,
        _ => {
            let head = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", "12")
                .header("grpc-message", "unknown method")
                .body(())
                .unwrap();
            let _ = respond.send_response(head, true);
            return;
        }
    };
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("x-saw-te", saw_te)
        .body(())
        .unwrap();
    let Ok(mut send) = respond.send_response(head, false) else { return };
    for message in &messages {
        for _ in 0..copies {
            // One DATA frame per message, as a streaming server sends them.
            if send.send_data(frame(message), false).is_err() {
                return;
            }
        }
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("x-echo-trailer", "done".parse().unwrap());
    let _ = send.send_trailers(trailers);
}

/// A gRPC length-prefixed message (uncompressed).
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.extend_from_slice(message);
    out.freeze()
}

/// Split a body into its length-prefixed messages.
pub fn decode(mut body: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = (&body[1..5]).get_u32() as usize;
        if body.len() < 5 + len {
            break;
        }
        out.push(body.slice(5..5 + len));
        body.advance(5 + len);
    }
    out
}

/// What a call returned.
#[derive(Debug)]
pub struct CallResult {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub messages: Vec<Bytes>,
    pub trailers: Option<http::HeaderMap>,
}

impl CallResult {
    /// `grpc-status` from the trailers, or from the headers of a trailers-only answer.
    pub fn grpc_status(&self) -> Option<String> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// Make one gRPC call to `addr` (`authority` as the `:authority`), over TLS trusting `ca` with
/// that server name, or over h2c when `ca` is `None`.
pub fn call(addr: SocketAddr, authority: &str, ca: Option<&Path>, method: &str, message: &[u8]) -> CallResult {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        match ca {
            Some(ca) => {
                use rustls::pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
                    roots.add(c.unwrap()).unwrap();
                }
                let mut config = rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"h2".to_vec()];
                let name =
                    rustls::pki_types::ServerName::try_from(authority.split(':').next().unwrap().to_string()).unwrap();
                let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
                exchange(stream, "https", authority, method, message).await
            }
            None => exchange(tcp, "http", authority, method, message).await,
        }
    })
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    scheme: &str,
    authority: &str,
    method: &str,
    message: &[u8],
) -> CallResult {
    let (mut client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("{scheme}://{authority}{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(req, false).unwrap();
    send.send_data(frame(message), true).unwrap();
    let response = response.await.unwrap();
    let (parts, mut body) = response.into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap();
    CallResult { status: parts.status.as_u16(), headers: parts.headers, messages: decode(data.freeze()), trailers }
}
