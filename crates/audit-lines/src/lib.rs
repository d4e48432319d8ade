//! JSON-lines audit logs for the sidecars (egress, git gate, supervise): one line per
//! event to stdout (so `compose logs` has it) and appended to a file in the bottle's
//! state dir; and the UTC calendar arithmetic that audit timestamps and certificate
//! validity need, so no crate pulls in a date library.
//!
//! A log is bounded ([`Limits`]): every line is at most `max_record_bytes` (long
//! strings are cut with a `…[N bytes truncated]` marker, long arrays lose their tail),
//! and the file is rotated before it would pass `max_file_bytes`
//! (`x.jsonl` → `x.jsonl.1` → … → `x.jsonl.<max_files - 1>`, the oldest dropped), so
//! a log never holds more than `max_files × max_file_bytes` on disk. Writing never
//! fails the caller: a failed write is counted ([`JsonLines::lost`]) and reported on
//! stderr (first, second, fourth, … failure), and the next write tries again.

mod bound;
mod lines;

pub use bound::bounded_line;
pub use lines::{
    DEFAULT_MAX_FIELD_BYTES, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_FILES, DEFAULT_MAX_RECORD_BYTES,
    JsonLines, Limits, rotated_path,
};

use std::time::{SystemTime, UNIX_EPOCH};

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2026-11-25T08:27:48.123Z`.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_date(seconds as i64);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Seconds since the Unix epoch now (0 before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// (year, month, day) of a Unix time in UTC, proleptic Gregorian (Howard Hinnant's
/// days-to-civil algorithm).
pub fn civil_date(unix_secs: i64) -> (i64, u8, u8) {
    let z = unix_secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u8;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u8;
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(951_782_400), (2000, 2, 29));
        assert_eq!(civil_date(1_795_564_800), (2026, 11, 25));
        assert_eq!(civil_date(-86_400), (1969, 12, 31));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_millis(951_782_400_123);
        assert_eq!(rfc3339_utc(leap_day), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(1_795_000_000)),
            "2026-11-18T11:06:40.000Z"
        );
    }
}
