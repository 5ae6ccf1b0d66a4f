//! What request inspection costs, in deterministic instruction counts: Debian's CRS at paranoia
//! level 1 (the `waf:` defaults), loaded and warmed up through `siger::waf`, then one kind of
//! clean request inspected N times inside `measured`, the only function callgrind counts:
//!
//!   cargo build --release --example waf-cost
//!   valgrind --tool=callgrind --toggle-collect='waf_cost::measured' \
//!       target/release/examples/waf-cost clean1k 20        # get | clean1k | body64k
//!
//! Instructions per request = callgrind's "Collected" / N. The global allocator is Siger's
//! (mimalloc). Wall time per request is printed too, for orientation only.

use bytes::Bytes;
use siger::config::WafSettings;
use siger::waf::{Exclusions, Request, RuleSet};
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An ordinary order of about `size` bytes of JSON.
fn order(size: usize) -> Vec<u8> {
    let mut s = String::from(
        "{\"order_id\":\"ord_7f3a9c21\",\"customer\":{\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\",\
         \"phone\":\"+44 20 7946 0958\"},\"currency\":\"EUR\",\"items\":[",
    );
    let mut i = 0;
    while s.len() + 120 < size {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"sku\":\"SKU-{i:05}\",\"qty\":{},\"price\":{}.99,\"note\":\"gift wrap, deliver after 5pm\"}}",
            i % 7 + 1,
            i % 90 + 10
        ));
        i += 1;
    }
    s.push_str("],\"comment\":\"please ring the bell\"}");
    s.into_bytes()
}

fn request(kind: &str) -> Request {
    let head = |method: &str, uri: &str| {
        Request::new(method, uri, "HTTP/1.1")
            .header("Host", "api.example.com")
            .header("User-Agent", "curl/8.5.0")
            .header("Accept", "application/json")
    };
    let body = match kind {
        "get" => return head("GET", "/api/orders?page=2&sort=created_at"),
        "clean1k" => order(1024),
        "body64k" => order(65536),
        other => panic!("unknown kind {other}: get | clean1k | body64k"),
    };
    let length = body.len() as u64;
    head("POST", "/api/orders")
        .header("Content-Type", "application/json")
        .header("Content-Length", length.to_string())
        .with_body(Bytes::from(body), Some(length), 128 << 10)
}

#[inline(never)]
fn measured(rules: &RuleSet, request: &Request, n: usize) {
    for _ in 0..n {
        let verdict = rules.inspect(request, &Exclusions::none());
        assert!(!verdict.blocked, "a clean request was refused: {verdict:?}");
        std::hint::black_box(verdict);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map_or("clean1k", String::as_str);
    let n: usize = args.get(2).map_or(10, |s| s.parse().expect("N"));
    let started = Instant::now();
    let rules = RuleSet::load(&WafSettings::default()).expect("Debian's CRS (scripts/install-deps)");
    eprintln!("loaded {} rules and warmed up in {:?}", rules.rule_count(), started.elapsed());
    eprintln!("prefilter: {:?}", rules.prefilter_stats());
    let request = request(kind);
    for _ in 0..3 {
        rules.inspect(&request, &Exclusions::none());
    }
    let started = Instant::now();
    measured(&rules, &request, n);
    eprintln!("{kind}: {:?} per request (wall, orientation only)", started.elapsed() / n.max(1) as u32);
}
