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
        self.last = if physical > self.last {
            physical
        } else {
            Hlc(self.last.0 + 1)
        };
        self.last
    }

    /// Takes note of a reading from elsewhere.
    pub fn observe(&mut self, seen: Hlc, now_ms: u64) {
        if seen.millis() <= now_ms.saturating_add(FUTURE_TOLERANCE_MS) && seen > self.last {
            self.last = seen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
