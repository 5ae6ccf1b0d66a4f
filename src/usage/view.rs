//! The status page's usage section (docs/plans.md "Status page"): today's top consumers (from
//! the usage store, so every gateway's flushed requests), each consumer's quota use as a bar
//! (the latest count this gateway saw, exact across gateways), and requests per route over the
//! last hour as a small bar chart (this gateway). Inline SVG and the page's own styles only: the
//! admin page's `Content-Security-Policy` allows nothing else, and every name is escaped.

use super::minutes::{RouteMinutes, RouteSeries};
use super::store::UsageStore;
use crate::quota::board::{QuotaBoard, QuotaUse};
use crate::quota::calendar::{day_of, day_text};
use serde::Serialize;
use std::fmt::Write;

/// Consumers listed in each table.
pub(crate) const LISTED: usize = 10;

/// One of today's top consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TopConsumer {
    /// The consumer.
    pub(crate) consumer: String,
    /// Its requests today (UTC), as written to the store.
    pub(crate) requests: u64,
}

/// What the usage section shows (also the `usage` member of `GET /status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct UsageView {
    /// Today (UTC), `YYYY-MM-DD`.
    pub(crate) day: String,
    /// Today's top consumers.
    pub(crate) top: Vec<TopConsumer>,
    /// Why the top consumers are missing (the store did not answer).
    pub(crate) top_error: Option<String>,
    /// The consumers closest to their quota.
    pub(crate) quotas: Vec<QuotaUse>,
    /// Requests per route and minute, last hour.
    pub(crate) routes: Vec<RouteSeries>,
}

/// Gather the section at `now_ms` (one store round trip for the top consumers).
pub(crate) async fn collect(store: &UsageStore, board: &QuotaBoard, minutes: &RouteMinutes, now_ms: i64) -> UsageView {
    let today = day_of(now_ms);
    let (top, top_error) = match store.top(today, LISTED).await {
        Ok(top) => (top.into_iter().map(|(consumer, requests)| TopConsumer { consumer, requests }).collect(), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    UsageView {
        day: day_text(today),
        top,
        top_error,
        quotas: board.fullest(now_ms, LISTED),
        routes: minutes.series(now_ms),
    }
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

/// Width of a quota bar and of a route chart, in pixels.
const BAR_WIDTH: u64 = 160;
const CHART_WIDTH: u64 = 240;
const CHART_HEIGHT: u64 = 32;

/// The section's HTML (a fragment for the status page's body).
pub(crate) fn render(view: &UsageView) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str("<section id=\"usage\"><h2>Usage</h2><h3>Top consumers today <span class=\"muted\">(");
    escape(&mut out, &view.day);
    out.push_str(" UTC)</span></h3>");
    match (&view.top_error, view.top.is_empty()) {
        (Some(e), _) => {
            out.push_str("<p class=\"failed\" id=\"top-consumers-error\">The usage store did not answer: ");
            escape(&mut out, e);
            out.push_str("</p>");
        }
        (None, true) => out.push_str("<p class=\"muted\" id=\"top-consumers\">No usage recorded today.</p>"),
        (None, false) => {
            out.push_str("<table id=\"top-consumers\"><tr><th>consumer</th><th>requests</th></tr>");
            for t in &view.top {
                out.push_str("<tr class=\"consumer\"><td>");
                escape(&mut out, &t.consumer);
                let _ = write!(out, "</td><td>{}</td></tr>", t.requests);
            }
            out.push_str("</table>");
        }
    }
    out.push_str("<h3>Quota use</h3>");
    if view.quotas.is_empty() {
        out.push_str("<p class=\"muted\" id=\"quota-use\">No quota checked in a window still running.</p>");
    } else {
        out.push_str("<table id=\"quota-use\"><tr><th>consumer</th><th>plan</th><th>used</th><th>resets</th></tr>");
        for q in &view.quotas {
            quota_row(&mut out, q);
        }
        out.push_str("</table>");
    }
    out.push_str("<h3>Requests per route, last hour</h3>");
    if view.routes.is_empty() {
        out.push_str("<p class=\"muted\" id=\"route-minutes\">No requests in the last hour.</p>");
    } else {
        out.push_str("<table id=\"route-minutes\"><tr><th>route</th><th>per minute</th><th>total</th></tr>");
        for r in &view.routes {
            route_row(&mut out, r);
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
    out
}

fn quota_row(out: &mut String, q: &QuotaUse) {
    let fill = if q.limit == 0 { BAR_WIDTH } else { (q.used.min(q.limit) * BAR_WIDTH).div_ceil(q.limit.max(1)) };
    let percent = q.used.saturating_mul(100).checked_div(q.limit).unwrap_or(100);
    // Green below 80 %, amber to 99 %, red when spent.
    let colour = match percent {
        0..=79 => "#1a7f37",
        80..=99 => "#b26a00",
        _ => "#c62828",
    };
    out.push_str("<tr class=\"quota\" data-consumer=\"");
    escape(out, &q.consumer);
    out.push_str("\"><td>");
    escape(out, &q.consumer);
    out.push_str("</td><td>");
    escape(out, &q.plan);
    let _ = write!(
        out,
        "</td><td><svg width=\"{BAR_WIDTH}\" height=\"12\" role=\"img\" aria-label=\"{percent}% of the quota\">\
         <rect width=\"{BAR_WIDTH}\" height=\"12\" fill=\"#eee\"/><rect class=\"used\" width=\"{fill}\" height=\"12\" fill=\"{colour}\"/></svg> \
         {} of {} per {} ({percent}%)</td><td>",
        q.used, q.limit, q.per
    );
    escape(out, &q.resets_at);
    out.push_str("</td></tr>");
}

fn route_row(out: &mut String, r: &RouteSeries) {
    let peak = r.per_minute.iter().copied().max().unwrap_or(0).max(1);
    let width = CHART_WIDTH / r.per_minute.len().max(1) as u64;
    out.push_str("<tr class=\"route-minutes\" data-route=\"");
    escape(out, &r.route);
    out.push_str("\"><td>");
    escape(out, &r.route);
    let _ = write!(
        out,
        "</td><td><svg width=\"{CHART_WIDTH}\" height=\"{CHART_HEIGHT}\" role=\"img\" aria-label=\"requests per minute, peak {peak}\">"
    );
    for (i, n) in r.per_minute.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        let h = (n * CHART_HEIGHT).div_ceil(peak);
        let _ = write!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{h}\" fill=\"#4a78c2\"><title>{n}</title></rect>",
            i as u64 * width,
            CHART_HEIGHT - h,
            width.saturating_sub(1).max(1)
        );
    }
    let _ = write!(out, "</svg></td><td>{}</td></tr>", r.total);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> UsageView {
        let mut per_minute = vec![0; 60];
        per_minute[58] = 10;
        per_minute[59] = 5;
        UsageView {
            day: "2026-12-06".into(),
            top: vec![TopConsumer { consumer: "<script>alert(1)</script>".into(), requests: 42 }],
            top_error: None,
            quotas: vec![
                QuotaUse {
                    consumer: "acme".into(),
                    plan: "free".into(),
                    used: 9_000,
                    limit: 10_000,
                    per: "month",
                    resets_at: "2027-01-01T00:00:00Z".into(),
                },
                QuotaUse {
                    consumer: "\"globex\"".into(),
                    plan: "pro".into(),
                    used: 10,
                    limit: 10,
                    per: "day",
                    resets_at: "2026-12-07T00:00:00Z".into(),
                },
            ],
            routes: vec![RouteSeries { route: "/orders".into(), per_minute, total: 15 }],
        }
    }

    #[test]
    fn bars_and_charts_are_inline_svg_and_names_are_escaped() {
        let html = render(&view());
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>"), "{html}");
        assert!(html.contains("data-consumer=\"&quot;globex&quot;\""), "{html}");
        assert!(
            html.contains("<rect class=\"used\" width=\"144\" height=\"12\" fill=\"#b26a00\"/>"),
            "90 % of 160 px, amber: {html}"
        );
        assert!(
            html.contains("<rect class=\"used\" width=\"160\" height=\"12\" fill=\"#c62828\"/>"),
            "spent: red, full: {html}"
        );
        assert!(html.contains("9000 of 10000 per month (90%)"), "{html}");
        // The chart: bars for the two busy minutes, the peak full height.
        assert!(
            html.contains(
                "<rect x=\"232\" y=\"0\" width=\"3\" height=\"32\" fill=\"#4a78c2\"><title>10</title></rect>"
            ),
            "{html}"
        );
        assert!(
            html.contains(
                "<rect x=\"236\" y=\"16\" width=\"3\" height=\"16\" fill=\"#4a78c2\"><title>5</title></rect>"
            ),
            "{html}"
        );
        for external in ["src=", "href=", "url(", "<img", "<link", "<script"] {
            assert!(!html.contains(external), "no external asset: {external}");
        }
    }

    #[tokio::test]
    async fn the_section_gathers_the_store_the_board_and_the_minutes() {
        use crate::quota::calendar::{at_utc, parse_day};
        let now = at_utc("2026-12-06T12:00:00");
        let day = parse_day("2026-12-06").expect("day");
        let store =
            UsageStore::Local(super::super::store::LocalUsage::new(std::time::Duration::from_secs(86_400), 100));
        let gathered = vec![
            (
                "acme".to_string(),
                std::sync::Arc::<str>::from("/orders"),
                day,
                super::super::record::Counts::one(200, 0, 0),
            ),
            ("globex".to_string(), "/orders".into(), day, super::super::record::Counts::one(200, 0, 0)),
            ("globex".to_string(), "/users".into(), day, super::super::record::Counts::one(500, 0, 0)),
        ];
        for part in super::super::store::parts(gathered, 1) {
            store.apply("gw", &part, now).await.expect("local");
        }
        let minutes = RouteMinutes::new(&["/orders".into()], None);
        minutes.record(0, now);
        let view = collect(&store, &QuotaBoard::default(), &minutes, now).await;
        assert_eq!(view.day, "2026-12-06");
        assert_eq!(
            view.top,
            [
                TopConsumer { consumer: "globex".into(), requests: 2 },
                TopConsumer { consumer: "acme".into(), requests: 1 }
            ]
        );
        assert_eq!((view.routes.len(), view.routes[0].total, view.quotas.len()), (1, 1, 0));
    }

    #[test]
    fn empty_and_failing_parts_say_so() {
        let empty =
            UsageView { day: "2026-12-06".into(), top: vec![], top_error: None, quotas: vec![], routes: vec![] };
        let html = render(&empty);
        assert!(html.contains("No usage recorded today.") && html.contains("No requests in the last hour."), "{html}");
        let failing = UsageView { top_error: Some("redis did not answer within 100ms".into()), ..empty };
        assert!(render(&failing).contains("The usage store did not answer: redis did not answer within 100ms"));
    }
}
