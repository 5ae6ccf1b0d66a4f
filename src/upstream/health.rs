//! Health-check settings → Pingora's HTTP or TCP checks.

use crate::config::HealthCheckSettings;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::prelude::*;

/// A check as configured: HTTP GET of `path` (any 2xx is healthy) or a TCP connect.
pub(crate) fn build(settings: &HealthCheckSettings) -> Box<dyn HealthCheck + Send + Sync> {
    match &settings.path {
        Some(path) => {
            let mut check = HttpHealthCheck::new(&settings.host, false);
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                let _ = req.insert_header("Host", settings.host.as_str());
                let _ = req.insert_header("User-Agent", "siger-health-check");
                check.req = req;
            }
            check.consecutive_success = settings.healthy;
            check.consecutive_failure = settings.unhealthy;
            check.peer_template.options.connection_timeout = Some(settings.timeout);
            check.peer_template.options.read_timeout = Some(settings.timeout);
            check.validator = Some(Box::new(|resp: &ResponseHeader| {
                if resp.status.is_success() {
                    Ok(())
                } else {
                    Error::e_explain(CustomCode("health check status", resp.status.as_u16()), "non-2xx answer")
                }
            }));
            Box::new(check)
        }
        None => {
            let mut check = TcpHealthCheck::new();
            check.consecutive_success = settings.healthy;
            check.consecutive_failure = settings.unhealthy;
            check.peer_template.options.connection_timeout = Some(settings.timeout);
            check
        }
    }
}
