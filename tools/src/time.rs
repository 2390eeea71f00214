//! Times on the command line: durations (`30d`, `12h 30m`) or RFC 3339
//! instants (`2027-01-01T00:00:00Z`), always resolved to seconds since the
//! epoch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimeError {
    #[error("{flag} {value:?} is neither a duration (30d, 12h) nor an RFC 3339 time")]
    Syntax { flag: &'static str, value: String },
    #[error("{flag} {value:?} is in the past (now is {now})")]
    Past {
        flag: &'static str,
        value: String,
        now: String,
    },
    #[error("{flag} {value:?} is before 1970")]
    BeforeEpoch { flag: &'static str, value: String },
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 3339 for a number of seconds since the epoch.
pub fn rfc3339(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

/// An instant: RFC 3339, or plain seconds since the epoch.
pub fn parse_instant(flag: &'static str, value: &str) -> Result<u64, TimeError> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Ok(seconds);
    }
    let time = humantime::parse_rfc3339_weak(value).map_err(|_| TimeError::Syntax {
        flag,
        value: value.to_owned(),
    })?;
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| TimeError::BeforeEpoch {
            flag,
            value: value.to_owned(),
        })
}

/// An expiry: a duration after `from`, or an instant, which must be after
/// `from` either way.
pub fn parse_expiry(flag: &'static str, value: &str, from: u64) -> Result<u64, TimeError> {
    let at = match humantime::parse_duration(value) {
        Ok(duration) => from.saturating_add(duration.as_secs()),
        Err(_) => parse_instant(flag, value)?,
    };
    if at <= from {
        return Err(TimeError::Past {
            flag,
            value: value.to_owned(),
            now: rfc3339(from),
        });
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    #[test]
    fn expiry_forms() {
        let table: &[(&str, Result<u64, &str>)] = &[
            ("30d", Ok(NOW + 30 * 86_400)),
            ("12h 30m", Ok(NOW + 12 * 3600 + 1800)),
            ("2027-01-01T00:00:00Z", Ok(1_798_761_600)),
            ("1798761600", Ok(1_798_761_600)),
            (
                "0s",
                Err("\"0s\" is in the past (now is 2026-01-01T00:00:00Z)"),
            ),
            (
                "2020-01-01T00:00:00Z",
                Err("\"2020-01-01T00:00:00Z\" is in the past"),
            ),
            ("-5d", Err("\"-5d\" is neither a duration")),
            ("tomorrow", Err("\"tomorrow\" is neither a duration")),
        ];
        for (value, expected) in table {
            let got = parse_expiry("--expires", value, NOW).map_err(|e| e.to_string());
            match (got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(got, *expected, "{value}"),
                (Err(got), Err(expected)) => {
                    assert!(got.starts_with("--expires "), "{got}");
                    assert!(got.contains(expected), "{got:?} lacks {expected:?}");
                }
                (got, _) => panic!("{value}: {got:?}"),
            }
        }
    }

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(rfc3339(NOW), "2026-01-01T00:00:00Z");
        assert_eq!(
            parse_instant("--issued-at", "2026-01-01T00:00:00Z"),
            Ok(NOW)
        );
    }
}
