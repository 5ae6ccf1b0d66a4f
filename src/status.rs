//! The operator's view on the admin listener (ARCHITECTURE.md §7.6): `GET /status` (JSON) and
//! `GET /` (one self-contained HTML page that refreshes itself; no script, no external asset).
//! Routes, services with each backend's health, weight, in-flight requests (least_conn),
//! ejection and circuit state, the configuration generation and how the last reload ended,
//! and the NATS and Consul links. Nothing secret: no credentials, tokens, keys or URLs that
//! may carry them.

use crate::config::{AuthMode, LbAlgorithm, RouteTarget};
use crate::runtime::Runtime;
use crate::timestamp::rfc3339;
use serde::Serialize;
use std::fmt::Write;

/// Seconds between the page's refreshes.
const REFRESH_SECS: u32 = 5;

/// Everything the page shows.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) version: &'static str,
    pub(crate) generation: u64,
    pub(crate) loaded_at: String,
    pub(crate) config_file: String,
    pub(crate) last_reload: Option<Reload>,
    pub(crate) connections_open: i64,
    pub(crate) in_flight: usize,
    pub(crate) routes: Vec<Route>,
    pub(crate) services: Vec<Service>,
    pub(crate) nats: Option<Link>,
    pub(crate) consul: Option<Link>,
    /// The config store followed (`config_source`), if any.
    pub(crate) source: Option<crate::config_store::gateway::SourceView>,
    /// The partner program's usage (docs/plans.md "Status page"); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<crate::usage::view::UsageView>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Reload {
    pub(crate) result: &'static str,
    pub(crate) trigger: &'static str,
    pub(crate) at: String,
    pub(crate) errors: Vec<String>,
}

impl Reload {
    /// How a reload ended, as `/status` and `/config` show it.
    pub(crate) fn of(report: &crate::runtime::ReloadReport) -> Reload {
        let (result, errors) = match &report.result {
            Ok(_) => ("ok", Vec::new()),
            Err(errors) => ("failed", errors.clone()),
        };
        Reload { result, trigger: report.trigger, at: rfc3339(report.at), errors }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Route {
    pub(crate) label: String,
    pub(crate) path: String,
    pub(crate) host: Option<String>,
    /// `null`: any method.
    pub(crate) methods: Option<Vec<String>>,
    /// `service echo`, `split a 90% / b 10%`, `aggregate a, b`, `jobs`.
    pub(crate) target: String,
    pub(crate) auth: &'static str,
}

#[derive(Debug, Serialize)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) lb: &'static str,
    /// `static`, or the Consul service it follows.
    pub(crate) discovery: String,
    pub(crate) healthy: usize,
    pub(crate) backends: Vec<Backend>,
    /// `closed`, `open`, `half_open`; `null` without a circuit breaker.
    pub(crate) circuit: Option<&'static str>,
    /// Seconds since Consul last confirmed the members (discovered services).
    pub(crate) discovery_sync_age_secs: Option<u64>,
    /// DNS-backed services: each name and what it resolved to (empty for others).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) dns: Vec<crate::discovery::dns::NameReport>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Backend {
    pub(crate) address: String,
    pub(crate) weight: u32,
    /// Passes its health check (and, when discovered, was admitted).
    pub(crate) healthy: bool,
    /// Ejected by outlier detection now.
    pub(crate) ejected: bool,
    /// Requests in flight (least_conn services only; `null` elsewhere).
    pub(crate) in_flight: Option<usize>,
}

/// A dependency link: its state and, where it says something, a detail.
#[derive(Debug, Serialize)]
pub(crate) struct Link {
    /// `connected`, `disconnected`, `errors`, `ok`.
    pub(crate) state: &'static str,
    pub(crate) detail: String,
}

/// The status of the runtime now.
pub(crate) fn collect(runtime: &Runtime) -> Status {
    let snap = runtime.current();
    let config = &snap.config;
    let routes = config
        .routes
        .iter()
        .map(|r| Route {
            label: r.label.clone(),
            path: r.path.clone(),
            host: r.host.clone(),
            methods: r.methods.as_ref().map(|m| m.iter().map(|m| m.to_string()).collect()),
            target: match &r.target {
                RouteTarget::Service(id) => format!("service {}", config.services[*id].name),
                RouteTarget::Split(id) => {
                    let split = &config.splits[*id];
                    let total: u32 = split.services.iter().map(|(_, w)| w).sum::<u32>().max(1);
                    let shares: Vec<String> = split
                        .services
                        .iter()
                        .map(|(s, w)| format!("{} {}%", config.services[*s].name, w * 100 / total))
                        .collect();
                    format!("split {}", shares.join(" / "))
                }
                RouteTarget::Aggregate(id) => {
                    let parts: Vec<&str> = config.aggregates[*id].parts.iter().map(|p| p.key.as_str()).collect();
                    format!("aggregate {}", parts.join(", "))
                }
                RouteTarget::Jobs => "jobs".into(),
                RouteTarget::JobStatus => "job status".into(),
            },
            auth: match r.auth {
                AuthMode::Required => "required",
                AuthMode::Optional => "optional",
                AuthMode::Public => "public",
            },
        })
        .collect();
    let now = crate::upstream::now_ms();
    let services = config
        .services
        .iter()
        .zip(&snap.pools)
        .map(|(s, pool)| {
            let least_conn = s.lb == LbAlgorithm::LeastConn;
            let backends: Vec<Backend> = pool
                .members()
                .into_iter()
                .map(|(target, healthy)| Backend {
                    address: target.addr.to_string(),
                    weight: target.weight,
                    healthy,
                    ejected: pool.state.outliers.is_ejected(&target.addr, now),
                    in_flight: least_conn.then(|| pool.state.least_conn.in_flight(&target.addr)),
                })
                .collect();
            Service {
                name: s.name.clone(),
                lb: match s.lb {
                    LbAlgorithm::RoundRobin => "round_robin",
                    LbAlgorithm::Random => "random",
                    LbAlgorithm::LeastConn => "least_conn",
                    LbAlgorithm::ConsistentHash(_) => "consistent_hash",
                },
                discovery: match (&s.discovery, &s.dns) {
                    (Some(d), _) => format!("consul {}", d.service),
                    (None, Some(_)) => "dns".into(),
                    (None, None) => "static".into(),
                },
                healthy: backends.iter().filter(|b| b.healthy).count(),
                backends,
                circuit: s.circuit_breaker.as_ref().map(|_| pool.state.breaker.state().name()),
                discovery_sync_age_secs: pool
                    .discovery_sync_age()
                    .filter(|_| s.discovery.is_some())
                    .map(|a| a.as_secs()),
                dns: if s.dns.is_some() { runtime.dns.reports(&s.name) } else { Vec::new() },
            }
        })
        .collect();
    let nats = runtime.jobs.as_ref().map(|jobs| {
        let problems = jobs.readiness_problems();
        Link {
            state: if jobs.is_connected() { "connected" } else { "disconnected" },
            detail: if problems.is_empty() { "stream verified".into() } else { problems.join("; ") },
        }
    });
    let consul = config.consul.as_ref().map(|_| consul_link(runtime, &snap));
    let last_reload = runtime.last_reload().map(|r| Reload::of(&r));
    Status {
        version: env!("CARGO_PKG_VERSION"),
        generation: snap.generation,
        loaded_at: rfc3339(snap.source.loaded_at),
        config_file: snap.source.path.display().to_string(),
        last_reload,
        connections_open: runtime.metrics.connections.open.get(),
        in_flight: runtime.lifecycle.in_flight(),
        routes,
        services,
        nats,
        consul,
        source: runtime.fleet.as_ref().map(|f| f.view()),
        usage: None,
    }
}

/// The Consul line: failed requests since start, and services left without usable members.
fn consul_link(runtime: &Runtime, snap: &crate::snapshot::Snapshot) -> Link {
    let errors = runtime.metrics.consul.errors.get();
    let stale: Vec<&str> = snap
        .config
        .services
        .iter()
        .zip(&snap.pools)
        .filter(|(s, p)| s.discovery.is_some() && p.readiness_problem().is_some())
        .map(|(s, _)| s.name.as_str())
        .collect();
    Link {
        state: if stale.is_empty() { "ok" } else { "errors" },
        detail: if stale.is_empty() {
            format!("{errors} failed requests since start")
        } else {
            format!("no usable members for {}; {errors} failed requests since start", stale.join(", "))
        },
    }
}

/// [`collect`], with the usage section when the configuration has a partner program (one
/// store round trip for today's top consumers).
pub(crate) async fn collect_with_usage(runtime: &Runtime) -> Status {
    let mut status = collect(runtime);
    let snap = runtime.current();
    if let Some(program) = &snap.program {
        let board = &runtime.partners.board;
        status.usage =
            Some(crate::usage::view::collect(program.usage(), board, program.minutes(), program.now_ms()).await);
    }
    status
}

/// Text safe inside HTML elements and attribute values.
fn escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// A table cell with a state class the stylesheet colours.
fn cell(out: &mut String, class: &str, text: &str) {
    let _ = write!(out, "<td class=\"{class}\">");
    escape(out, text);
    out.push_str("</td>");
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse;margin:.3em 0 1em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3}.up,.ok,.closed,.connected{color:#1a7f37;font-weight:600}\
.down,.failed,.open,.disconnected,.errors,.ejected{color:#c62828;font-weight:600}.half_open{color:#b26a00;font-weight:600}\
.muted{color:#777}";

/// The HTML page of `status`.
pub(crate) fn render_html(status: &Status) -> String {
    let mut out = String::with_capacity(8192);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>Siger status</title><style>{STYLE}</style></head><body><h1>Siger {}</h1>",
        status.version
    );
    let _ = write!(out, "<p id=\"config\">Configuration generation <b>{}</b>, loaded ", status.generation);
    escape(&mut out, &status.loaded_at);
    out.push_str(" from <code>");
    escape(&mut out, &status.config_file);
    out.push_str("</code>. Last reload: ");
    match &status.last_reload {
        None => out.push_str("<span class=\"muted\">none since start</span>"),
        Some(r) => {
            let _ = write!(out, "<span id=\"last-reload\" class=\"{}\">{}</span> ({}, ", r.result, r.result, r.trigger);
            escape(&mut out, &r.at);
            out.push(')');
            for e in &r.errors {
                out.push_str("<br><span class=\"failed\">");
                escape(&mut out, e);
                out.push_str("</span>");
            }
        }
    }
    let _ = write!(
        out,
        ". Open connections: {}, requests in flight: {}. Refreshes every {REFRESH_SECS} s.</p>",
        status.connections_open, status.in_flight
    );
    if let Some(source) = &status.source {
        render_source(&mut out, source);
    }

    out.push_str("<h2>Services</h2>");
    for s in &status.services {
        render_service(&mut out, s);
    }

    out.push_str("<h2>Routes</h2><table id=\"routes\"><tr><th>route</th><th>host</th><th>methods</th><th>target</th><th>auth</th></tr>");
    for r in &status.routes {
        out.push_str("<tr class=\"route\">");
        cell(&mut out, "", &r.label);
        cell(&mut out, "", r.host.as_deref().unwrap_or("any"));
        cell(&mut out, "", &r.methods.as_ref().map_or_else(|| "any".into(), |m| m.join(", ")));
        cell(&mut out, "", &r.target);
        cell(&mut out, "", r.auth);
        out.push_str("</tr>");
    }
    out.push_str("</table><h2>Dependencies</h2><table id=\"dependencies\">");
    for (name, link) in [("NATS", &status.nats), ("Consul", &status.consul)] {
        out.push_str("<tr>");
        cell(&mut out, "", name);
        match link {
            Some(l) => {
                cell(&mut out, l.state, l.state);
                cell(&mut out, "", &l.detail);
            }
            None => {
                cell(&mut out, "muted", "not configured");
                cell(&mut out, "", "");
            }
        }
        out.push_str("</tr>");
    }
    let usage = status.usage.as_ref().map(crate::usage::view::render).unwrap_or_default();
    let _ = writeln!(out, "</table>{usage}</body></html>");
    out
}

/// One service's table: its backends, DNS names, breaker and discovery.
fn render_service(out: &mut String, s: &Service) {
    let _ = write!(out, "<table class=\"service\" data-service=\"");
    escape(out, &s.name);
    out.push_str("\"><tr><th colspan=\"5\">");
    escape(out, &s.name);
    let _ = write!(out, " <span class=\"muted\">{} · ", s.lb);
    escape(out, &s.discovery);
    let _ = write!(out, " · {} of {} healthy", s.healthy, s.backends.len());
    if let Some(age) = s.discovery_sync_age_secs {
        let _ = write!(out, " · synced {age} s ago");
    }
    out.push_str("</span>");
    if let Some(circuit) = s.circuit {
        let _ = write!(out, " circuit <span class=\"{circuit}\">{circuit}</span>");
    }
    out.push_str("</th></tr><tr><th>backend</th><th>health</th><th>weight</th><th>in flight</th><th>outlier</th></tr>");
    for n in &s.dns {
        out.push_str("<tr class=\"dns\"><td colspan=\"5\">");
        let _ = write!(out, "{} ", n.kind);
        escape(out, &n.name);
        out.push_str(" → ");
        escape(out, &if n.addresses.is_empty() { "nothing yet".to_string() } else { n.addresses.join(", ") });
        let _ = write!(out, " <span class=\"muted\">TTL {} s</span>", n.ttl_secs);
        if let Some(e) = &n.error {
            out.push_str(" <span class=\"failed\">");
            escape(out, e);
            out.push_str("</span>");
        }
        out.push_str("</td></tr>");
    }
    if s.backends.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"down\">no backends</td></tr>");
    }
    for b in &s.backends {
        out.push_str("<tr class=\"backend\">");
        cell(out, "address", &b.address);
        if b.healthy {
            cell(out, "up", "up");
        } else {
            cell(out, "down", "down");
        }
        cell(out, "", &b.weight.to_string());
        cell(out, "", &b.in_flight.map_or_else(|| "–".into(), |n| n.to_string()));
        if b.ejected {
            cell(out, "ejected", "ejected");
        } else {
            cell(out, "muted", "–");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

/// The config store line: the revision in force, the newest seen, a refusal and its reasons.
fn render_source(out: &mut String, source: &crate::config_store::gateway::SourceView) {
    out.push_str("<p id=\"source\">Config store <code>");
    escape(out, &format!("{}/{}", source.bucket, source.key));
    out.push_str("</code> (gateway <code>");
    escape(out, &source.gateway_id);
    out.push_str("</code>): ");
    match source.revision {
        Some(r) => {
            let _ = write!(out, "revision <b id=\"source-revision\">{r}</b> in force");
        }
        None => out.push_str("<span class=\"failed\">no revision applied yet</span>"),
    }
    if source.from_cache {
        out.push_str(" (from the cache file)");
    }
    if let Some(seen) = source.latest_seen {
        let _ = write!(out, ", newest seen {seen}");
    }
    let (class, word) = if source.drift { ("failed", "drift") } else { ("ok", "in step") };
    let _ = write!(out, ", <span id=\"source-drift\" class=\"{class}\">{word}</span>");
    if !source.connected {
        out.push_str(", <span class=\"failed\">store unreachable</span>");
    }
    out.push('.');
    if let Some(refused) = &source.refused {
        let _ = write!(out, "<br><span class=\"failed\">revision {} refused:</span>", refused.revision);
        for e in &refused.errors {
            out.push_str("<br><span class=\"failed\">");
            escape(out, e);
            out.push_str("</span>");
        }
    }
    out.push_str("</p>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            version: "1.0.0",
            generation: 3,
            loaded_at: "2026-11-30T00:00:00Z".into(),
            config_file: "/etc/siger/siger.yaml".into(),
            last_reload: Some(Reload {
                result: "failed",
                trigger: "admin",
                at: "2026-11-30T00:01:00Z".into(),
                errors: vec!["routes[0].path: must start with <b>/</b>".into()],
            }),
            connections_open: 2,
            in_flight: 1,
            routes: vec![Route {
                label: "/api".into(),
                path: "/api".into(),
                host: None,
                methods: Some(vec!["GET".into()]),
                target: "service echo".into(),
                auth: "public",
            }],
            services: vec![Service {
                name: "echo".into(),
                lb: "round_robin",
                discovery: "static".into(),
                healthy: 1,
                backends: vec![
                    Backend {
                        address: "127.0.0.1:1".into(),
                        weight: 1,
                        healthy: true,
                        ejected: false,
                        in_flight: None,
                    },
                    Backend {
                        address: "127.0.0.1:2".into(),
                        weight: 3,
                        healthy: false,
                        ejected: true,
                        in_flight: None,
                    },
                ],
                circuit: Some("open"),
                discovery_sync_age_secs: None,
                dns: Vec::new(),
            }],
            nats: None,
            consul: Some(Link { state: "ok", detail: "0 failed requests since start".into() }),
            source: None,
            usage: None,
        }
    }

    #[test]
    fn the_page_shows_backends_routes_and_escapes_what_it_quotes() {
        let html = render_html(&status());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(html.contains("<td class=\"address\">127.0.0.1:2</td><td class=\"down\">down</td>"));
        assert!(html.contains("<td class=\"address\">127.0.0.1:1</td><td class=\"up\">up</td>"));
        assert!(html.contains("<td class=\"ejected\">ejected</td>"));
        assert!(html.contains("circuit <span class=\"open\">open</span>"));
        assert!(html.contains("<td class=\"\">service echo</td>"));
        assert!(html.contains("must start with &lt;b&gt;/&lt;/b&gt;"), "errors are escaped");
        assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"), "self-contained");
    }

    #[test]
    fn the_json_carries_the_same_facts() {
        let v = serde_json::to_value(status()).expect("json");
        assert_eq!(v["services"][0]["backends"][1]["healthy"], false);
        assert_eq!(v["services"][0]["circuit"], "open");
        assert_eq!(v["last_reload"]["result"], "failed");
        assert_eq!(v["routes"][0]["methods"][0], "GET");
        assert!(v["nats"].is_null());
    }
}
