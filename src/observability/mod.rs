//! What operators see: the process logger, the per-request access log line and metrics.

pub(crate) mod access;
pub mod logger;
pub(crate) mod metrics;

pub(crate) use metrics::{
    AuthMetrics, ConfigMetrics, ConnectionMetrics, ConsulMetrics, Metrics, ProxyProtocolMetrics, SpanMetrics,
    TlsMetrics, UsageMetrics,
};
