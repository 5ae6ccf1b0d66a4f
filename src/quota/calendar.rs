//! Calendar windows in UTC (docs/plans.md "Calendar windows"): a quota's window is the hour,
//! day, ISO week (Monday 00:00 to the next Monday) or month an instant falls in, so every
//! gateway and every consumer agree on when a quota resets, whatever their first request was.
//! Time comes from a [`Clock`], so tests can stand at a boundary.

use crate::config::CalendarWindow;
use std::fmt;
use time::{Date, Month, OffsetDateTime, Time};

/// Where time comes from: Unix milliseconds.
pub(crate) trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch, UTC.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock (kept in UTC by NTP on every gateway: windows are computed from
/// it, so two gateways disagree on a boundary by their clock skew only, milliseconds).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock tests set and move.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct TestClock(std::sync::atomic::AtomicI64);

#[cfg(test)]
impl TestClock {
    /// A clock standing at `ms`.
    pub(crate) fn at(ms: i64) -> Self {
        TestClock(std::sync::atomic::AtomicI64::new(ms))
    }

    /// Stand at `ms`.
    pub(crate) fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One window: `[start, end)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Span {
    /// The first second of the window.
    pub(crate) start: i64,
    /// The first second of the next window.
    pub(crate) end: i64,
}

impl Span {
    /// Whole seconds from `now_ms` to the window's end, at least 1 (`Retry-After`,
    /// `RateLimit-Reset`): a client that waits this long is in the next window.
    pub(crate) fn seconds_left(&self, now_ms: i64) -> u64 {
        let left_ms = self.end.saturating_mul(1000).saturating_sub(now_ms);
        (left_ms.max(0) as u64).div_ceil(1000).max(1)
    }

    #[cfg(test)]
    /// The window's start as RFC 3339 (`2026-12-01T00:00:00Z`), for messages and rows.
    pub(crate) fn start_text(&self) -> String {
        rfc3339(self.start)
    }

    /// The window's end as RFC 3339.
    pub(crate) fn end_text(&self) -> String {
        rfc3339(self.end)
    }
}

/// `2026-12-01T00:00:00Z`: the one RFC 3339 printer, from a window's Unix seconds.
pub(crate) fn rfc3339(unix_secs: i64) -> String {
    let offset = std::time::Duration::from_secs(unix_secs.unsigned_abs());
    let at = if unix_secs >= 0 {
        std::time::UNIX_EPOCH.checked_add(offset)
    } else {
        std::time::UNIX_EPOCH.checked_sub(offset)
    };
    at.map(crate::timestamp::rfc3339).unwrap_or_else(|| unix_secs.to_string())
}

/// The UTC day of an instant.
pub(crate) fn day_of(now_ms: i64) -> Date {
    instant(now_ms).date()
}

/// The first second of `day`, UTC.
pub(crate) fn day_start(day: Date) -> i64 {
    day.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp()
}

fn instant(now_ms: i64) -> OffsetDateTime {
    // Out of `time`'s range (±9999 years) only for a broken clock: the epoch then.
    OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The window of `per` that `now_ms` falls in.
pub(crate) fn span(per: CalendarWindow, now_ms: i64) -> Span {
    let now = instant(now_ms);
    let day = now.date();
    match per {
        CalendarWindow::Hour => {
            let start = day_start(day) + i64::from(now.hour()) * 3600;
            Span { start, end: start + 3600 }
        }
        CalendarWindow::Day => {
            let start = day_start(day);
            Span { start, end: start + 86_400 }
        }
        CalendarWindow::Week => {
            let start = day_start(day) - i64::from(day.weekday().number_days_from_monday()) * 86_400;
            Span { start, end: start + 7 * 86_400 }
        }
        CalendarWindow::Month => {
            let first = first_of_month(day.year(), day.month());
            let next = match day.month() {
                Month::December => first_of_month(day.year() + 1, Month::January),
                m => first_of_month(day.year(), m.next()),
            };
            Span { start: first, end: next }
        }
    }
}

fn first_of_month(year: i32, month: Month) -> i64 {
    // Day 1 exists in every month of every year `time` represents.
    Date::from_calendar_date(year, month, 1).map_or(0, day_start)
}

/// `YYYY-MM-DD` (the only date form the usage API and CLI accept).
pub(crate) fn parse_day(text: &str) -> Result<Date, String> {
    let bad = || format!("`{text}` is not a date; write YYYY-MM-DD, e.g. 2026-12-01");
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let number = |s: &str| s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse::<u32>().ok()).flatten();
    let (Some(y), Some(m), Some(d)) = (number(&text[..4]), number(&text[5..7]), number(&text[8..])) else {
        return Err(bad());
    };
    let month = Month::try_from(m as u8).map_err(|_| bad())?;
    Date::from_calendar_date(y as i32, month, d as u8).map_err(|_| format!("`{text}` is not a day of the calendar"))
}

/// `YYYY-MM-DD`.
pub(crate) fn day_text(day: Date) -> String {
    format!("{:04}-{:02}-{:02}", day.year(), day.month() as u8, day.day())
}

/// Unix milliseconds of a UTC instant written `YYYY-MM-DDTHH:MM:SS` (tests).
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) fn at_utc(text: &str) -> i64 {
    let day = parse_day(&text[..10]).expect("date");
    let h: i64 = text[11..13].parse().expect("hour");
    let m: i64 = text[14..16].parse().expect("minute");
    let s: i64 = text[17..19].parse().expect("second");
    (day_start(day) + h * 3600 + m * 60 + s) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    use at_utc as at;

    fn window(per: CalendarWindow, now: &str) -> (String, String) {
        let s = span(per, at(now));
        (s.start_text(), s.end_text())
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn hours_and_days() {
        use CalendarWindow::*;
        assert_eq!(window(Hour, "2026-12-01T13:59:59"), pair("2026-12-01T13:00:00Z", "2026-12-01T14:00:00Z"));
        assert_eq!(window(Hour, "2026-12-31T23:30:00"), pair("2026-12-31T23:00:00Z", "2027-01-01T00:00:00Z"));
        assert_eq!(window(Day, "2026-12-31T23:59:59"), pair("2026-12-31T00:00:00Z", "2027-01-01T00:00:00Z"));
        assert_eq!(window(Day, "2027-01-01T00:00:00"), pair("2027-01-01T00:00:00Z", "2027-01-02T00:00:00Z"));
        assert_eq!(window(Day, "2028-02-29T12:00:00"), pair("2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"));
    }

    #[test]
    fn iso_weeks_start_on_monday_across_years() {
        use CalendarWindow::Week;
        // 2026-12-31 is a Thursday; its week runs Monday 28 December to Monday 4 January.
        assert_eq!(window(Week, "2026-12-31T10:00:00"), pair("2026-12-28T00:00:00Z", "2027-01-04T00:00:00Z"));
        assert_eq!(window(Week, "2027-01-03T23:59:59"), pair("2026-12-28T00:00:00Z", "2027-01-04T00:00:00Z"));
        assert_eq!(window(Week, "2027-01-04T00:00:00"), pair("2027-01-04T00:00:00Z", "2027-01-11T00:00:00Z"));
        // A Sunday belongs to the week that started six days before.
        assert_eq!(window(Week, "2026-03-01T08:00:00"), pair("2026-02-23T00:00:00Z", "2026-03-02T00:00:00Z"));
    }

    #[test]
    fn months_end_where_the_calendar_says() {
        use CalendarWindow::Month;
        assert_eq!(window(Month, "2026-12-15T00:00:00"), pair("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"));
        assert_eq!(window(Month, "2026-01-31T23:59:59"), pair("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"));
        assert_eq!(window(Month, "2026-02-28T23:59:59"), pair("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"));
        // Leap years: February 2028 has 29 days; 2100 is not a leap year, 2000 was.
        assert_eq!(window(Month, "2028-02-29T23:59:59"), pair("2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"));
        let feb_2100 = span(Month, at("2100-02-10T00:00:00"));
        assert_eq!(feb_2100.end - feb_2100.start, 28 * 86_400);
        let feb_2000 = span(Month, at("2000-02-10T00:00:00"));
        assert_eq!(feb_2000.end - feb_2000.start, 29 * 86_400);
        assert_eq!(window(Month, "2027-04-30T12:00:00"), pair("2027-04-01T00:00:00Z", "2027-05-01T00:00:00Z"));
    }

    #[test]
    fn seconds_left_is_what_retry_after_says() {
        let s = span(CalendarWindow::Month, at("2026-12-31T23:59:00"));
        assert_eq!(s.seconds_left(at("2026-12-31T23:59:00")), 60);
        // Half a second before the end: wait one whole second, never zero.
        assert_eq!(s.seconds_left(at("2026-12-31T23:59:59") + 500), 1);
        assert_eq!(s.seconds_left(at("2027-01-01T00:00:00")), 1, "at or past the end: at least 1");
        let d = span(CalendarWindow::Day, at("2026-06-01T00:00:00"));
        assert_eq!(d.seconds_left(at("2026-06-01T00:00:00")), 86_400);
        assert_eq!(d.seconds_left(at("2026-06-01T00:00:00") + 1), 86_400, "rounded up");
    }

    #[test]
    fn dates_are_read_strictly() {
        assert_eq!(day_text(parse_day("2026-12-01").expect("date")), "2026-12-01");
        assert_eq!(day_text(parse_day("2028-02-29").expect("leap day")), "2028-02-29");
        for bad in
            ["2026-02-29", "2026-13-01", "2026-1-01", "26-12-01", "2026/12/01", "2026-12-01T00", "", "２０２６-12-01"]
        {
            assert!(parse_day(bad).is_err(), "{bad:?}");
        }
        assert_eq!(day_of(at("2026-12-31T23:59:59") + 999), parse_day("2026-12-31").expect("date"));
        assert_eq!(day_of(-1), parse_day("1969-12-31").expect("date"), "before the epoch rounds down");
    }
}
