//! Failed SASL logins cost the guesser, not the users: after [`FREE_FAILURES`] failures from
//! one client address, that address's logins are checked one per [`CHECK_INTERVAL`] until one
//! succeeds or [`FORGET_AFTER`] passes without a failure, and every refusal is answered after
//! [`FAILED_DELAY`] (Kafka's `connection.failed.authentication.delay.ms`). The broker throttles
//! its own password checks by address too, but it sees every Kafka client at the gateway's
//! address; this keeps one guessing client from slowing down the others.
//!
//! A login waits on its own connection's thread, so the waiting is bounded by
//! `--max-connections`; the addresses remembered are at most [`MAX_ADDRESSES`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failures from one address checked without waiting.
pub const FREE_FAILURES: u32 = 5;

/// The time between two checks of a throttled address.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long an address's failures are remembered after its last one.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// How long a refused login waits before its answer.
pub const FAILED_DELAY: Duration = Duration::from_millis(100);

/// The most addresses remembered; past it the one whose last failure is oldest is forgotten.
pub const MAX_ADDRESSES: usize = 4096;

/// What is remembered of one address.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Failures since the last success (or since they were forgotten).
    failures: u32,
    /// Checks given a turn and not finished: each may be one more failure, so that many
    /// logins at once get no more free checks than one after the other.
    pending: u32,
    /// When the last failure came.
    last_failure: Instant,
    /// The earliest time the next throttled check may go.
    next_check: Instant,
}

/// The failed logins of every client address.
#[derive(Debug, Default)]
pub struct LoginBackoff {
    /// By address.
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl LoginBackoff {
    /// Waits until a login from `ip` may be checked, and takes that turn; the caller then
    /// reports the check's outcome ([`LoginBackoff::succeeded`], [`LoginBackoff::failed`]).
    /// How long it waited.
    pub fn wait_turn(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let turn = {
            let mut records = self.lock();
            let record = entry(&mut records, ip, now);
            if record.pending == 0 && now.duration_since(record.last_failure) >= FORGET_AFTER {
                record.failures = 0;
            }
            let throttled = record.failures.saturating_add(record.pending) >= FREE_FAILURES;
            record.pending = record.pending.saturating_add(1);
            if throttled {
                let turn = record.next_check.max(now);
                record.next_check = turn + CHECK_INTERVAL;
                turn
            } else {
                record.next_check = now + CHECK_INTERVAL;
                now
            }
        };
        let wait = turn.saturating_duration_since(now);
        std::thread::sleep(wait);
        wait
    }

    /// A login from `ip` was refused; the caller answers after [`FAILED_DELAY`].
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut records = self.lock();
        let record = entry(&mut records, ip, now);
        record.pending = record.pending.saturating_sub(1);
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
    }

    /// A login from `ip` succeeded: its failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().remove(&ip);
    }

    /// The number of addresses remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records; a poisoned lock is taken over.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `ip`'s record, made if new; at [`MAX_ADDRESSES`] the records without checks under way
/// whose last failure is over [`FORGET_AFTER`] old are forgotten first, then the oldest.
fn entry(records: &mut HashMap<IpAddr, Record>, ip: IpAddr, now: Instant) -> &mut Record {
    if !records.contains_key(&ip) && records.len() >= MAX_ADDRESSES {
        records.retain(|_, r| r.pending > 0 || now.duration_since(r.last_failure) < FORGET_AFTER);
        if records.len() >= MAX_ADDRESSES {
            let oldest = records
                .iter()
                .min_by_key(|(_, r)| (r.pending > 0, r.last_failure))
                .map(|(address, _)| *address);
            if let Some(oldest) = oldest {
                records.remove(&oldest);
            }
        }
    }
    records.entry(ip).or_insert(Record {
        failures: 0,
        pending: 0,
        last_failure: now.checked_sub(FORGET_AFTER).unwrap_or(now),
        next_check: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_the_free_failures_checks_are_spaced_and_a_success_clears_them() {
        let backoff = LoginBackoff::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(backoff.wait_turn(ip), Duration::ZERO);
            backoff.failed(ip);
        }
        let waited = backoff.wait_turn(ip);
        assert!(waited > CHECK_INTERVAL / 2, "{waited:?}");
        backoff.failed(ip);
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(backoff.wait_turn(other), Duration::ZERO);
        backoff.succeeded(ip);
        assert_eq!(backoff.wait_turn(ip), Duration::ZERO);
    }

    #[test]
    fn logins_at_once_get_no_more_free_checks_than_one_after_the_other() {
        let backoff = LoginBackoff::default();
        let ip: IpAddr = "192.0.2.3".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(backoff.wait_turn(ip), Duration::ZERO);
        }
        let waited = backoff.wait_turn(ip);
        assert!(waited > CHECK_INTERVAL / 2, "{waited:?}");
    }

    #[test]
    fn the_addresses_remembered_are_bounded() {
        let backoff = LoginBackoff::default();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            backoff.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(backoff.len(), MAX_ADDRESSES);
    }
}
