//! The clock floor: the wall clock never reads earlier than the image's build
//! time. A machine with a dead RTC boots in 1970; without a floor, expiry
//! checks and TLS certificate validity would be meaningless.

use std::io;

use thiserror::Error;

use crate::sys;

#[derive(Debug, Error)]
#[error("clock_settime(CLOCK_REALTIME, {seconds})")]
pub struct ClockError {
    pub seconds: i64,
    #[source]
    pub error: io::Error,
}

/// What the floor did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// The clock was at or after the floor.
    Kept { now: i64 },
    /// The clock read `was`; it now reads the floor.
    Raised { was: i64, now: i64 },
}

/// Decides whether `now` must be raised to `floor`.
pub fn decide(now: i64, floor: u64) -> Floor {
    let floor = i64::try_from(floor).unwrap_or(i64::MAX);
    if now >= floor {
        Floor::Kept { now }
    } else {
        Floor::Raised {
            was: now,
            now: floor,
        }
    }
}

/// Applies the floor to the system clock.
pub fn apply_floor(floor: u64) -> Result<Floor, ClockError> {
    let decision = decide(sys::clock_gettime_realtime(), floor);
    if let Floor::Raised { now, .. } = decision {
        sys::clock_settime_realtime(now).map_err(|error| ClockError {
            seconds: now,
            error,
        })?;
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_only_a_clock_behind_the_floor() {
        assert_eq!(
            decide(0, 1_700_000_000),
            Floor::Raised {
                was: 0,
                now: 1_700_000_000
            }
        );
        assert_eq!(decide(-5, 10), Floor::Raised { was: -5, now: 10 });
        assert_eq!(
            decide(1_800_000_000, 1_700_000_000),
            Floor::Kept { now: 1_800_000_000 }
        );
        assert_eq!(decide(10, 10), Floor::Kept { now: 10 });
        assert_eq!(
            decide(0, u64::MAX),
            Floor::Raised {
                was: 0,
                now: i64::MAX
            }
        );
    }
}
