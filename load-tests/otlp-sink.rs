//! An OTLP/HTTP trace collector for benchmarks: the tests' receiver (`tests/suite/support/otlp.rs`,
//! which decodes every export with the official protobuf types), printing how many spans and
//! export requests it took, every second, until it is killed.
//!
//!   cargo run --release --example otlp-sink -- 127.0.0.1:4318
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/suite/support/otlp.rs"]
mod otlp;
// The harness's HTTP/1 reader, which the receiver uses.
#[allow(dead_code)]
#[path = "../tests/suite/support/http1.rs"]
mod http1;

fn main() {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:4318".into());
    let sink = otlp::OtlpReceiver::start_on(&listen);
    println!("listening on {}", sink.addr);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        println!("spans {} exports {}", sink.span_count(), sink.exports());
    }
}
