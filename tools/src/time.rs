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
    #[error("{flag} {value:?} is after 9999-12-31T23:59:59Z, the last time RFC 3339 can write")]
    TooFar { flag: &'static str, value: String },
}

/// 9999-12-31T23:59:59Z: the last instant RFC 3339 (four-digit years) can
/// express. The CLI takes no time beyond it, so whatever it writes it can
/// also print.
pub const MAX_TIME: u64 = 253_402_300_799;

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 3339 for a number of seconds since the epoch. A signed manifest may
/// carry any u64, so a time past [`MAX_TIME`] is printed as a count of
/// seconds rather than formatted (which would overflow `SystemTime` or
/// humantime's four-digit year).
pub fn rfc3339(seconds: u64) -> String {
    if seconds > MAX_TIME {
        return format!("{seconds} s after the epoch (past year 9999)");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

/// An instant: RFC 3339, or plain seconds since the epoch.
pub fn parse_instant(flag: &'static str, value: &str) -> Result<u64, TimeError> {
    let too_far = || TimeError::TooFar {
        flag,
        value: value.to_owned(),
    };
    if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        // All digits: seconds; more than u64 holds is too far as well.
        return value
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= MAX_TIME)
            .ok_or_else(too_far);
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
    if at > MAX_TIME {
        return Err(TimeError::TooFar {
            flag,
            value: value.to_owned(),
        });
    }
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
            (
                "10000years",
                Err("\"10000years\" is after 9999-12-31T23:59:59Z"),
            ),
            (
                "253402300800",
                Err("\"253402300800\" is after 9999-12-31T23:59:59Z"),
            ),
            (
                "18446744073709551616",
                Err("\"18446744073709551616\" is after 9999-12-31T23:59:59Z"),
            ),
            ("+5", Err("\"+5\" is neither a duration")),
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

    #[test]
    fn the_last_printable_second_round_trips_and_later_ones_print_as_counts() {
        assert_eq!(rfc3339(MAX_TIME), "9999-12-31T23:59:59Z");
        assert_eq!(
            parse_instant("--issued-at", "9999-12-31T23:59:59Z"),
            Ok(MAX_TIME)
        );
        assert_eq!(
            parse_expiry("--expires", "9999-12-31T23:59:59Z", NOW),
            Ok(MAX_TIME)
        );
        for seconds in [MAX_TIME + 1, u64::MAX / 2, u64::MAX] {
            assert_eq!(
                rfc3339(seconds),
                format!("{seconds} s after the epoch (past year 9999)")
            );
        }
    }

    /// A seeded generator (xorshift64*), so a failing input is reproducible
    /// from the printed seed and case number.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Pieces that mean something to the parsers, glued at random.
    const PIECES: &[&str] = &[
        "0",
        "1",
        "7",
        "9",
        "30",
        "1000",
        "10000",
        "99999999999999999999",
        "18446744073709551615",
        "253402300799",
        "253402300800",
        "y",
        "years",
        "month",
        "w",
        "d",
        "h",
        "m",
        "min",
        "s",
        "ms",
        "us",
        "ns",
        " ",
        "-",
        "+",
        ":",
        ".",
        "T",
        "Z",
        "t",
        "2026-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "1969-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-01-01 00:00:00",
        "\u{0}",
        "\u{e9}",
        "\u{1f600}",
    ];

    #[test]
    fn no_time_or_number_input_panics_and_every_accepted_time_prints() {
        let mut rng = Rng(0x005e_ed0f_71e5);
        let froms = [0, NOW, MAX_TIME - 1, MAX_TIME, MAX_TIME + 1, u64::MAX];
        for case in 0..20_000 {
            let value: String = (0..rng.below(6))
                .map(|_| PIECES[rng.below(PIECES.len())])
                .collect();
            let from = froms[rng.below(froms.len())];
            if let Ok(at) = parse_expiry("--expires", &value, from) {
                assert!(
                    at <= MAX_TIME && at > from,
                    "case {case}: {value:?} from {from} → {at}"
                );
                assert_eq!(
                    parse_instant("--expires", &rfc3339(at)),
                    Ok(at),
                    "case {case}: {value:?}"
                );
            }
            if let Ok(at) = parse_instant("--issued-at", &value) {
                assert!(at <= MAX_TIME, "case {case}: {value:?} → {at}");
                assert_eq!(parse_instant("--issued-at", &rfc3339(at)), Ok(at));
            }
            // Any u64 a manifest can carry prints.
            let seconds = match rng.below(3) {
                0 => rng.next(),
                1 => rng.next() % (MAX_TIME + 10),
                _ => u64::MAX - rng.next() % 10,
            };
            let text = rfc3339(seconds);
            if seconds <= MAX_TIME {
                assert_eq!(parse_instant("--x", &text), Ok(seconds), "{seconds}");
            }
        }
    }
}
