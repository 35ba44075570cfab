//! The web console's logins (SPEC §6.3): `ferry console` asks the serving
//! node for a one-time code, and prints the URL that carries it; the
//! browser trades the code for a session cookie at `/console/login`. A
//! code works once and for `CODE_TTL`; a session lasts `SESSION_TTL`. Both
//! live in memory only: a restart of the node logs every browser out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a login code printed by `ferry console` stays usable.
pub const CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a browser stays logged in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Codes and sessions kept at once; the oldest goes first.
const HELD_MAX: usize = 64;

#[derive(Default)]
pub struct Logins {
    codes: Mutex<HashMap<String, Instant>>,
    sessions: Mutex<HashMap<String, Instant>>,
}

fn secret() -> String {
    data_encoding::HEXLOWER.encode(&crate::random::bytes::<32>())
}

/// Drops what expired, then the oldest until one more fits.
fn make_room(held: &mut HashMap<String, Instant>, now: Instant) {
    held.retain(|_, until| *until > now);
    while held.len() >= HELD_MAX {
        let Some(oldest) = held.iter().min_by_key(|(_, until)| **until).map(|(k, _)| k.clone()) else { break };
        held.remove(&oldest);
    }
}

impl Logins {
    /// A new one-time code.
    pub fn code(&self) -> String {
        let now = Instant::now();
        let code = secret();
        let mut codes = self.codes.lock().expect("login codes lock");
        make_room(&mut codes, now);
        codes.insert(code.clone(), now + CODE_TTL);
        code
    }

    /// Trades a code for a session id; `None` for a code that is unknown,
    /// used or expired.
    pub fn redeem(&self, code: &str) -> Option<String> {
        let now = Instant::now();
        let until = self.codes.lock().expect("login codes lock").remove(code)?;
        if until <= now {
            return None;
        }
        let session = secret();
        let mut sessions = self.sessions.lock().expect("login sessions lock");
        make_room(&mut sessions, now);
        sessions.insert(session.clone(), now + SESSION_TTL);
        Some(session)
    }

    /// Whether `session` is a live session.
    pub fn valid(&self, session: &str) -> bool {
        let sessions = self.sessions.lock().expect("login sessions lock");
        sessions.get(session).is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_logs_in_once() {
        let logins = Logins::default();
        let code = logins.code();
        let session = logins.redeem(&code).expect("a fresh code works");
        assert!(logins.valid(&session));
        assert_eq!(logins.redeem(&code), None, "a used code does not work again");
        assert!(!logins.valid("not-a-session"));
        assert_eq!(logins.redeem("not-a-code"), None);
    }

    #[test]
    fn codes_are_bounded_and_the_oldest_goes_first() {
        let logins = Logins::default();
        let first = logins.code();
        for _ in 0..HELD_MAX {
            logins.code();
        }
        assert_eq!(logins.codes.lock().expect("lock").len(), HELD_MAX);
        assert_eq!(logins.redeem(&first), None, "the oldest code made room");
    }
}
