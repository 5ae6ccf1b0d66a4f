//! What operators see: the process logger, the per-request access log line and metrics.

pub mod access;
pub mod logger;
pub mod metrics;

pub use metrics::Metrics;
