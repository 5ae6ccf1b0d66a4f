//! The integration tests, one binary: each module starts the real `siger` (and its backends) as
//! processes, so linking the crate once instead of once per file is most of the build. Run one
//! area with `cargo test --test suite <module>::` (e.g. `reload::`).

mod support;

mod auth;
mod balancing;
mod clients;
mod composition;
mod config_check;
mod config_store;
mod consul;
mod dns;
mod fleet;
mod grpc_gateway;
mod grpc_transcode;
mod harness;
mod hostile;
mod house;
mod jobs;
mod lifecycle;
mod limits;
mod observability;
mod package;
mod plans;
mod platform;
mod policies;
mod probe;
mod proxy_protocol;
mod proxying;
mod ratelimit;
mod reload;
mod request_bodies;
mod resilience;
mod routing;
mod scale_out;
mod status_page;
mod tls;
mod tracing;
mod transform;
mod upstream_pool;
mod waf;
mod waf_crs;
