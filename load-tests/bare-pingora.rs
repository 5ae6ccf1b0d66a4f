//! The floor Siger is measured against: the least a Pingora 0.9 proxy can do — one static
//! backend behind Pingora's round-robin load balancer, default settings, nothing else.
//!
//! `cargo run --release --example bare-pingora -- <listen> <backend> [threads]`

use async_trait::async_trait;
use pingora::lb::LoadBalancer;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::sync::Arc;

struct Bare(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let backend = self.0.select(b"", 256).ok_or_else(|| Error::new(HTTPStatus(503)))?;
        Ok(Box::new(HttpPeer::new(backend.addr.clone(), false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, backend) = match (args.get(1), args.get(2)) {
        (Some(l), Some(b)) => (l.clone(), b.clone()),
        _ => {
            eprintln!("usage: bare-pingora <listen> <backend> [threads]");
            std::process::exit(2);
        }
    };
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let lb = LoadBalancer::try_from_iter([backend.as_str()]).unwrap_or_else(|e| {
        eprintln!("bad backend {backend}: {e}");
        std::process::exit(2)
    });
    let mut proxy = http_proxy_service(&server.configuration, Bare(Arc::new(lb)));
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
