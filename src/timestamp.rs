//! Times as admin answers, reports and status documents show them: RFC 3339 in UTC. A leaf, so
//! that any module can print a time without reaching into the one that shows it.

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `t` as RFC 3339 (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

/// Now as RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn whole_seconds_print_without_a_fraction() {
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_764_547_200)), "2025-12-01T00:00:00Z");
    }
}
