//! Logical brokers and their claims.
//!
//! A logical broker is a claimable view of the broker's one store. A consumer claims one for a
//! lease; while the claim lasts nobody else can have it. Every logical broker is an instance of
//! the same type, told apart by its id.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use protocol::BrokerStatus;
use thiserror::Error;

use crate::store::Totals;

/// Why a claim, renewal or release was refused. A refusal changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClaimError {
    /// Every logical broker is claimed.
    #[error("no logical broker is available: all {0} are claimed")]
    NoneAvailable(usize),
    /// The logical broker asked for is claimed by someone else.
    #[error("logical broker {0} is claimed by someone else")]
    Busy(u32),
    /// No logical broker has this id.
    #[error("there is no logical broker {id}; ids run from 1 to {count}")]
    UnknownBroker {
        /// The id asked for.
        id: u32,
        /// How many there are.
        count: usize,
    },
    /// The token names no current claim: never given, released, or expired.
    #[error("claim {0} is unknown or has expired; claim a logical broker again")]
    UnknownClaim(u64),
    /// The claims shared with other broker processes could not be reached.
    #[error("cannot claim: {0}")]
    Ledger(String),
}

/// Where claims are also kept when several broker processes share their logical brokers
/// (`--store nats://...`): the door to claims held through other processes.
pub trait Ledger: std::fmt::Debug + Send {
    /// Takes logical broker `id` for `holder` unless a claim on it is held anywhere; returns
    /// whether it was taken. Waits for the answer (bounded).
    ///
    /// # Errors
    /// The shared claims cannot be reached.
    fn take(&mut self, id: u32, holder: &str) -> Result<bool, String>;

    /// Gives logical broker `id` back, without waiting.
    fn free(&mut self, id: u32);

    /// The claims taken, renewed or ended through other broker processes since the last
    /// call, oldest first, without waiting.
    fn changes(&mut self) -> Vec<ClaimChange>;
}

/// A claim taken, renewed or ended through another broker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimChange {
    /// The logical broker.
    pub id: u32,
    /// Who holds it and how long its claim lasts unrenewed from now; `None` when it ended.
    pub held: Option<(String, Duration)>,
}

/// A claim held through another broker process, as far as this one knows.
#[derive(Debug, Clone)]
struct Elsewhere {
    /// Who holds it, for `status`.
    holder: String,
    /// When it lapses unless renewed there (its renewal is a change too).
    until: Instant,
}

/// A current claim on one logical broker.
#[derive(Debug, Clone)]
struct Claim {
    /// The secret the holder sends with each request.
    token: u64,
    /// Who holds it, for `status`.
    holder: String,
    /// When it lapses unless renewed.
    expires_at: Instant,
}

/// One logical broker.
#[derive(Debug, Clone)]
struct LogicalBroker {
    /// Its id, from 1.
    id: u32,
    /// Its claim, if it is claimed through this process.
    claim: Option<Claim>,
    /// Its claim through another broker process, if one is known.
    elsewhere: Option<Elsewhere>,
}

/// The logical brokers of one broker process.
#[derive(Debug)]
pub struct LogicalBrokers {
    /// Ordered by id, which is the index plus one.
    brokers: Vec<LogicalBroker>,
    /// How long a claim lasts without a request.
    lease: Duration,
    /// Where claim tokens come from.
    tokens: Tokens,
    /// Claims shared with other broker processes, if any.
    ledger: Option<Box<dyn Ledger>>,
}

impl LogicalBrokers {
    /// `count` free logical brokers, ids 1 to `count`, whose claims last `lease`.
    pub fn new(count: u32, lease: Duration) -> LogicalBrokers {
        let brokers =
            (1..=count).map(|id| LogicalBroker { id, claim: None, elsewhere: None }).collect();
        LogicalBrokers { brokers, lease, tokens: Tokens::new(), ledger: None }
    }

    /// Keeps claims in `ledger` too, so that other broker processes see them.
    pub fn share(&mut self, ledger: Box<dyn Ledger>) {
        self.ledger = Some(ledger);
    }

    /// How long a claim lasts without a request.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Claims logical broker `wanted`, or the lowest-numbered free one, for `holder`.
    /// Returns its id and the claim token.
    ///
    /// # Errors
    /// An unknown id, a busy wanted broker, or none free.
    pub fn claim(
        &mut self,
        wanted: Option<u32>,
        holder: &str,
        now: Instant,
    ) -> Result<(u32, u64), ClaimError> {
        let count = self.brokers.len();
        let at = match wanted {
            Some(id) => {
                self.check_id(id)?;
                if !self.brokers[index(id)].is_free() || !self.take_shared(id, holder, now)? {
                    return Err(ClaimError::Busy(id));
                }
                index(id)
            }
            None => {
                let mut found = None;
                for at in 0..count {
                    let id = self.brokers[at].id;
                    if self.brokers[at].is_free() && self.take_shared(id, holder, now)? {
                        found = Some(at);
                        break;
                    }
                }
                found.ok_or(ClaimError::NoneAvailable(count))?
            }
        };
        let token = self.tokens.next();
        let broker = &mut self.brokers[at];
        broker.claim =
            Some(Claim { token, holder: holder.to_owned(), expires_at: now + self.lease });
        Ok((broker.id, token))
    }

    /// Takes logical broker `id` in the shared claims, if there are any. One found taken is
    /// held elsewhere until the shared claims say otherwise (a renewal seen there sets how
    /// long), or for a tenth of a lease (between 100 ms and a second) from `now`, when it is
    /// asked again: a claim whose holder died lingers in the shared claims until their time to
    /// live removes it, and waiting a whole lease more from then would free it only after
    /// about two.
    fn take_shared(&mut self, id: u32, holder: &str, now: Instant) -> Result<bool, ClaimError> {
        let Some(ledger) = &mut self.ledger else { return Ok(true) };
        let taken = ledger.take(id, holder).map_err(ClaimError::Ledger)?;
        if !taken {
            let holder = "a client of another broker process".to_owned();
            let again = (self.lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
            self.brokers[index(id)].elsewhere = Some(Elsewhere { holder, until: now + again });
        }
        Ok(taken)
    }

    /// Takes in the claims taken, renewed or ended through other broker processes, and ends
    /// those that lapsed there by `now` (their process stopped renewing them). Returns
    /// whether a logical broker became free here.
    pub fn follow_shared(&mut self, now: Instant) -> bool {
        let changes = self.ledger.as_mut().map(|l| l.changes()).unwrap_or_default();
        let mut freed = false;
        for change in changes {
            let Some(broker) = self.brokers.get_mut(index(change.id)) else { continue };
            match change.held {
                // A claim of this process is never held elsewhere too.
                Some((holder, left)) if broker.claim.is_none() => {
                    broker.elsewhere = Some(Elsewhere { holder, until: now + left });
                }
                Some(_) => {}
                None => freed |= broker.elsewhere.take().is_some(),
            }
        }
        for broker in &mut self.brokers {
            if broker.elsewhere.as_ref().is_some_and(|e| e.until <= now) {
                broker.elsewhere = None;
                freed = true;
            }
        }
        freed
    }

    /// Whether a claim for `wanted` (or for any) could succeed now, as far as this process
    /// knows (a claim taken elsewhere a moment ago shows only when tried).
    pub fn can_claim(&self, wanted: Option<u32>) -> bool {
        match wanted {
            Some(id) => self.brokers.get(index(id)).is_some_and(LogicalBroker::is_free),
            None => self.brokers.iter().any(LogicalBroker::is_free),
        }
    }

    /// Checks that `id` names a logical broker.
    ///
    /// # Errors
    /// [`ClaimError::UnknownBroker`].
    pub fn check_id(&self, id: u32) -> Result<(), ClaimError> {
        self.brokers
            .get(index(id))
            .map(drop)
            .ok_or(ClaimError::UnknownBroker { id, count: self.brokers.len() })
    }

    /// Restarts the lease of claim `token` from `now`, and keeps it at least until `until` (a
    /// held fetch keeps its claim alive). Returns the logical broker's id.
    ///
    /// # Errors
    /// [`ClaimError::UnknownClaim`].
    pub fn renew(&mut self, token: u64, now: Instant, until: Instant) -> Result<u32, ClaimError> {
        let lease = self.lease;
        let broker = self.find_mut(token)?;
        if let Some(claim) = &mut broker.claim {
            claim.expires_at = (now + lease).max(until + lease);
        }
        Ok(broker.id)
    }

    /// The logical broker held under claim `token`, if the claim is current.
    pub fn broker_of(&self, token: u64) -> Option<u32> {
        self.brokers
            .iter()
            .find(|b| b.claim.as_ref().is_some_and(|c| c.token == token))
            .map(|b| b.id)
    }

    /// Who holds claim `token`, if the claim is current.
    pub fn holder_of(&self, token: u64) -> Option<&str> {
        self.brokers
            .iter()
            .find_map(|b| b.claim.as_ref().filter(|c| c.token == token))
            .map(|c| c.holder.as_str())
    }

    /// How many logical brokers `holder` holds now.
    pub fn held_by(&self, holder: &str) -> usize {
        self.brokers.iter().filter(|b| b.claim.as_ref().is_some_and(|c| c.holder == holder)).count()
    }

    /// Ends claim `token`; returns the freed logical broker's id.
    ///
    /// # Errors
    /// [`ClaimError::UnknownClaim`].
    pub fn release(&mut self, token: u64) -> Result<u32, ClaimError> {
        let broker = self.find_mut(token)?;
        broker.claim = None;
        let id = broker.id;
        if let Some(ledger) = &mut self.ledger {
            ledger.free(id);
        }
        Ok(id)
    }

    /// Ends every claim whose lease ran out by `now`; returns the freed ids.
    pub fn expire(&mut self, now: Instant) -> Vec<u32> {
        let mut freed = Vec::new();
        for broker in &mut self.brokers {
            if broker.claim.as_ref().is_some_and(|c| c.expires_at <= now) {
                broker.claim = None;
                freed.push(broker.id);
                if let Some(ledger) = &mut self.ledger {
                    ledger.free(broker.id);
                }
            }
        }
        freed
    }

    /// When the next claim lapses, if any is held (here, or elsewhere as far as is known).
    pub fn next_expiry(&self) -> Option<Instant> {
        let here = self.brokers.iter().filter_map(|b| b.claim.as_ref()).map(|c| c.expires_at);
        let elsewhere = self.brokers.iter().filter_map(|b| b.elsewhere.as_ref()).map(|e| e.until);
        here.chain(elsewhere).min()
    }

    /// How many are claimed now.
    pub fn claimed(&self) -> usize {
        self.brokers.iter().filter(|b| b.claim.is_some()).count()
    }

    /// Each logical broker as `status` shows it; each serves the whole store, `totals`.
    pub fn status(&self, now: Instant, totals: Totals) -> Vec<BrokerStatus> {
        self.brokers
            .iter()
            .map(|b| BrokerStatus {
                id: b.id,
                available: b.is_free(),
                holder: match (&b.claim, &b.elsewhere) {
                    (Some(claim), _) => Some(claim.holder.clone()),
                    (None, elsewhere) => elsewhere.as_ref().map(|e| e.holder.clone()),
                },
                lease_remaining_ms: b
                    .claim
                    .as_ref()
                    .map(|c| c.expires_at)
                    .or(b.elsewhere.as_ref().map(|e| e.until))
                    .map(|until| until.saturating_duration_since(now).as_millis() as u64),
                topics: totals.topics,
                messages: totals.messages,
                bytes: totals.bytes,
                disk_bytes: totals.disk_bytes,
            })
            .collect()
    }

    fn find_mut(&mut self, token: u64) -> Result<&mut LogicalBroker, ClaimError> {
        self.brokers
            .iter_mut()
            .find(|b| b.claim.as_ref().is_some_and(|c| c.token == token))
            .ok_or(ClaimError::UnknownClaim(token))
    }
}

impl LogicalBroker {
    /// Whether nobody holds it, here or (as far as is known) through another process.
    fn is_free(&self) -> bool {
        self.claim.is_none() && self.elsewhere.is_none()
    }
}

/// The index of logical broker `id` (ids start at 1; 0 maps past the end).
fn index(id: u32) -> usize {
    (id as usize).wrapping_sub(1)
}

/// Unguessable, non-repeating claim tokens: a counter hashed with a key drawn at start-up, so a
/// token from an earlier run of the broker, or a neighbour's token plus one, is not valid.
#[derive(Debug)]
struct Tokens {
    /// Randomly keyed by the standard library at start-up.
    key: RandomState,
    /// How many tokens were given.
    counter: u64,
}

impl Tokens {
    fn new() -> Tokens {
        Tokens { key: RandomState::new(), counter: 0 }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.key.hash_one(self.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    #[test]
    fn claims_take_free_brokers_in_order_until_none_is_left() {
        let now = Instant::now();
        let mut brokers = LogicalBrokers::new(2, LEASE);
        let (first, _) = brokers.claim(None, "a", now).unwrap();
        let (second, _) = brokers.claim(None, "b", now).unwrap();
        assert_eq!((first, second), (1, 2));
        assert_eq!(brokers.claim(None, "c", now), Err(ClaimError::NoneAvailable(2)));
        assert_eq!(brokers.claim(Some(1), "c", now), Err(ClaimError::Busy(1)));
        assert_eq!(
            brokers.claim(Some(3), "c", now),
            Err(ClaimError::UnknownBroker { id: 3, count: 2 })
        );
        assert_eq!(
            brokers.claim(Some(0), "c", now),
            Err(ClaimError::UnknownBroker { id: 0, count: 2 })
        );
    }

    #[test]
    fn release_frees_and_forgets_the_token() {
        let now = Instant::now();
        let mut brokers = LogicalBrokers::new(2, LEASE);
        let (_, token) = brokers.claim(Some(2), "a", now).unwrap();
        assert_eq!(brokers.release(token), Ok(2));
        assert_eq!(brokers.release(token), Err(ClaimError::UnknownClaim(token)));
        assert!(brokers.can_claim(Some(2)));
    }

    #[test]
    fn leases_expire_unless_renewed() {
        let start = Instant::now();
        let mut brokers = LogicalBrokers::new(2, LEASE);
        let (_, a) = brokers.claim(None, "a", start).unwrap();
        let (_, _b) = brokers.claim(None, "b", start).unwrap();
        let later = start + LEASE / 2;
        brokers.renew(a, later, later).unwrap();
        assert_eq!(brokers.expire(start + LEASE), vec![2]);
        assert_eq!(brokers.next_expiry(), Some(later + LEASE));
        assert_eq!(brokers.expire(later + LEASE), vec![1]);
        assert_eq!(brokers.renew(a, later, later), Err(ClaimError::UnknownClaim(a)));
    }

    #[test]
    fn status_shows_holder_and_lease() {
        let now = Instant::now();
        let mut brokers = LogicalBrokers::new(2, LEASE);
        brokers.claim(Some(2), "till", now).unwrap();
        let status =
            brokers.status(now, Totals { topics: 1, messages: 2, bytes: 3, disk_bytes: None });
        assert!(status[0].available);
        assert_eq!(status[1].holder.as_deref(), Some("till"));
        assert_eq!(status[1].lease_remaining_ms, Some(30_000));
        assert_eq!(status[1].messages, 2);
    }

    /// Claims shared with other processes, told by the test what happened there.
    #[derive(Debug, Default)]
    struct Elsewhere(Vec<ClaimChange>);

    impl Ledger for Elsewhere {
        fn take(&mut self, _id: u32, _holder: &str) -> Result<bool, String> {
            Ok(true)
        }

        fn free(&mut self, _id: u32) {}

        fn changes(&mut self) -> Vec<ClaimChange> {
            std::mem::take(&mut self.0)
        }
    }

    #[test]
    fn claims_held_elsewhere_are_busy_here_until_they_end_or_lapse() {
        let now = Instant::now();
        let mut brokers = LogicalBrokers::new(2, LEASE);
        let held = |id, left| ClaimChange { id, held: Some(("far".to_owned(), left)) };
        let changes = vec![held(1, LEASE), held(2, Duration::from_secs(1)), held(9, LEASE)];
        brokers.share(Box::new(Elsewhere(changes)));
        assert!(!brokers.follow_shared(now));
        assert!(!brokers.can_claim(None));
        assert_eq!(brokers.claim(Some(1), "near", now), Err(ClaimError::Busy(1)));
        let status = brokers.status(now, Totals::default());
        assert_eq!(status[0].holder.as_deref(), Some("far"));
        assert_eq!(status[1].lease_remaining_ms, Some(1000));
        assert_eq!(brokers.next_expiry(), Some(now + Duration::from_secs(1)));
        // Broker 2's holder stopped renewing it: it lapses; broker 1's claim ends.
        assert!(brokers.follow_shared(now + Duration::from_secs(1)));
        assert!(brokers.can_claim(Some(2)) && !brokers.can_claim(Some(1)));
        brokers.ledger = Some(Box::new(Elsewhere(vec![ClaimChange { id: 1, held: None }])));
        assert!(brokers.follow_shared(now + Duration::from_secs(1)));
        assert_eq!(brokers.claim(Some(1), "near", now).map(|(id, _)| id), Ok(1));
    }

    #[test]
    fn tokens_do_not_repeat() {
        let mut tokens = Tokens::new();
        let drawn: std::collections::HashSet<u64> = (0..10_000).map(|_| tokens.next()).collect();
        assert_eq!(drawn.len(), 10_000);
    }
}
