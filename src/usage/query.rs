//! Admin `GET /usage?consumer=&route=&from=&to=[&format=csv]` (docs/plans.md "Reading usage"):
//! the query is read strictly (an unknown or repeated parameter is an error, not ignored), the
//! rows come from the store, and the answer is JSON, or CSV when `format=csv` or `Accept:
//! text/csv` asks for it. [`answer`] is the whole endpoint, so the admin listener's route to it
//! is one line.

use super::store::{ReadError, RowCounts, UsageRow, UsageStore};
use crate::answer::LocalAnswer;
use crate::errors::GatewayError;
use crate::quota::calendar::{day_text, parse_day};
use bytes::Bytes;
use serde_json::json;
use time::Date;

/// The longest range one query covers, in days.
pub(crate) const MAX_DAYS: i64 = 366;

/// A usage query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsageQuery {
    /// One consumer, or every consumer.
    pub(crate) consumer: Option<String>,
    /// One route (its label), or every route.
    pub(crate) route: Option<String>,
    /// First day (UTC).
    pub(crate) from: Date,
    /// Last day, included (default: today).
    pub(crate) to: Date,
    /// Answer CSV instead of JSON.
    pub(crate) csv: bool,
}

const PARAMETERS: [&str; 5] = ["consumer", "route", "from", "to", "format"];

impl UsageQuery {
    /// Read a query string; `accept` is the request's `Accept`, `today` the default `to`.
    pub(crate) fn parse(query: Option<&str>, accept: Option<&[u8]>, today: Date) -> Result<Self, String> {
        let mut seen: [Option<String>; 5] = Default::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let Some(i) = PARAMETERS.iter().position(|p| *p == name) else {
                return Err(format!("unknown parameter `{name}` (known: {})", PARAMETERS.join(", ")));
            };
            if seen[i].is_some() {
                return Err(format!("`{name}` is given twice"));
            }
            seen[i] = Some(value.into_owned());
        }
        let [consumer, route, from, to, format] = seen;
        // `consumer=` and `route=` (empty, as a form leaves them) mean every one.
        let consumer = consumer.filter(|c| !c.is_empty());
        let route = route.filter(|r| !r.is_empty());
        let from = match from.as_deref() {
            None | Some("") => return Err("`from` (YYYY-MM-DD) is required".into()),
            Some(text) => parse_day(text).map_err(|e| format!("from: {e}"))?,
        };
        let to = match to.as_deref() {
            None | Some("") => today,
            Some(text) => parse_day(text).map_err(|e| format!("to: {e}"))?,
        };
        if to < from {
            return Err(format!("`to` ({}) is before `from` ({})", day_text(to), day_text(from)));
        }
        if (to - from).whole_days() >= MAX_DAYS {
            return Err(format!("a query covers at most {MAX_DAYS} days"));
        }
        let accepts_csv = accept.is_some_and(|a| {
            String::from_utf8_lossy(a)
                .split(',')
                .any(|m| m.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/csv")))
        });
        let csv = match format.as_deref() {
            None | Some("") => accepts_csv,
            Some("json") => false,
            Some("csv") => true,
            Some(other) => return Err(format!("`format` is json or csv, not `{other}`")),
        };
        Ok(UsageQuery { consumer, route, from, to, csv })
    }
}

/// The totals of `rows`.
pub(crate) fn totals(rows: &[UsageRow]) -> RowCounts {
    let mut total = RowCounts::default();
    for row in rows {
        total.add(&row.counts);
    }
    total
}

/// The JSON answer.
pub(crate) fn json_body(q: &UsageQuery, rows: &[UsageRow]) -> serde_json::Value {
    json!({
        "from": day_text(q.from),
        "to": day_text(q.to),
        "consumer": q.consumer,
        "route": q.route,
        "rows": rows,
        "totals": totals(rows),
    })
}

/// CSV (RFC 4180, CRLF line ends) with a header line. A field a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@` first) is written with a leading `'`: consumer names can come
/// from tokens, and an export is opened in spreadsheets.
pub(crate) fn csv(rows: &[UsageRow]) -> String {
    let mut out = String::from("day,consumer,route,requests,2xx,3xx,4xx,5xx,bytes_in,bytes_out\r\n");
    for row in rows {
        let c = &row.counts;
        let [s2, s3, s4, s5] = c.classes();
        out.push_str(&format!(
            "{},{},{},{},{s2},{s3},{s4},{s5},{},{}\r\n",
            csv_field(&row.day),
            csv_field(&row.consumer),
            csv_field(&row.route),
            c.requests,
            c.bytes_in,
            c.bytes_out
        ));
    }
    out
}

fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_string() };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The whole endpoint: the query string and `Accept` of a `GET /usage`, answered from `store`.
pub(crate) async fn answer(
    store: &UsageStore,
    query: Option<&str>,
    accept: Option<&http::HeaderValue>,
    today: Date,
) -> Result<LocalAnswer, GatewayError> {
    let q = UsageQuery::parse(query, accept.map(|a| a.as_bytes()), today).map_err(GatewayError::BadRequest)?;
    let rows = match store.rows(q.consumer.as_deref(), q.route.as_deref(), q.from, q.to).await {
        Ok(rows) => rows,
        Err(ReadError::TooLarge(message)) => return Err(GatewayError::BadRequest(message)),
        Err(ReadError::Store(e)) => {
            log::warn!("usage query: {e}");
            return Err(GatewayError::Unavailable { message: "the usage store is unavailable".into(), retry_after: 1 });
        }
    };
    if !q.csv {
        return Ok(LocalAnswer::json(200, &json_body(&q, &rows)));
    }
    let name = format!("usage-{}-{}.csv", day_text(q.from), day_text(q.to));
    Ok(LocalAnswer::bytes(200, "text/csv; charset=utf-8", Bytes::from(csv(&rows)))
        .header("Content-Disposition", format!("attachment; filename=\"{name}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::record::Counts;

    fn today() -> Date {
        parse_day("2026-12-06").expect("day")
    }

    fn parse(query: &str) -> Result<UsageQuery, String> {
        UsageQuery::parse(Some(query), None, today())
    }

    #[test]
    fn queries_are_read_strictly() {
        let q = parse("consumer=acme&from=2026-12-01").expect("valid");
        assert_eq!(
            (q.consumer.as_deref(), q.route, day_text(q.from), day_text(q.to), q.csv),
            (Some("acme"), None, "2026-12-01".into(), "2026-12-06".into(), false)
        );
        let q = parse("consumer=&route=%2Forders&from=2026-11-01&to=2026-11-30&format=csv").expect("valid");
        assert_eq!((q.consumer, q.route.as_deref(), q.csv), (None, Some("/orders"), true));
        let q = UsageQuery::parse(Some("from=2026-12-01"), Some(b"text/html, text/csv;q=0.9"), today()).expect("valid");
        assert!(q.csv, "Accept asks for CSV");
        let q = UsageQuery::parse(Some("from=2026-12-01&format=json"), Some(b"text/csv"), today()).expect("valid");
        assert!(!q.csv, "format wins over Accept");
        for (bad, says) in [
            ("", "`from` (YYYY-MM-DD) is required"),
            ("from=2026-12-01&consumer=a&consumer=b", "`consumer` is given twice"),
            ("from=2026-12-01&user=a", "unknown parameter `user`"),
            ("from=2026-12-32", "from: "),
            ("from=2026-12-05&to=2026-12-01", "is before"),
            ("from=2024-01-01&to=2025-01-01", "at most 366 days"),
            ("from=2026-12-01&format=xml", "json or csv"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        // 2024 is a leap year: 1 January 2024 to 1 January 2025 is 367 days, from the 2nd 366.
        assert!(parse("from=2024-01-02&to=2025-01-01").is_ok());
    }

    fn row(day: &str, consumer: &str, route: &str, counts: Counts) -> UsageRow {
        UsageRow { day: day.into(), consumer: consumer.into(), route: route.into(), counts: counts.into() }
    }

    #[test]
    fn json_and_csv_carry_the_same_numbers() {
        let mut c = Counts::one(200, 10, 100);
        c.add(&Counts::one(503, 1, 2));
        let rows = vec![
            row("2026-12-01", "acme", "/orders", c),
            row("2026-12-01", "=cmd|' /C calc'!A0", "/a,b", Counts::one(404, 0, 5)),
        ];
        let q = parse("from=2026-12-01&to=2026-12-01").expect("valid");
        let body = json_body(&q, &rows);
        assert_eq!(
            body["rows"][0],
            json!({"day": "2026-12-01", "consumer": "acme", "route": "/orders", "requests": 2, "status": {"2xx": 1, "3xx": 0, "4xx": 0, "5xx": 1}, "bytes_in": 11, "bytes_out": 102})
        );
        assert_eq!(body["totals"]["requests"], 3);
        assert_eq!(body["totals"]["status"]["4xx"], 1);
        assert_eq!(body["consumer"], serde_json::Value::Null);
        let back: Vec<UsageRow> = serde_json::from_value(body["rows"].clone()).expect("rows read back");
        assert_eq!(back, rows);
        assert_eq!(
            csv(&rows),
            "day,consumer,route,requests,2xx,3xx,4xx,5xx,bytes_in,bytes_out\r\n2026-12-01,acme,/orders,2,1,0,0,1,11,102\r\n2026-12-01,'=cmd|' /C calc'!A0,\"/a,b\",1,0,0,1,0,0,5\r\n"
        );
    }

    #[tokio::test]
    async fn the_endpoint_answers_json_csv_and_clear_errors() {
        let store =
            UsageStore::Local(super::super::store::LocalUsage::new(std::time::Duration::from_secs(86_400 * 90), 100));
        let part =
            super::super::store::parts(vec![("acme".into(), "/orders".into(), today(), Counts::one(200, 3, 4))], 1);
        let now = crate::quota::calendar::at_utc("2026-12-06T12:00:00");
        for p in &part {
            store.apply("gw", p, now).await.expect("local");
        }
        let answer = super::answer(&store, Some("consumer=acme&from=2026-12-06"), None, today()).await.expect("200");
        let body: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
        assert_eq!((answer.status, body["totals"]["requests"].clone()), (200, json!(1)));
        let csv_accept = http::HeaderValue::from_static("text/csv");
        let answer = super::answer(&store, Some("from=2026-12-06"), Some(&csv_accept), today()).await.expect("200");
        assert!(answer.has_header("content-disposition"));
        assert!(String::from_utf8_lossy(&answer.body).ends_with("2026-12-06,acme,/orders,1,1,0,0,0,3,4\r\n"));
        let refused = super::answer(&store, Some("to=2026-12-06"), None, today()).await.expect_err("400");
        assert_eq!((refused.status(), refused.code()), (400, "bad_request"));
        assert!(refused.to_string().contains("`from`"), "{refused}");
    }
}
