//! The active health check of a service: an HTTP `GET` of `path` (any 2xx is healthy) or, with
//! no path, a connect — made through Pingora's connectors with the same peer a request would
//! get ([`transport_peer`]), so a TLS backend is checked over TLS with its SNI, CA and client
//! certificate, and an HTTP/2 backend over HTTP/2.

use super::pool::transport_peer;
use crate::config::HealthCheckSettings;
use crate::tls::UpstreamTlsMaterial;
use async_trait::async_trait;
use pingora::connectors::http::Connector as HttpConnector;
use pingora::connectors::TransportConnector;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::Backend;
use pingora::prelude::*;
use std::sync::Arc;

/// A check as configured; `tls` is the material the snapshot built for the service's TLS.
pub(crate) fn build(
    settings: &HealthCheckSettings,
    tls: Option<Arc<UpstreamTlsMaterial>>,
) -> Box<dyn HealthCheck + Send + Sync> {
    let request = settings.path.as_ref().and_then(|path| {
        let mut req = RequestHeader::build("GET", path.as_bytes(), None).ok()?;
        req.insert_header("Host", settings.host.as_str()).ok()?;
        req.insert_header("User-Agent", "siger-health-check").ok()?;
        Some(req)
    });
    let probe = match request {
        Some(req) => Probe::Http { req, connector: Box::new(HttpConnector::new(None)) },
        None => Probe::Connect { connector: TransportConnector::new(None) },
    };
    Box::new(Check { settings: settings.clone(), tls, probe })
}

enum Probe {
    Http { req: RequestHeader, connector: Box<HttpConnector> },
    Connect { connector: TransportConnector },
}

struct Check {
    settings: HealthCheckSettings,
    tls: Option<Arc<UpstreamTlsMaterial>>,
    probe: Probe,
}

impl Check {
    async fn probe(&self, target: &Backend) -> Result<()> {
        let Some(addr) = target.addr.as_inet().copied() else {
            return Error::e_explain(InternalError, "health checks need an IP backend");
        };
        let timeout = self.settings.timeout;
        let mut peer = transport_peer(&self.settings.transport, self.tls.as_deref(), addr);
        peer.options.connection_timeout = Some(timeout);
        peer.options.total_connection_timeout = Some(timeout);
        peer.options.read_timeout = Some(timeout);
        peer.options.write_timeout = Some(timeout);
        match &self.probe {
            Probe::Connect { connector } => connector.new_stream(&peer).await.map(drop),
            Probe::Http { req, connector } => {
                let (mut session, _) = connector.get_http_session(&peer).await?;
                session.write_request_header(Box::new(req.clone())).await?;
                session.finish_request_body().await?;
                session.set_read_timeout(Some(timeout));
                session.read_response_header().await?;
                let status = session.response_header().map_or(0, |r| r.status.as_u16());
                if !(200..300).contains(&status) {
                    return Error::e_explain(CustomCode("health check status", status), "non-2xx answer");
                }
                while session.read_response_body().await?.is_some() {}
                Ok(())
            }
        }
    }
}

#[async_trait]
impl HealthCheck for Check {
    async fn check(&self, target: &Backend) -> Result<()> {
        // Timeouts bound each step; this bounds the whole check (a backend trickling its body).
        let limit = self.settings.timeout * 2;
        match tokio::time::timeout(limit, self.probe(target)).await {
            Ok(result) => result,
            Err(_) => Error::e_explain(ReadTimedout, "health check did not finish in time"),
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.settings.healthy
        } else {
            self.settings.unhealthy
        }
    }
}
