//! The login throttle: failed `/api/login` checks slow down the address they come from.
//!
//! Each client address may fail [`FREE_FAILURES`] logins; after that it gets one check per
//! [`SPACING`] and a login asked sooner is refused at once with `429`, without asking the broker
//! (so a guessing loop costs the broker one password check a second per address, not thirty).
//! The count is per address and not per user, so a flood cannot lock a user out from
//! everywhere; a successful login clears it, and an address quiet for [`FORGET_AFTER`] starts
//! afresh. At most [`MAX_ADDRESSES`] addresses are remembered, the quietest forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failures an address may have before it is throttled.
pub const FREE_FAILURES: u32 = 3;

/// Past the free failures, an address gets one check per this long.
pub const SPACING: Duration = Duration::from_secs(1);

/// An address with no failure for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(10 * 60);

/// At most this many addresses are remembered.
pub const MAX_ADDRESSES: usize = 4096;

/// One address's failures.
#[derive(Debug, Clone, Copy)]
struct Failures {
    /// How many in a row.
    count: u32,
    /// When the last check of this address began.
    last: Instant,
}

/// The failures of every address that failed lately.
#[derive(Debug, Default)]
pub struct Throttle {
    /// By address.
    failed: Mutex<HashMap<IpAddr, Failures>>,
}

impl Throttle {
    /// No failures yet.
    pub fn new() -> Throttle {
        Throttle::default()
    }

    /// Whether `source` may have its login checked now; `Err` is how long until it may. A
    /// throttled address's check counts as its turn, so a loop gets one check per [`SPACING`].
    ///
    /// # Errors
    /// `source` failed too often lately: the wait before its next check.
    pub fn admit(&self, source: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = failed.get_mut(&source) else { return Ok(()) };
        if entry.count < FREE_FAILURES {
            return Ok(());
        }
        let since = now.duration_since(entry.last);
        if since < SPACING {
            return Err(SPACING - since);
        }
        entry.last = now;
        Ok(())
    }

    /// Records that `source`'s login was refused.
    pub fn failed(&self, source: IpAddr) {
        let now = Instant::now();
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if !failed.contains_key(&source) && failed.len() >= MAX_ADDRESSES {
            failed.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if failed.len() >= MAX_ADDRESSES {
                let quietest = failed.iter().min_by_key(|(_, f)| f.last).map(|(a, _)| *a);
                if let Some(quietest) = quietest {
                    failed.remove(&quietest);
                }
            }
        }
        let entry = failed.entry(source).or_insert(Failures { count: 0, last: now });
        if now.duration_since(entry.last) > FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    /// Records that `source` logged in: its failures are forgotten.
    pub fn succeeded(&self, source: IpAddr) {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).remove(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const THERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn a_few_failures_are_free_then_one_check_a_second_per_address() {
        let throttle = Throttle::new();
        for _ in 0..FREE_FAILURES {
            assert!(throttle.admit(HERE).is_ok());
            throttle.failed(HERE);
        }
        let wait = throttle.admit(HERE).expect_err("throttled");
        assert!(wait <= SPACING && wait > Duration::ZERO, "{wait:?}");
        // Another address is not slowed by this one.
        assert!(throttle.admit(THERE).is_ok());
        throttle.succeeded(HERE);
        assert!(throttle.admit(HERE).is_ok());
    }

    #[test]
    fn the_addresses_remembered_are_bounded() {
        let throttle = Throttle::new();
        for n in 0..MAX_ADDRESSES as u32 + 100 {
            throttle.failed(IpAddr::V4(std::net::Ipv4Addr::from(n)));
        }
        assert!(throttle.failed.lock().expect("not poisoned").len() <= MAX_ADDRESSES);
    }
}
