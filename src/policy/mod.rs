//! Edge policies of a route (ARCHITECTURE.md §7.4): header rules, CORS, compression and the
//! response cache. Each is configured per route, compiled once per configuration, and costs
//! nothing on routes that do not use it.
//!
//! - [`headers`]: `request_headers` / `response_headers` rules with value templates.
//! - [`cors`]: preflights and the CORS headers of every answer.
//! - [`compress`]: which responses Pingora's compression module encodes, and how.
//! - [`cache`]: the response cache (pingora-cache over a bounded in-memory storage of ours).
//! - [`schema`]: JSON Schema validation of request bodies (ARCHITECTURE.md §7.5), over
//!   [`strict_json`]: no repeated names, no number a double cannot hold.

pub mod cache;
pub mod compress;
pub mod cors;
pub mod headers;
pub mod schema;
pub mod strict_json;
