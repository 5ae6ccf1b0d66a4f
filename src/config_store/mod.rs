//! One configuration for a fleet (ARCHITECTURE §8.6): the keys every gateway shares live in a
//! NATS JetStream key-value store, one document per revision; each gateway keeps on its disk a
//! bootstrap file with what it needs to start (`server`, `listen`, `admin`, `nats`,
//! `config_source`).
//!
//! - [`document`]: splitting a whole file into bootstrap and document, merging them back with
//!   line numbers kept, and the check (`-t`'s) of a merged configuration;
//! - [`store`]: the bucket — read, compare-and-set push, history, status reports, following;
//! - [`follow`]: the cursor that makes following miss nothing and apply nothing twice;
//! - [`status`]: the gateways' reports and the drift table of `siger config status`;
//! - [`cache`]: the last applied revision on disk, for a start-up with the store unreachable;
//! - [`command`]: `siger config push|history|diff|rollback|status|watch|split`.
//!
//! - [`gateway`]: a gateway's side — start from the store (or the cache file), follow it,
//!   apply each revision through the snapshot swap, report what it did.

pub mod cache;
pub mod command;
pub mod document;
pub mod follow;
pub mod gateway;
pub mod status;
pub mod store;
