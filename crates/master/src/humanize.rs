//! Times and spans for people: `3m`, `1h 02m`, `2026-11-26 05:00:00`.

/// A span in the largest whole unit: `42s`, `3m`, `5h`, `2d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// How long ago `t` was at `now`: `3m ago`.
pub fn ago(now: i64, t: i64) -> String {
    format!("{} ago", age(now - t))
}

/// A duration to the second or minute: `42s`, `1m 05s`, `1h 02m`.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A UTC timestamp: `2026-11-26 05:00:00`.
pub fn when(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(age(59), "59s");
        assert_eq!(age(3 * 3600 + 5), "3h");
        assert_eq!(age(-5), "0s");
        assert_eq!(ago(100, 40), "1m ago");
        assert_eq!(duration(3725), "1h 02m");
        assert_eq!(duration(65), "1m 05s");
        assert_eq!(when(1_700_000_000), "2023-11-14 22:13:20");
    }
}
