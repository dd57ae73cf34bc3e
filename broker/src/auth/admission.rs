//! Which password checks run, and when: a login flood costs the addresses it comes from, not
//! the users logging in from elsewhere.
//!
//! A PLAIN login costs an Argon2 hash (about 25 ms of a core), and a handshake waiting for its
//! check holds a connection's buffers. So the checks waiting are bounded, per source address
//! and in all, and one that does not fit is refused at once, unchecked. Each address may fail a
//! few times freely; after that, its checks are spaced (one a second, fail2ban's way, and what
//! Kafka's `connection.failed.authentication.delay.ms` aims at), while addresses without recent
//! failures go first. A success clears the address's failures, and failures are forgotten
//! after a quiet minute.
//!
//! The state is plain data over a caller's clock, so the rules are tested without sockets or
//! threads; the ZAP handler (`auth::answer_zap`) feeds it and runs the checks it hands out.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The bounds and the pace.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Checks waiting from one address.
    pub per_source: usize,
    /// Checks waiting from all addresses together.
    pub total: usize,
    /// Addresses remembered (with failures or waiting checks).
    pub sources: usize,
    /// Failures an address may have before its checks are spaced.
    pub free_failures: u32,
    /// The space between two checks of an address past its free failures.
    pub spacing: Duration,
    /// How long failures are remembered after the last one.
    pub memory: Duration,
}

impl Default for Limits {
    /// 8 waiting per address and 256 in all: a user behind an address under attack waits at
    /// most a few seconds, and 256 waiting handshakes hold a few megabytes. Five free
    /// failures: room for typing mistakes, not for guessing.
    fn default() -> Self {
        Limits {
            per_source: 8,
            total: 256,
            sources: 4096,
            free_failures: 5,
            spacing: Duration::from_secs(1),
            memory: Duration::from_secs(60),
        }
    }
}

/// Why a login was refused without a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Its address has as many checks waiting as it may.
    Source,
    /// As many checks wait as the broker holds, or as many addresses as it remembers.
    Total,
}

/// One address's record.
#[derive(Debug)]
struct Source<J> {
    /// Failed checks since the last success, forgotten after a quiet [`Limits::memory`].
    failures: u32,
    /// When the last failure was.
    last_failure: Option<Instant>,
    /// When its next check may start.
    next_check: Option<Instant>,
    /// Its checks waiting, oldest first.
    waiting: VecDeque<J>,
}

impl<J> Source<J> {
    fn new() -> Source<J> {
        Source { failures: 0, last_failure: None, next_check: None, waiting: VecDeque::new() }
    }

    /// Whether it may be forgotten: nothing waiting and no failure remembered.
    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.failures == 0
    }
}

/// The checks waiting, by source address.
#[derive(Debug)]
pub struct Admission<J> {
    /// The bounds.
    limits: Limits,
    /// The addresses known.
    sources: HashMap<String, Source<J>>,
    /// Checks waiting in all.
    waiting: usize,
}

impl<J> Admission<J> {
    /// Nothing waiting, nothing remembered.
    pub fn new(limits: Limits) -> Admission<J> {
        Admission { limits, sources: HashMap::new(), waiting: 0 }
    }

    /// Queues `job`, a check for a login from `source`.
    ///
    /// # Errors
    /// The job back, with why it does not fit: refuse its login unchecked.
    pub fn offer(&mut self, source: &str, job: J, now: Instant) -> Result<(), (J, Overflow)> {
        self.forget_quiet(source, now);
        if self.waiting >= self.limits.total {
            return Err((job, Overflow::Total));
        }
        if !self.sources.contains_key(source) && self.sources.len() >= self.limits.sources {
            let idle = self.sources.iter().find(|(_, s)| s.is_idle()).map(|(a, _)| a.clone());
            match idle {
                Some(address) => drop(self.sources.remove(&address)),
                None => return Err((job, Overflow::Total)),
            }
        }
        let record = self.sources.entry(source.to_owned()).or_insert_with(Source::new);
        if record.waiting.len() >= self.limits.per_source {
            return Err((job, Overflow::Source));
        }
        record.waiting.push_back(job);
        self.waiting += 1;
        Ok(())
    }

    /// The next check to run now, with its address: from addresses within their free failures
    /// first, then from the others whose spacing has passed. An address past its free
    /// failures is given its next turn a spacing from now.
    pub fn next(&mut self, now: Instant) -> Option<(String, J)> {
        let free = self.limits.free_failures;
        let (address, _) = self
            .sources
            .iter()
            .filter(|(_, s)| !s.waiting.is_empty() && s.next_check.is_none_or(|at| at <= now))
            .min_by_key(|(_, s)| (s.failures >= free, s.next_check))?;
        let address = address.clone();
        let record = self.sources.get_mut(&address)?;
        let job = record.waiting.pop_front()?;
        self.waiting -= 1;
        if record.failures >= free {
            record.next_check = Some(now + self.limits.spacing);
        }
        Some((address, job))
    }

    /// Records the outcome of a check of a login from `source`.
    pub fn settle(&mut self, source: &str, accepted: bool, now: Instant) {
        let Some(record) = self.sources.get_mut(source) else { return };
        if accepted {
            record.failures = 0;
            record.last_failure = None;
            record.next_check = None;
        } else {
            record.failures = record.failures.saturating_add(1);
            record.last_failure = Some(now);
            if record.failures >= self.limits.free_failures {
                let spaced = now + self.limits.spacing;
                record.next_check = Some(record.next_check.map_or(spaced, |at| at.max(spaced)));
            }
        }
        if record.is_idle() {
            self.sources.remove(source);
        }
    }

    /// When a waiting check may next start, if one waits for its spacing; `None` when nothing
    /// waits or something may start now (the caller asks [`Admission::next`] first).
    pub fn next_due(&self) -> Option<Instant> {
        self.sources.values().filter(|s| !s.waiting.is_empty()).filter_map(|s| s.next_check).min()
    }

    /// Checks waiting in all.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Forgets the failures of `source` when the last one is older than the memory.
    fn forget_quiet(&mut self, source: &str, now: Instant) {
        let memory = self.limits.memory;
        if let Some(record) = self.sources.get_mut(source) {
            if record.last_failure.is_some_and(|at| now.saturating_duration_since(at) >= memory) {
                record.failures = 0;
                record.last_failure = None;
                record.next_check = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn limits() -> Limits {
        Limits { per_source: 3, total: 5, sources: 3, free_failures: 2, ..Limits::default() }
    }

    /// Runs every check that may start at `now`, each failing; their jobs.
    fn fail_all(admission: &mut Admission<u32>, now: Instant) -> Vec<u32> {
        let mut ran = Vec::new();
        while let Some((source, job)) = admission.next(now) {
            admission.settle(&source, false, now);
            ran.push(job);
        }
        ran
    }

    #[test]
    fn checks_beyond_an_address_share_or_the_total_are_refused_unchecked() {
        let mut admission = Admission::new(limits());
        let t0 = Instant::now();
        for job in 0..3 {
            assert!(admission.offer("10.0.0.1", job, t0).is_ok());
        }
        assert_eq!(admission.offer("10.0.0.1", 3, t0), Err((3, Overflow::Source)));
        assert!(admission.offer("10.0.0.2", 4, t0).is_ok());
        assert!(admission.offer("10.0.0.2", 5, t0).is_ok());
        assert_eq!(admission.offer("10.0.0.3", 6, t0), Err((6, Overflow::Total)));
        assert_eq!(admission.waiting(), 5);
    }

    #[test]
    fn an_address_that_keeps_failing_gets_one_check_a_spacing() {
        let mut admission = Admission::new(limits());
        let t0 = Instant::now();
        for job in 0..3 {
            admission.offer("10.0.0.1", job, t0).expect("room");
        }
        assert_eq!(fail_all(&mut admission, t0), [0, 1], "two free failures, then spaced");
        assert_eq!(admission.next_due(), Some(t0 + SECOND));
        assert!(admission.next(t0 + SECOND / 2).is_none());
        assert_eq!(fail_all(&mut admission, t0 + SECOND), [2]);
        admission.offer("10.0.0.1", 3, t0 + SECOND).expect("room");
        admission.offer("10.0.0.1", 4, t0 + SECOND).expect("room");
        assert!(fail_all(&mut admission, t0 + SECOND).is_empty());
        assert_eq!(fail_all(&mut admission, t0 + 2 * SECOND), [3]);
        assert_eq!(fail_all(&mut admission, t0 + 3 * SECOND), [4]);
    }

    #[test]
    fn an_address_without_failures_goes_before_one_under_spacing() {
        let mut admission = Admission::new(limits());
        let t0 = Instant::now();
        for job in 0..3 {
            admission.offer("attacker", job, t0).expect("room");
        }
        fail_all(&mut admission, t0);
        let later = t0 + 2 * SECOND;
        admission.offer("attacker", 10, later).expect("room");
        admission.offer("user", 20, later).expect("room");
        assert_eq!(admission.next(later).map(|(_, job)| job), Some(20), "the clean address");
        assert_eq!(admission.next(later).map(|(_, job)| job), Some(2), "the oldest it had");
        assert!(admission.next(later).is_none(), "its next turn is a spacing later");
    }

    #[test]
    fn a_success_clears_the_failures_and_quiet_forgets_them() {
        let mut admission = Admission::new(limits());
        let t0 = Instant::now();
        for job in 0..2 {
            admission.offer("10.0.0.1", job, t0).expect("room");
        }
        fail_all(&mut admission, t0);
        admission.offer("10.0.0.1", 2, t0).expect("room");
        assert!(admission.next(t0).is_none(), "spaced");
        let (source, _) = admission.next(t0 + SECOND).expect("its turn");
        admission.settle(&source, true, t0 + SECOND);
        for job in 3..5 {
            admission.offer("10.0.0.1", job, t0 + SECOND).expect("room");
        }
        assert_eq!(fail_all(&mut admission, t0 + SECOND), [3, 4], "free again");
        let much_later = t0 + 3 * limits().memory;
        admission.offer("10.0.0.1", 5, much_later).expect("room");
        assert_eq!(fail_all(&mut admission, much_later), [5], "forgotten after a quiet minute");
    }

    #[test]
    fn idle_addresses_make_room_and_busy_ones_are_kept() {
        let mut admission = Admission::new(Limits { total: 100, ..limits() });
        let t0 = Instant::now();
        for source in ["a", "b", "c"] {
            admission.offer(source, 0, t0).expect("room");
        }
        assert_eq!(admission.offer("d", 0, t0), Err((0, Overflow::Total)), "all three wait");
        let (source, _) = admission.next(t0).expect("one");
        admission.settle(&source, true, t0);
        assert!(admission.offer("d", 0, t0).is_ok(), "a settled address made room");
    }
}
