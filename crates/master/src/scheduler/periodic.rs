//! Cron arithmetic for periodic schedulers (UTC).

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;

pub fn parse(expr: &str) -> Result<Cron, String> {
    Cron::from_str(expr).map_err(|e| e.to_string())
}

fn at(ts: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(ts, 0).single()
}

/// The occurrence to fire now, if any: the latest one at or before `now`
/// that is later than `since` (the last firing, or the scheduler's
/// creation). A master that was down for three nights fires once, not three
/// times.
pub fn due_occurrence(cron: &Cron, since: i64, now: i64) -> Option<i64> {
    let latest = cron.find_previous_occurrence(&at(now)?, true).ok()?.timestamp();
    (latest > since).then_some(latest)
}

/// The first occurrence after `now`.
pub fn next_occurrence(cron: &Cron, now: i64) -> Option<i64> {
    Some(cron.find_next_occurrence(&at(now)?, false).ok()?.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const THREE_AM: i64 = 3 * 3600;

    #[test]
    fn nightly_fires_once_per_night() {
        let cron = parse("0 3 * * *").expect("cron");
        let created = 20_000 * DAY + 3600; // 01:00
        assert_eq!(due_occurrence(&cron, created, created + 60), None);
        assert_eq!(next_occurrence(&cron, created), Some(20_000 * DAY + THREE_AM));
        let fire = 20_000 * DAY + THREE_AM;
        assert_eq!(due_occurrence(&cron, created, fire), Some(fire));
        assert_eq!(due_occurrence(&cron, fire, fire + 3600), None, "already fired tonight");
        // down for three nights: one catch-up firing, for the latest night
        assert_eq!(due_occurrence(&cron, fire, fire + 3 * DAY + 10), Some(fire + 3 * DAY));
    }

    #[test]
    fn bad_expressions_are_errors() {
        assert!(parse("not a cron").is_err());
        assert!(parse("61 * * * *").is_err());
    }
}
