//! JSON-lines audit logs for the sidecars (egress, git gate, supervise): one line per
//! event to stdout (so `compose logs` has it) and appended to a file in the bottle's
//! state dir; and the UTC calendar arithmetic that audit timestamps and certificate
//! validity need, so no crate pulls in a date library.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Where a sidecar's audit lines go.
#[derive(Debug)]
pub struct JsonLines {
    sidecar: &'static str,
    to_stdout: bool,
    file: Option<(PathBuf, Mutex<File>)>,
}

impl JsonLines {
    /// Opens `path` for appending (creating it and its directory, mode 0640), if given.
    /// `sidecar` names the writer in the stderr message when a write fails.
    pub fn open(
        sidecar: &'static str,
        path: Option<&Path>,
        to_stdout: bool,
    ) -> std::io::Result<Self> {
        let file = match path {
            None => None,
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(path)?;
                Some((path.to_path_buf(), Mutex::new(file)))
            }
        };
        Ok(Self {
            sidecar,
            to_stdout,
            file,
        })
    }

    /// Writes one entry as one line. A failed write is reported on stderr: the decision
    /// it records was already made and must not be undone by a full disk.
    pub fn write<T: Serialize>(&self, entry: &T) {
        let Ok(mut line) = serde_json::to_string(entry) else {
            return;
        };
        line.push('\n');
        if self.to_stdout {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout
                .write_all(line.as_bytes())
                .and_then(|()| stdout.flush());
        }
        if let Some((path, file)) = &self.file {
            let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(error) = file.write_all(line.as_bytes()) {
                eprintln!(
                    "{}: writing audit log {}: {error}",
                    self.sidecar,
                    path.display()
                );
            }
        }
    }
}

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

    #[test]
    fn lines_are_appended_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/log.jsonl");
        let log = JsonLines::open("test", Some(&path), false).unwrap();
        log.write(&serde_json::json!({"a": 1}));
        log.write(&serde_json::json!({"b": "two\nlines"}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                serde_json::json!({"a": 1}),
                serde_json::json!({"b": "two\nlines"})
            ]
        );
    }
}
