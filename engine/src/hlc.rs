//! The hybrid logical clock: readings that follow wall-clock time but never
//! go backwards and always move past every reading this node has seen.
//!
//! The clock never reads the time itself: callers pass milliseconds since
//! 1970. Readings from peers that lie more than `FUTURE_TOLERANCE_MS` ahead of
//! our wall clock are not followed, so one device with a wrong clock cannot
//! drag every node's clock into the future.

use crate::ids::Hlc;

/// How far ahead of our wall clock a peer's reading may pull us.
pub const FUTURE_TOLERANCE_MS: u64 = 60 * 60 * 1000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    last: Hlc,
}

impl Clock {
    pub fn starting_at(last: Hlc) -> Clock {
        Clock { last }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new reading for a local event at wall time `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        let physical = Hlc::from_parts(now_ms.min(u64::MAX >> 16), 0);
        self.last = if physical > self.last { physical } else { Hlc(self.last.0 + 1) };
        self.last
    }

    /// Takes note of a reading from elsewhere.
    pub fn observe(&mut self, seen: Hlc, now_ms: u64) {
        if seen.millis() <= now_ms.saturating_add(FUTURE_TOLERANCE_MS) && seen > self.last {
            self.last = seen;
        }
    }
}

/// Milliseconds since 1970 as RFC 3339 UTC (`2026-11-22T10:15:30.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_prints_civil_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_005), "2023-11-14T22:13:20.005Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn clock_never_goes_back_and_passes_what_it_saw() {
        let mut clock = Clock::default();
        let a = clock.tick(1000);
        let b = clock.tick(999);
        assert!(b > a);
        clock.observe(Hlc::from_parts(5000, 3), 1000);
        let c = clock.tick(1000);
        assert!(c > Hlc::from_parts(5000, 3));
        clock.observe(Hlc::from_parts(1000 + FUTURE_TOLERANCE_MS + 1, 0), 1000);
        assert!(clock.tick(1000).millis() <= 5000);
    }
}
