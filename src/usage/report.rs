//! `siger usage` (docs/plans.md "Reading usage"): asks the admin listener's `GET /usage`
//! (named by `--admin`, else `admin.listen` of the configuration) and prints the rows as a
//! table with totals, or as CSV (`--csv`, the same CSV the endpoint exports).

use super::query::{csv, totals};
use super::store::{RowCounts, UsageRow};
use crate::cli::UsageArgs;
use crate::quota::calendar::parse_day;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// How long the CLI waits for the admin listener.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The rows of an answer of `GET /usage`.
#[derive(Debug, serde::Deserialize)]
struct Answer {
    rows: Vec<UsageRow>,
}

/// Run `siger usage`; the exit code says how it went (0, 1 for a failed request, 78 for a
/// configuration that names no admin listener). `admin` reads the admin listener from `conf`
/// (only asked without `--admin`).
pub fn command(conf: &Path, admin: impl FnOnce() -> Result<Option<SocketAddr>, String>, args: &UsageArgs) -> ExitCode {
    match run(conf, admin, args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("siger usage: {message}");
            ExitCode::from(code)
        }
    }
}

fn run(
    conf: &Path,
    admin: impl FnOnce() -> Result<Option<SocketAddr>, String>,
    args: &UsageArgs,
) -> Result<String, (u8, String)> {
    for (flag, value) in [("--from", Some(&args.from)), ("--to", args.to.as_ref())] {
        if let Some(value) = value {
            parse_day(value).map_err(|e| (2, format!("{flag}: {e}")))?;
        }
    }
    let base = match &args.admin {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let admin = admin().map_err(|e| (78, e))?.ok_or_else(|| {
                (78, format!("{} has no admin listener; pass --admin http://host:port", conf.display()))
            })?;
            format!("http://{admin}")
        }
    };
    let url = format!("{base}/usage?{}", query_string(args));
    let body = fetch(&url).map_err(|e| (1, e))?;
    let answer: Answer = serde_json::from_slice(&body)
        .map_err(|e| (1, format!("{url} answered something else than usage rows: {e}")))?;
    Ok(if args.csv { csv(&answer.rows) } else { table(&answer.rows) })
}

/// The query string of `args`.
fn query_string(args: &UsageArgs) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("from", &args.from);
    for (name, value) in [("to", &args.to), ("consumer", &args.consumer), ("route", &args.route)] {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    query.append_pair("format", "json");
    query.finish()
}

/// GET `url` and return a 200's body; any other answer is an error with the server's message.
fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| e.to_string())?;
        let response = client.get(url).send().await.map_err(|e| format!("{url}: {}", causes(&e)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        Err(format!("{url}: {status}: {message}"))
    })
}

/// An error and its causes (`error sending request: … : Connection refused`): reqwest's own
/// text alone does not say why.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `1.5 KiB`, `12 B`: sizes as a person reads them (the CSV keeps bytes).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Text for a terminal: control characters (an escape sequence in a name) shown as `?`.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The rows as an aligned table with a total line.
pub(crate) fn table(rows: &[UsageRow]) -> String {
    if rows.is_empty() {
        return "no usage recorded for this query\n".into();
    }
    let header = ["DAY", "CONSUMER", "ROUTE", "REQUESTS", "2XX", "3XX", "4XX", "5XX", "IN", "OUT"];
    let line = |day: &str, consumer: &str, route: &str, c: &RowCounts| -> [String; 10] {
        let [s2, s3, s4, s5] = c.classes();
        [
            printable(day),
            printable(consumer),
            printable(route),
            c.requests.to_string(),
            s2.to_string(),
            s3.to_string(),
            s4.to_string(),
            s5.to_string(),
            human_bytes(c.bytes_in),
            human_bytes(c.bytes_out),
        ]
    };
    let mut lines: Vec<[String; 10]> = rows.iter().map(|r| line(&r.day, &r.consumer, &r.route, &r.counts)).collect();
    lines.push(line("TOTAL", "", "", &totals(rows)));
    let mut widths = header.map(str::len);
    for l in &lines {
        for (w, cell) in widths.iter_mut().zip(l) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut write_line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Names left, numbers right.
            let _ = if i < 3 { write!(text, "{cell:<w$}  ") } else { write!(text, "{cell:>w$}  ") };
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    write_line(&header);
    for l in &lines {
        write_line(&l.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `--admin` the configuration is not read.
    fn not_asked() -> Result<Option<SocketAddr>, String> {
        panic!("the configuration was read although --admin was given")
    }
    use crate::usage::record::Counts;

    fn row(day: &str, consumer: &str, route: &str, counts: Counts) -> UsageRow {
        UsageRow { day: day.into(), consumer: consumer.into(), route: route.into(), counts: counts.into() }
    }

    #[test]
    fn a_table_aligns_names_left_numbers_right_and_totals() {
        let mut busy = Counts::one(200, 2048, 1536);
        busy.add(&Counts::one(500, 0, 10));
        let rows = vec![
            row("2026-12-01", "acme", "/orders", busy),
            row("2026-12-02", "acme\u{1b}[31m", "/u", Counts::one(404, 0, 0)),
        ];
        let text = table(&rows);
        let expected = "\
DAY         CONSUMER   ROUTE    REQUESTS  2XX  3XX  4XX  5XX       IN      OUT
2026-12-01  acme       /orders         2    1    0    0    1  2.0 KiB  1.5 KiB
2026-12-02  acme?[31m  /u              1    0    0    1    0      0 B      0 B
TOTAL                                  3    1    0    1    1  2.0 KiB  1.5 KiB
";
        assert_eq!(text, expected, "\n{text}");
        assert_eq!(table(&[]), "no usage recorded for this query\n");
    }

    #[test]
    fn the_query_names_what_was_asked() {
        let args = UsageArgs {
            consumer: Some("acme & co".into()),
            from: "2026-12-01".into(),
            to: None,
            route: Some("/orders".into()),
            csv: false,
            admin: None,
        };
        assert_eq!(query_string(&args), "from=2026-12-01&consumer=acme+%26+co&route=%2Forders&format=json");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    /// An admin listener stand-in on 127.0.0.1 answering each request with the real endpoint
    /// (`query::answer`) over a local store holding one record; returns its URL and the request
    /// targets it saw.
    fn admin_with_one_record() -> (String, std::sync::mpsc::Receiver<String>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (seen, targets) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let store = crate::usage::store::UsageStore::Local(crate::usage::store::LocalUsage::new(
                Duration::from_secs(90 * 86_400),
                100,
            ));
            let day = parse_day("2026-12-01").expect("day");
            let now = crate::quota::calendar::at_utc("2026-12-01T12:00:00");
            for part in
                crate::usage::store::parts(vec![("acme".into(), "/orders".into(), day, Counts::one(200, 3, 4))], 1)
            {
                runtime.block_on(store.apply("gw", &part, now)).expect("local");
            }
            for stream in listener.incoming().take(2) {
                let mut stream = stream.expect("connection");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                reader.read_line(&mut line).expect("request line");
                while reader.read_line(&mut String::new()).is_ok_and(|n| n > 2) {}
                let target = line.split(' ').nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|(_, q)| q.to_string());
                let today = parse_day("2026-12-06").expect("day");
                let answer = runtime.block_on(crate::usage::query::answer(&store, query.as_deref(), None, today));
                let answer = answer.unwrap_or_else(|e| e.answer("test-id")).closing();
                stream.write_all(&answer.to_http1()).expect("answer");
                let _ = seen.send(target);
            }
        });
        (url, targets)
    }

    #[test]
    fn the_command_reads_the_admin_endpoint_and_prints_its_errors() {
        let (url, targets) = admin_with_one_record();
        let mut args = UsageArgs {
            consumer: Some("acme".into()),
            from: "2026-12-01".into(),
            to: None,
            route: None,
            csv: true,
            admin: Some(format!("{url}/")),
        };
        let csv = run(Path::new("/nonexistent"), not_asked, &args).expect("answered");
        assert_eq!(csv, "day,consumer,route,requests,2xx,3xx,4xx,5xx,bytes_in,bytes_out\r\n2026-12-01,acme,/orders,1,1,0,0,0,3,4\r\n");
        assert_eq!(targets.recv().expect("a request"), "/usage?from=2026-12-01&consumer=acme&format=json");
        // The endpoint refuses a `to` before `from`: the CLI says why, and fails.
        args.to = Some("2026-11-01".into());
        let (code, message) = run(Path::new("/nonexistent"), not_asked, &args).expect_err("refused");
        assert_eq!(code, 1);
        assert!(message.ends_with("400 Bad Request: `to` (2026-11-01) is before `from` (2026-12-01)"), "{message}");
    }

    #[test]
    fn a_listener_that_is_not_there_is_named_with_the_cause() {
        // A port bound and closed at once: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        let args = UsageArgs {
            consumer: None,
            from: "2026-12-01".into(),
            to: None,
            route: None,
            csv: false,
            admin: Some(format!("http://127.0.0.1:{port}")),
        };
        let (code, message) = run(Path::new("/nonexistent"), not_asked, &args).expect_err("refused");
        assert_eq!(code, 1);
        assert!(message.to_lowercase().contains("connection refused"), "{message}");
    }

    #[test]
    fn without_admin_the_config_must_name_one() {
        let dir = tempfile::tempdir().expect("dir");
        let conf = dir.path().join("siger.yaml");
        let text = "listen: [\"127.0.0.1:8080\"]\nservices: {api: {targets: [\"127.0.0.1:9001\"]}}\nroutes: [{path: /, service: api, auth: public}]\n";
        std::fs::write(&conf, text).expect("write");
        let args =
            UsageArgs { consumer: None, from: "2026-12-01".into(), to: None, route: None, csv: false, admin: None };
        let (code, message) = run(&conf, || crate::app::admin_address(&conf), &args).expect_err("no admin listener");
        assert_eq!(code, 78);
        assert!(message.contains("has no admin listener; pass --admin"), "{message}");
    }

    #[test]
    fn bad_dates_are_refused_before_any_request() {
        let args = UsageArgs {
            consumer: None,
            from: "2026-12-1".into(),
            to: None,
            route: None,
            csv: false,
            admin: Some("http://127.0.0.1:1".into()),
        };
        let (code, message) = run(Path::new("/nonexistent"), not_asked, &args).expect_err("refused");
        assert_eq!(code, 2);
        assert!(message.starts_with("--from: `2026-12-1` is not a date"), "{message}");
    }
}
