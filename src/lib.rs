//! Siger: an API gateway and edge proxy on Cloudflare's Pingora.
//!
//! A request's journey (ARCHITECTURE.md §1): [`proxy`] runs Pingora's phases and calls, in
//! order, [`forwarding`] (request id, client IP), [`routing`] (normalised path → route),
//! [`auth`] (JWT, roles) and [`ratelimit`] (per-route limits, local or Redis),
//! [`upstream`] (pool and backend), and [`errors`] for every failure; [`observability`] writes
//! the access log and metrics. [`jobs`] answers the reserved jobs path itself (JetStream
//! publish-with-ack) for callers [`auth`] verified. [`config`] is parsed once into
//! validated types; [`app`] assembles the Pingora server; [`admin`] serves `/health`, `/ready`
//! and `/metrics`; [`discovery`] (Consul) feeds pool membership and registers the gateway;
//! [`lifecycle`] drains in-flight requests on shutdown. [`waf`] inspects requests with the OWASP
//! Core Rule Set.

#![warn(missing_docs, unreachable_pub)]

pub(crate) mod admin;
mod aggregate;
pub(crate) mod answer;
pub mod app;
pub mod auth;
pub(crate) mod backoff;
pub mod cli;
pub mod config;
// The fleet's config store (issue 31, core): `siger config …`; the runtime follows it in a
// later step.
pub mod config_store;
pub(crate) mod connections;
pub(crate) mod discovery;
pub(crate) mod errors;
pub(crate) mod forwarding;
pub(crate) mod framing;
#[cfg(test)]
mod fuzz;
pub mod grpc;
pub mod jobs;
pub(crate) mod jose;
pub(crate) mod lifecycle;
pub(crate) mod nats;
pub(crate) mod normalize;
pub mod observability;
pub(crate) mod partner;
pub mod policy;
pub(crate) mod proxy;
pub(crate) mod proxy_protocol;
pub(crate) mod quota;
pub(crate) mod ratelimit;
pub(crate) mod redirect;
pub(crate) mod reload;
pub(crate) mod routing;
pub(crate) mod runtime;
pub(crate) mod snapshot;
pub(crate) mod status;
pub mod timestamp;
pub mod tls;
pub(crate) mod trace;
// The core of issue 28, wired into the proxy, aggregation and `-t` in a later step.
#[allow(dead_code)]
pub(crate) mod transform;
pub mod upgrade;
pub(crate) mod upstream;
pub mod usage;
pub mod waf;
