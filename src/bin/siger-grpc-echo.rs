//! siger-grpc-echo: the gRPC test backend for transcoding and gRPC-Web. It serves
//! `shop.v1.Orders` (tests/fixtures/grpc/shop.proto) from a descriptor set at run time — tonic's
//! server, framing and status handling with messages as prost-reflect `DynamicMessage`s, no
//! generated code — so what the gateway sends is checked by an implementation that is not ours.
//!
//! Behaviour by method: `GetOrder`/`Probe` answer an order with the request's id and shop (id
//! `missing` → NOT_FOUND); `ListOrders` echoes its request in `request`; `CreateOrder` answers the
//! order with the request's shop; `UpdateOrder` the order with `fields` = `update_mask`;
//! `CancelOrder` a CANCELLED order with the reason as `note`; `GetOrderStatus` a SHIPPED status;
//! `GetFile`/`GetItem` echo the path/name; `WatchOrders` streams `count` events, then ends with
//! `fail_with`; `UploadOrders` counts; `Chat` echoes; `Fail` answers the asked status (with a
//! google.rpc.BadRequest in grpc-status-details-bin when `with_details`); `Echo` answers the
//! payload (or `reply_size` bytes), text, order, request metadata and `grpc-timeout`.
//!
//! Usage: `siger-grpc-echo --descriptors shop.pb [--listen 127.0.0.1:0]`; prints
//! `listening on <addr>` on stdout.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, Value};
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{
    ClientStreamingService, Grpc, NamedService, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::{Request, Response, Status, Streaming};

const SERVICE: &str = "shop.v1.Orders";
/// Larger than the gateway's default limit, so the gateway's limit is the one tests meet.
const MAX_MESSAGE: usize = 16 << 20;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type MessageStream = Pin<Box<dyn Stream<Item = Result<DynamicMessage, Status>> + Send>>;

/// Encodes and decodes `DynamicMessage`s of one method.
#[derive(Clone)]
struct DynamicCodec {
    input: MessageDescriptor,
}

struct DynamicEncoder;
struct DynamicDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.input.clone())
    }
}

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src).map(Some).map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

/// The service: routes a request's path to its method.
#[derive(Clone)]
struct Orders {
    pool: DescriptorPool,
}

impl NamedService for Orders {
    const NAME: &'static str = SERVICE;
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Orders {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let name = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
        let method = self.pool.get_service_by_name(SERVICE).and_then(|s| s.methods().find(|m| m.name() == name));
        let Some(method) = method else {
            return Box::pin(async move { Ok(Status::unimplemented(format!("no method {name}")).into_http()) });
        };
        let codec = DynamicCodec { input: method.input() };
        let mut grpc = Grpc::new(codec).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
        let handler = Handler { method: method.clone() };
        Box::pin(async move {
            Ok(match (method.is_client_streaming(), method.is_server_streaming()) {
                (false, false) => grpc.unary(handler, req).await,
                (false, true) => grpc.server_streaming(handler, req).await,
                (true, false) => grpc.client_streaming(handler, req).await,
                (true, true) => grpc.streaming(handler, req).await,
            })
        })
    }
}

/// One method's behaviour.
#[derive(Clone)]
struct Handler {
    method: MethodDescriptor,
}

impl Handler {
    fn message(&self, name: &str, value: serde_json::Value) -> Result<DynamicMessage, Status> {
        let desc = self
            .method
            .parent_pool()
            .get_message_by_name(name)
            .ok_or_else(|| Status::internal(format!("no type {name}")))?;
        DynamicMessage::deserialize(desc, value).map_err(|e| Status::internal(e.to_string()))
    }

    fn output(&self, value: serde_json::Value) -> Result<DynamicMessage, Status> {
        self.message(self.method.output().full_name(), value)
    }

    fn unary(&self, req: Request<DynamicMessage>) -> Result<DynamicMessage, Status> {
        let metadata = req.metadata().clone().into_headers();
        let m = req.into_inner();
        let text = |field: &str| match m.get_field_by_name(field).as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let as_json = |field: &str| {
            m.get_field_by_name(field)
                .and_then(|v| match v.as_ref() {
                    Value::Message(inner) => serde_json::to_value(inner).ok(),
                    _ => None,
                })
                .unwrap_or(json!({}))
        };
        match self.method.name() {
            "GetOrder" | "Probe" if text("id") == "missing" => {
                Err(Status::not_found(format!("order {} not found", text("id"))))
            }
            "GetOrder" | "Probe" => self.output(json!({"id": text("id"), "shop": text("shop"), "status": "PENDING"})),
            "GetItem" => self.output(json!({"name": text("name")})),
            "GetFile" => self.output(json!({"path": text("path")})),
            "ListOrders" => {
                let request = serde_json::to_value(&m).map_err(|e| Status::internal(e.to_string()))?;
                self.output(json!({"orders": [{"id": "o1"}], "nextPageToken": "next", "request": request}))
            }
            "CreateOrder" => {
                let mut order = as_json("order");
                order["shop"] = json!(text("shop"));
                self.output(order)
            }
            "UpdateOrder" => {
                let mut order = as_json("order");
                if let Some(mask) = m.get_field_by_name("update_mask").and_then(|v| match v.as_ref() {
                    Value::Message(mask) => serde_json::to_value(mask).ok(),
                    _ => None,
                }) {
                    order["fields"] = mask;
                }
                self.output(order)
            }
            "CancelOrder" => self.output(json!({"id": text("id"), "status": "CANCELLED", "note": text("reason")})),
            "DeleteOrder" => self.output(json!({})),
            "GetOrderStatus" => self.output(json!({
                "status": {"state": "SHIPPED", "updatedAt": "2024-01-02T03:04:05Z"},
                "etag": format!("e-{}", text("id")),
            })),
            "Fail" => Err(self.failure(&m)),
            "Echo" => self.echo(&m, &metadata),
            other => Err(Status::unimplemented(format!("{other} is not unary"))),
        }
    }

    fn failure(&self, m: &DynamicMessage) -> Status {
        let int = |field: &str| match m.get_field_by_name(field).as_deref() {
            Some(Value::I32(n)) => *n,
            _ => 0,
        };
        let code = tonic::Code::from_i32(int("code"));
        let message = match m.get_field_by_name("message").as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let with_details = matches!(m.get_field_by_name("with_details").as_deref(), Some(Value::Bool(true)));
        if !with_details {
            return Status::new(code, message);
        }
        let details = self.message(
            "google.rpc.Status",
            json!({"code": code as i32, "message": message, "details": [{
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "id", "description": "must not be empty"}],
            }]}),
        );
        match details {
            Ok(details) => Status::with_details(code, message, Bytes::from(details.encode_to_vec())),
            Err(e) => e,
        }
    }

    fn echo(&self, m: &DynamicMessage, metadata: &http::HeaderMap) -> Result<DynamicMessage, Status> {
        let mut reply = DynamicMessage::new(self.method.output());
        for field in ["payload", "text", "order"] {
            if m.has_field_by_name(field) {
                if let Some(v) = m.get_field_by_name(field) {
                    reply.set_field_by_name(field, v.into_owned());
                }
            }
        }
        if let Some(Value::I32(n)) = m.get_field_by_name("reply_size").as_deref() {
            if *n > 0 {
                let payload: Vec<u8> = (0..*n as usize).map(|i| (i * 31 + 7) as u8).collect();
                reply.set_field_by_name("payload", Value::Bytes(Bytes::from(payload)));
            }
        }
        let mut seen = std::collections::HashMap::new();
        for (name, value) in metadata {
            let text = if name.as_str().ends_with("-bin") {
                base64_of(value.as_bytes())
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            seen.insert(prost_reflect::MapKey::String(name.to_string()), Value::String(text));
        }
        reply.set_field_by_name("metadata", Value::Map(seen));
        let timeout = metadata.get("grpc-timeout").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        reply.set_field_by_name("grpc_timeout", Value::String(timeout.unwrap_or_default()));
        Ok(reply)
    }

    fn watch(&self, m: &DynamicMessage) -> Result<MessageStream, Status> {
        let int = |field: &str| match m.get_field_by_name(field).as_deref() {
            Some(Value::I32(n)) => *n,
            _ => 0,
        };
        let shop = match m.get_field_by_name("shop").as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let mut items = Vec::new();
        for i in 0..int("count").clamp(0, 10_000) {
            items.push(self.output(json!({"orderId": format!("{shop}-{i}"), "status": "PENDING", "sequence": i})));
        }
        if int("fail_with") != 0 {
            items.push(Err(Status::new(tonic::Code::from_i32(int("fail_with")), "the watch broke off")));
        }
        Ok(Box::pin(futures::stream::iter(items)))
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl UnaryService<DynamicMessage> for Handler {
    type Response = DynamicMessage;
    type Future = BoxFuture<Result<Response<DynamicMessage>, Status>>;

    fn call(&mut self, req: Request<DynamicMessage>) -> Self::Future {
        let result = self.unary(req).map(Response::new);
        Box::pin(async move { result })
    }
}

impl ServerStreamingService<DynamicMessage> for Handler {
    type Response = DynamicMessage;
    type ResponseStream = MessageStream;
    type Future = BoxFuture<Result<Response<MessageStream>, Status>>;

    fn call(&mut self, req: Request<DynamicMessage>) -> Self::Future {
        let result = self.watch(req.get_ref()).map(Response::new);
        Box::pin(async move { result })
    }
}

impl ClientStreamingService<DynamicMessage> for Handler {
    type Response = DynamicMessage;
    type Future = BoxFuture<Result<Response<DynamicMessage>, Status>>;

    fn call(&mut self, req: Request<Streaming<DynamicMessage>>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let mut stream = req.into_inner();
            let mut count = 0;
            while let Some(item) = stream.next().await {
                item?;
                count += 1;
            }
            this.output(json!({"count": count})).map(Response::new)
        })
    }
}

impl StreamingService<DynamicMessage> for Handler {
    type Response = DynamicMessage;
    type ResponseStream = MessageStream;
    type Future = BoxFuture<Result<Response<MessageStream>, Status>>;

    fn call(&mut self, req: Request<Streaming<DynamicMessage>>) -> Self::Future {
        let stream: MessageStream = Box::pin(req.into_inner());
        Box::pin(async move { Ok(Response::new(stream)) })
    }
}

fn usage() -> ! {
    eprintln!("usage: siger-grpc-echo --descriptors FILE [--listen ADDR]");
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut descriptors = None;
    let mut listen = "127.0.0.1:0".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--descriptors" => descriptors = Some(args.next().unwrap_or_else(|| usage())),
            "--listen" => listen = args.next().unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    let Some(descriptors) = descriptors else { usage() };
    let bytes = std::fs::read(&descriptors).unwrap_or_else(|e| {
        eprintln!("siger-grpc-echo: cannot read {descriptors}: {e}");
        std::process::exit(1)
    });
    let pool = DescriptorPool::decode(bytes.as_slice()).unwrap_or_else(|e| {
        eprintln!("siger-grpc-echo: {descriptors}: {e}");
        std::process::exit(1)
    });
    if pool.get_service_by_name(SERVICE).is_none() {
        eprintln!("siger-grpc-echo: {descriptors} has no {SERVICE}");
        std::process::exit(1)
    }
    let listener = tokio::net::TcpListener::bind(&listen).await.unwrap_or_else(|e| {
        eprintln!("siger-grpc-echo: cannot listen on {listen}: {e}");
        std::process::exit(1)
    });
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    if let Err(e) = tonic::transport::Server::builder().serve_with_incoming(Orders { pool }, incoming).await {
        eprintln!("siger-grpc-echo: {e}");
        std::process::exit(1)
    }
}
