//! Which password checks run, and when: a login flood costs the addresses and the user names it
//! comes with, not the users logging in from elsewhere or as someone else.
//!
//! A PLAIN login costs an Argon2 hash (about 25 ms of a core), and a handshake waiting for its
//! check holds a connection's buffers. So the checks waiting are bounded: per login (a source
//! address and a user name), per address and in all; one that does not fit is refused at once,
//! unchecked. Each login may fail a few times freely; after that, its checks are spaced (one a
//! second, fail2ban's way, and what Kafka's `connection.failed.authentication.delay.ms` aims
//! at). Logins without recent failures go first, and among them those from addresses without
//! many. A success clears the login's failures, and failures are forgotten after a quiet
//! minute.
//!
//! Logins are told apart by user name as well as by address because many users may share one:
//! everyone behind the web console or the Kafka gateway reaches the broker from that program's
//! address, and one of them typing a wrong password must not slow the others' logins.
//!
//! The state is plain data over a caller's clock, so the rules are tested without sockets or
//! threads; the ZAP handler (`auth::ZapHandler`) feeds it and runs the checks it hands out.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The bounds and the pace.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Checks waiting for one login (address and user name).
    pub per_login: usize,
    /// Checks waiting from one address.
    pub per_source: usize,
    /// Checks waiting from all addresses together.
    pub total: usize,
    /// Logins remembered (with failures or waiting checks).
    pub logins: usize,
    /// Failures a login may have before its checks are spaced.
    pub free_failures: u32,
    /// Failures of an address, all its user names together, past which its logins go after
    /// those of other addresses.
    pub suspect_failures: u32,
    /// The space between two checks of a login past its free failures.
    pub spacing: Duration,
    /// How long failures are remembered after the last one.
    pub memory: Duration,
}

impl Default for Limits {
    /// 8 waiting per login, 64 per address and 256 in all: a user behind an address under
    /// attack waits at most a few seconds, and 256 waiting handshakes hold a few megabytes.
    /// Five free failures: room for typing mistakes, not for guessing.
    fn default() -> Self {
        Limits {
            per_login: 8,
            per_source: 64,
            total: 256,
            logins: 4096,
            free_failures: 5,
            suspect_failures: 20,
            spacing: Duration::from_secs(1),
            memory: Duration::from_secs(60),
        }
    }
}

/// Why a login was refused without a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Its address, or its address and user name, have as many checks waiting as they may.
    Source,
    /// As many checks wait as the broker holds, or as many logins as it remembers.
    Total,
}

/// Failures, forgotten a quiet [`Limits::memory`] after the last one.
#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    /// How many since the last success (or the last quiet spell).
    count: u32,
    /// When the last one was.
    last: Option<Instant>,
}

impl Failures {
    /// One more, at `now`.
    fn add(&mut self, now: Instant) {
        self.count = self.count.saturating_add(1);
        self.last = Some(now);
    }

    /// Forgets them if the last is older than `memory`.
    fn fade(&mut self, now: Instant, memory: Duration) {
        if self.last.is_some_and(|at| now.saturating_duration_since(at) >= memory) {
            *self = Failures::default();
        }
    }
}

/// One login's record: an address and a user name.
#[derive(Debug)]
struct Login<J> {
    /// Its failed checks.
    failures: Failures,
    /// When its next check may start.
    next_check: Option<Instant>,
    /// Its checks waiting, oldest first.
    waiting: VecDeque<J>,
    /// Its checks running, not yet settled.
    checking: u32,
}

impl<J> Login<J> {
    /// Whether its next check is past its free failures: counting, once it has failed, the
    /// checks still running as failures, so that checks run side by side do not pass more
    /// than the free ones (a login that never failed is not held back by a burst of its own).
    fn past_free(&self, free: u32) -> bool {
        self.failures.count >= free
            || (self.failures.count > 0 && self.failures.count + self.checking >= free)
    }
}

/// One address's record, all its user names together.
#[derive(Debug, Default)]
struct Source {
    /// Its failed checks.
    failures: Failures,
    /// Its checks waiting.
    waiting: usize,
}

/// The checks waiting, by login.
#[derive(Debug)]
pub struct Admission<J> {
    /// The bounds.
    limits: Limits,
    /// The logins known, by (address, user name).
    logins: HashMap<(String, String), Login<J>>,
    /// The addresses known.
    sources: HashMap<String, Source>,
    /// Checks waiting in all.
    waiting: usize,
}

impl<J> Admission<J> {
    /// Nothing waiting, nothing remembered.
    pub fn new(limits: Limits) -> Admission<J> {
        Admission { limits, logins: HashMap::new(), sources: HashMap::new(), waiting: 0 }
    }

    /// Queues `job`, a check of a login as `user` from `source`.
    ///
    /// # Errors
    /// The job back, with why it does not fit: refuse its login unchecked.
    pub fn offer(
        &mut self,
        source: &str,
        user: &str,
        job: J,
        now: Instant,
    ) -> Result<(), (J, Overflow)> {
        if self.waiting >= self.limits.total {
            return Err((job, Overflow::Total));
        }
        let key = (source.to_owned(), user.to_owned());
        if !self.logins.contains_key(&key) && self.logins.len() >= self.limits.logins {
            self.forget_idle(now);
            if self.logins.len() >= self.limits.logins {
                return Err((job, Overflow::Total));
            }
        }
        let address = self.sources.entry(key.0.clone()).or_default();
        address.failures.fade(now, self.limits.memory);
        if address.waiting >= self.limits.per_source {
            return Err((job, Overflow::Source));
        }
        let login = self.logins.entry(key).or_insert_with(|| Login {
            failures: Failures::default(),
            next_check: None,
            waiting: VecDeque::new(),
            checking: 0,
        });
        login.failures.fade(now, self.limits.memory);
        if login.failures.count == 0 {
            login.next_check = None;
        }
        if login.waiting.len() >= self.limits.per_login {
            return Err((job, Overflow::Source));
        }
        login.waiting.push_back(job);
        address.waiting += 1;
        self.waiting += 1;
        Ok(())
    }

    /// The next check to run now, with its address: logins within their free failures first,
    /// from addresses without many failures first; then the others whose spacing has passed.
    /// A login past its free failures is given its next turn a spacing from now.
    pub fn next(&mut self, now: Instant) -> Option<(String, J)> {
        let limits = self.limits;
        let sources = &self.sources;
        let key = self
            .logins
            .iter()
            .filter(|(_, l)| !l.waiting.is_empty() && l.next_check.is_none_or(|at| at <= now))
            .min_by_key(|((source, _), login)| {
                let suspect = sources
                    .get(source)
                    .is_some_and(|s| s.failures.count >= limits.suspect_failures);
                (login.past_free(limits.free_failures), suspect, login.next_check)
            })
            .map(|(key, _)| key.clone())?;
        let login = self.logins.get_mut(&key)?;
        let job = login.waiting.pop_front()?;
        login.checking = login.checking.saturating_add(1);
        if login.past_free(limits.free_failures) {
            login.next_check = Some(now + limits.spacing);
        }
        self.waiting -= 1;
        if let Some(address) = self.sources.get_mut(&key.0) {
            address.waiting = address.waiting.saturating_sub(1);
        }
        Some((key.0, job))
    }

    /// Records the outcome of a check of a login as `user` from `source`.
    pub fn settle(&mut self, source: &str, user: &str, accepted: bool, now: Instant) {
        let key = (source.to_owned(), user.to_owned());
        if let Some(login) = self.logins.get_mut(&key) {
            login.checking = login.checking.saturating_sub(1);
            if accepted {
                login.failures = Failures::default();
                login.next_check = None;
            } else {
                login.failures.add(now);
                if login.failures.count >= self.limits.free_failures {
                    let spaced = now + self.limits.spacing;
                    login.next_check = Some(login.next_check.map_or(spaced, |at| at.max(spaced)));
                }
            }
            if login.waiting.is_empty() && login.failures.count == 0 && login.checking == 0 {
                self.logins.remove(&key);
            }
        }
        if let Some(address) = self.sources.get_mut(source) {
            if !accepted {
                address.failures.add(now);
            }
            if address.waiting == 0 && address.failures.count == 0 {
                self.sources.remove(source);
            }
        }
    }

    /// When a waiting check may next start, if one waits for its spacing; `None` when nothing
    /// waits or something may start now (the caller asks [`Admission::next`] first).
    pub fn next_due(&self) -> Option<Instant> {
        self.logins.values().filter(|l| !l.waiting.is_empty()).filter_map(|l| l.next_check).min()
    }

    /// Checks waiting in all.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Forgets the logins and addresses with nothing waiting and no failure left to remember.
    fn forget_idle(&mut self, now: Instant) {
        let memory = self.limits.memory;
        self.logins.retain(|_, login| {
            login.failures.fade(now, memory);
            !login.waiting.is_empty() || login.failures.count > 0 || login.checking > 0
        });
        self.sources.retain(|_, source| {
            source.failures.fade(now, memory);
            source.waiting > 0 || source.failures.count > 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn limits() -> Limits {
        Limits {
            per_login: 3,
            per_source: 4,
            total: 6,
            logins: 3,
            free_failures: 2,
            suspect_failures: 3,
            ..Limits::default()
        }
    }

    /// Runs every check that may start at `now`, each failing; their jobs.
    fn fail_all(admission: &mut Admission<(&'static str, u32)>, now: Instant) -> Vec<u32> {
        let mut ran = Vec::new();
        while let Some((source, (user, job))) = admission.next(now) {
            admission.settle(&source, user, false, now);
            ran.push(job);
        }
        ran
    }

    /// Offers job `n` as `user` from `source`.
    fn offer(
        admission: &mut Admission<(&'static str, u32)>,
        source: &str,
        user: &'static str,
        n: u32,
        now: Instant,
    ) -> Result<(), Overflow> {
        admission.offer(source, user, (user, n), now).map_err(|(_, overflow)| overflow)
    }

    #[test]
    fn checks_beyond_a_logins_or_an_addresss_share_or_the_total_are_refused_unchecked() {
        let mut admission = Admission::new(Limits { logins: 100, ..limits() });
        let t0 = Instant::now();
        for n in 0..3 {
            assert_eq!(offer(&mut admission, "10.0.0.1", "ann", n, t0), Ok(()));
        }
        assert_eq!(offer(&mut admission, "10.0.0.1", "ann", 3, t0), Err(Overflow::Source));
        assert_eq!(offer(&mut admission, "10.0.0.1", "bob", 4, t0), Ok(()), "another user");
        assert_eq!(offer(&mut admission, "10.0.0.1", "cat", 5, t0), Err(Overflow::Source));
        assert_eq!(offer(&mut admission, "10.0.0.2", "ann", 6, t0), Ok(()));
        assert_eq!(offer(&mut admission, "10.0.0.3", "ann", 7, t0), Ok(()), "six in all");
        assert_eq!(offer(&mut admission, "10.0.0.3", "ann", 8, t0), Err(Overflow::Total));
        assert_eq!(admission.waiting(), 6);
    }

    #[test]
    fn a_login_that_keeps_failing_gets_one_check_a_spacing() {
        let mut admission = Admission::new(limits());
        let t0 = Instant::now();
        for n in 0..3 {
            offer(&mut admission, "10.0.0.1", "ann", n, t0).expect("room");
        }
        assert_eq!(fail_all(&mut admission, t0), [0, 1], "two free failures, then spaced");
        assert_eq!(admission.next_due(), Some(t0 + SECOND));
        assert!(admission.next(t0 + SECOND / 2).is_none());
        assert_eq!(fail_all(&mut admission, t0 + SECOND), [2]);
        offer(&mut admission, "10.0.0.1", "ann", 3, t0 + SECOND).expect("room");
        offer(&mut admission, "10.0.0.1", "ann", 4, t0 + SECOND).expect("room");
        assert!(fail_all(&mut admission, t0 + SECOND).is_empty());
        assert_eq!(fail_all(&mut admission, t0 + 2 * SECOND), [3]);
        assert_eq!(fail_all(&mut admission, t0 + 3 * SECOND), [4]);
    }

    #[test]
    fn checks_running_side_by_side_pass_no_more_than_the_free_failures() {
        let mut admission = Admission::new(Limits { free_failures: 3, ..limits() });
        let t0 = Instant::now();
        for n in 0..3 {
            offer(&mut admission, "10.0.0.1", "ann", n, t0).expect("room");
        }
        // One failure, then two checks taken at once by two threads: the second is the last
        // free one, and the third waits its spacing though neither has failed yet.
        let (_, first) = admission.next(t0).expect("a check");
        admission.settle("10.0.0.1", first.0, false, t0);
        assert!(admission.next(t0).is_some() && admission.next(t0).is_some());
        offer(&mut admission, "10.0.0.1", "ann", 3, t0).expect("room");
        assert!(admission.next(t0).is_none(), "past the free failures while two are running");
        assert_eq!(admission.next_due(), Some(t0 + SECOND));
        // A login that never failed runs a burst of checks side by side unspaced.
        for n in 10..13 {
            offer(&mut admission, "10.0.0.1", "bob", n, t0).expect("room");
        }
        let burst: Vec<_> = std::iter::from_fn(|| admission.next(t0)).collect();
        assert_eq!(burst.len(), 3, "{burst:?}");
    }

    #[test]
    fn another_user_from_the_same_address_is_not_held_back() {
        let mut admission = Admission::new(limits());
        let t0 = Instant::now();
        for n in 0..3 {
            offer(&mut admission, "console", "mallory", n, t0).expect("room");
        }
        fail_all(&mut admission, t0);
        offer(&mut admission, "console", "ann", 10, t0).expect("room");
        let (_, (user, _)) = admission.next(t0).expect("ann's turn now");
        assert_eq!(user, "ann");
    }

    #[test]
    fn clean_logins_go_first_and_an_address_with_many_failures_after_the_others() {
        let limits = Limits { total: 100, per_source: 100, logins: 100, ..limits() };
        let mut admission = Admission::new(limits);
        let t0 = Instant::now();
        // An address that failed as three users: suspect, though each login has one failure.
        for user in ["a", "b", "c"] {
            offer(&mut admission, "attacker", user, 0, t0).expect("room");
        }
        fail_all(&mut admission, t0);
        let later = t0 + SECOND;
        offer(&mut admission, "attacker", "a", 1, later).expect("room");
        offer(&mut admission, "user", "ann", 2, later).expect("room");
        assert_eq!(admission.next(later).map(|(_, (_, n))| n), Some(2), "the clean address");
        assert_eq!(admission.next(later).map(|(_, (_, n))| n), Some(1));
    }

    #[test]
    fn a_success_clears_the_failures_and_quiet_forgets_them() {
        let mut admission = Admission::new(limits());
        let t0 = Instant::now();
        for n in 0..2 {
            offer(&mut admission, "10.0.0.1", "ann", n, t0).expect("room");
        }
        fail_all(&mut admission, t0);
        offer(&mut admission, "10.0.0.1", "ann", 2, t0).expect("room");
        assert!(admission.next(t0).is_none(), "spaced");
        let (source, _) = admission.next(t0 + SECOND).expect("its turn");
        admission.settle(&source, "ann", true, t0 + SECOND);
        for n in 3..5 {
            offer(&mut admission, "10.0.0.1", "ann", n, t0 + SECOND).expect("room");
        }
        assert_eq!(fail_all(&mut admission, t0 + SECOND), [3, 4], "free again");
        let much_later = t0 + 3 * limits().memory;
        offer(&mut admission, "10.0.0.1", "ann", 5, much_later).expect("room");
        assert_eq!(fail_all(&mut admission, much_later), [5], "forgotten after a quiet minute");
    }

    #[test]
    fn idle_logins_make_room_and_busy_ones_are_kept() {
        let mut admission = Admission::new(Limits { total: 100, per_source: 100, ..limits() });
        let t0 = Instant::now();
        for source in ["a", "b", "c"] {
            offer(&mut admission, source, "ann", 0, t0).expect("room");
        }
        assert_eq!(offer(&mut admission, "d", "ann", 0, t0), Err(Overflow::Total), "all wait");
        let (source, _) = admission.next(t0).expect("one");
        admission.settle(&source, "ann", true, t0);
        assert_eq!(offer(&mut admission, "d", "ann", 0, t0), Ok(()), "a settled login made room");
    }
}
