//! The gateway's own dependencies: `consul`, `nats`, `jobs` (with its stream) and `tracing`.

use super::{LimitRule, LoadedFile};
use std::path::PathBuf;
use std::time::Duration;

/// Consul connection and registration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsulSettings {
    /// Base URL, e.g. `http://127.0.0.1:8500`, without trailing slash.
    pub address: String,
    /// `X-Consul-Token`.
    pub token: Option<String>,
    /// `dc` query parameter.
    pub datacenter: Option<String>,
    /// Blocking-query wait.
    pub wait: Duration,
    /// Directory for last-known-good instance files.
    pub state_dir: Option<PathBuf>,
    /// Self-registration of this gateway.
    pub register: Option<ConsulRegistration>,
}

/// How this instance registers itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsulRegistration {
    /// Service name.
    pub name: String,
    /// Advertised address.
    pub address: String,
    /// Advertised port.
    pub port: u16,
    /// Service tags.
    pub tags: Vec<String>,
    /// HTTP check URL (normally the admin `/health`).
    pub check_http: Option<String>,
    /// Check interval.
    pub check_interval: Duration,
    /// Check timeout.
    pub check_timeout: Duration,
    /// `DeregisterCriticalServiceAfter`.
    pub deregister_after: Duration,
}

impl ConsulRegistration {
    /// `<name>-<address>-<port>` (ARCHITECTURE.md §6).
    pub fn service_id(&self) -> String {
        format!("{}-{}-{}", self.name, self.address, self.port)
    }
}

/// NATS connection.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsSettings {
    /// Server URL(s), comma separated.
    pub url: String,
    /// `.creds` file.
    pub credentials_file: Option<PathBuf>,
    /// Token auth.
    pub token: Option<String>,
    /// User/password auth.
    pub user_password: Option<(String, String)>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Messages buffered while disconnected.
    pub pending_buffer: usize,
}

/// JetStream storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStorage {
    /// Durable on disk.
    File,
    /// In memory.
    Memory,
}

/// The jobs stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// Stream name.
    pub name: String,
    /// Subjects the stream captures.
    pub subjects: Vec<String>,
    /// Create or verify the stream at start-up.
    pub create: bool,
    /// Storage.
    pub storage: StreamStorage,
    /// Replicas.
    pub replicas: usize,
    /// Message max age.
    pub max_age: Duration,
    /// De-duplication window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
}

/// The `/jobs/submit` short-circuit.
#[derive(Debug, Clone, PartialEq)]
pub struct JobsSettings {
    /// Reserved path.
    pub path: String,
    /// Subject jobs are published to.
    pub subject: String,
    /// Stream settings.
    pub stream: StreamSettings,
    /// Roles allowed to submit (any of); empty = any authenticated user.
    pub roles: Vec<String>,
    /// Body limit.
    pub max_body: u64,
    /// Longest wait for the JetStream ack.
    pub ack_timeout: Duration,
    /// Longest time to receive the whole request body (408 beyond).
    pub body_timeout: Duration,
    /// Limit on submissions (else `rate_limit.default`).
    pub rate_limit: Option<LimitRule>,
    /// JSON Schema every job payload must match, as read (`policy::schema` compiles it).
    pub schema: Option<LoadedFile>,
    /// Roles that may read any job's status (besides the identity that submitted it).
    pub status_roles: Vec<String>,
    /// The scheduler's durable consumer on the stream: job status says `delivered` and
    /// `acknowledged` from its progress.
    pub consumer: Option<String>,
}

/// `tracing`: W3C trace context and spans exported over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// Where spans are POSTed (OTLP/HTTP protobuf), e.g. `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Share of new traces recorded (0–1); requests with a caller's `traceparent` follow its flag.
    pub sample_ratio: f64,
    /// Most spans waiting for export; beyond it spans are dropped and counted.
    pub queue_size: usize,
}

impl Default for TracingSettings {
    /// The documented defaults: 10 % of new traces, service `siger`, 4096 queued spans; the
    /// endpoint has none (it is required).
    fn default() -> Self {
        TracingSettings {
            otlp_endpoint: String::new(),
            service_name: "siger".into(),
            sample_ratio: 0.1,
            queue_size: 4096,
        }
    }
}
