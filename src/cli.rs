//! Command line (ARCHITECTURE.md §2). Pingora's own flags keep their meaning: `-c` config,
//! `-d` daemon, `-u` upgrade, `-t` test the configuration.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Default config location when `-c` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/siger/siger.yaml";

/// Siger: an API gateway on Pingora.
#[derive(Debug, Parser)]
#[command(name = "siger", version, about, long_about = None)]
pub struct Cli {
    /// Config file (YAML).
    #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
    pub conf: PathBuf,
    /// Run in the background (writes `server.pid_file`).
    #[arg(short, long)]
    pub daemon: bool,
    /// Take over the listeners of the running instance (zero-downtime upgrade).
    #[arg(short, long)]
    pub upgrade: bool,
    /// Check the configuration and exit: 0 when valid, 78 otherwise.
    #[arg(short, long)]
    pub test: bool,
    /// Tolerated for compatibility with Pingora's option parser; ignored.
    #[arg(long, hide = true)]
    pub nocapture: bool,
    /// A subcommand instead of running the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replace the running instance with a new process (new binary and/or config) without
    /// dropping requests: checks the config, starts `siger -u -d`, then hands the sockets over.
    Upgrade {
        /// PID of the running instance (default: read `server.pid_file`).
        #[arg(long)]
        pid: Option<i32>,
    },
    /// Make a new API key: prints the key (give it to the consumer; it is not stored) and the
    /// line for the keys file (`auth.api_keys.file`), which holds only its SHA-256.
    Apikey {
        /// The consumer the key names (rate limits, access log, `X-Consumer`).
        #[arg(long)]
        consumer: String,
        /// Comma-separated roles.
        #[arg(long, default_value = "")]
        roles: String,
    },
    /// Mint an HS* token with the configured secret (for demos and load tests).
    Token {
        /// `sub` claim.
        #[arg(long)]
        sub: String,
        /// Comma-separated roles.
        #[arg(long, default_value = "")]
        roles: String,
        /// Lifetime, e.g. `1h`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Sign with this PEM private key instead of the config's secret (asymmetric
        /// algorithms, e.g. to exercise a JWKS setup).
        #[arg(long)]
        private_key: Option<PathBuf>,
        /// Algorithm for `--private-key` (default ES256); must be allowed by the config.
        #[arg(long, requires = "private_key")]
        alg: Option<String>,
        /// `kid` header for `--private-key` tokens.
        #[arg(long, requires = "private_key")]
        kid: Option<String>,
    },
}
