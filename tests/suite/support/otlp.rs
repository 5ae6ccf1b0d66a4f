//! A small OpenTelemetry collector for tests: the OTLP/HTTP trace receiver as the OTLP
//! specification describes it (protocol "HTTP/1.1 + binary protobuf"):
//!
//! - `POST /v1/traces` with `Content-Type: application/x-protobuf`, the body an
//!   `ExportTraceServiceRequest`, decoded with the official `opentelemetry-proto` types;
//!   answered `200` with an (empty, i.e. fully successful) `ExportTraceServiceResponse` in the
//!   same content type.
//! - A body that does not decode → `400`; another content type (JSON encoding, gzip) → `415`;
//!   another path → `404`; another method → `405`. Keep-alive connections are served until
//!   the client closes them.
//!
//! Control from tests: answer the next N exports with a status (e.g. 503), or report some spans
//! of each export rejected (`partial_success`, as a collector that drops spans does).
//!
//! Not implemented (Siger does not send them): gzip bodies, JSON encoding.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::http1;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A received span with its resource's `service.name`.
#[derive(Debug, Clone)]
pub struct Received {
    pub service_name: String,
    pub span: Span,
}

impl Received {
    pub fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }
    pub fn parent_span_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }
    /// A string or integer attribute, as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            AnyValue::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Shared {
    spans: Vec<Received>,
    /// Spans received in all (kept or not).
    count: usize,
    /// Keep only the count (benchmarks: no growing memory).
    count_only: bool,
    /// Answer this many exports with `fail_status` (nothing recorded).
    fail_next: usize,
    fail_status: u16,
    /// Spans of each accepted export reported rejected.
    reject: i64,
    /// Export requests answered 200.
    exports: usize,
}

/// The receiver; it serves until the test ends.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl OtlpReceiver {
    pub fn start() -> OtlpReceiver {
        Self::serve(TcpListener::bind("127.0.0.1:0").unwrap(), false)
    }

    /// On a given address, counting spans without keeping them (for benchmarks).
    pub fn start_on(addr: &str) -> OtlpReceiver {
        Self::serve(TcpListener::bind(addr).unwrap(), true)
    }

    fn serve(listener: TcpListener, count_only: bool) -> OtlpReceiver {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared { count_only, ..Shared::default() }));
        let s = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        OtlpReceiver { addr, shared }
    }

    /// `otlp_endpoint` for the gateway's config.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.shared.lock().unwrap().spans.clone()
    }

    /// Spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans().into_iter().filter(|s| s.trace_id() == trace_id).collect()
    }

    /// Spans received so far.
    pub fn span_count(&self) -> usize {
        self.shared.lock().unwrap().count
    }

    /// Answer the next `n` exports with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut shared = self.shared.lock().unwrap();
        (shared.fail_next, shared.fail_status) = (n, status);
    }

    /// Report `n` spans of every accepted export as rejected.
    pub fn reject_spans(&self, n: i64) {
        self.shared.lock().unwrap().reject = n;
    }

    /// Export requests accepted.
    pub fn exports(&self) -> usize {
        self.shared.lock().unwrap().exports
    }
}

/// The status to fail this export with, when the test asked for failures.
fn take_failure(shared: &Mutex<Shared>) -> Option<u16> {
    let mut shared = shared.lock().unwrap();
    (shared.fail_next > 0).then(|| {
        shared.fail_next -= 1;
        shared.fail_status
    })
}

fn serve(stream: TcpStream, shared: &Mutex<Shared>) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let request = match http1::read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    let _ =
                        writer.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
                return;
            }
        };
        let (method, path, body) = (request.method.as_str(), request.path.as_str(), &request.body);
        let lower = |name: &str| request.header(name).unwrap_or("").to_ascii_lowercase();
        let (content_type, encoding) = (lower("content-type"), lower("content-encoding"));
        let (status, answer) = if path != "/v1/traces" {
            (404, Vec::new())
        } else if method != "POST" {
            (405, Vec::new())
        } else if content_type != "application/x-protobuf" || !(encoding.is_empty() || encoding == "identity") {
            (415, Vec::new())
        } else if let Some(status) = take_failure(shared) {
            (status, Vec::new())
        } else {
            match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(request) => {
                    let mut shared = shared.lock().unwrap();
                    shared.exports += 1;
                    for resource_spans in request.resource_spans {
                        let service_name = resource_spans
                            .resource
                            .as_ref()
                            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                AnyValue::StringValue(s) => Some(s.clone()),
                                _ => None,
                            })
                            .unwrap_or_default();
                        for scope in resource_spans.scope_spans {
                            shared.count += scope.spans.len();
                            if shared.count_only {
                                continue;
                            }
                            for span in scope.spans {
                                shared.spans.push(Received { service_name: service_name.clone(), span });
                            }
                        }
                    }
                    let partial_success = (shared.reject > 0).then(|| ExportTracePartialSuccess {
                        rejected_spans: shared.reject,
                        error_message: "over the test's quota".into(),
                    });
                    (200, ExportTraceServiceResponse { partial_success }.encode_to_vec())
                }
                Err(_) => (400, Vec::new()),
            }
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&answer).is_err() || !request.keep_alive() {
            return;
        }
    }
}
