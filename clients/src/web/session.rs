//! Browser sessions: who each browser speaks to the broker as, and the claim it holds.
//!
//! A browser gets a session of its own (a cookie, `HttpOnly` and `SameSite=Strict`) the first
//! time it asks for something that changes state (a `POST` or `DELETE`: a claim, a login); a
//! `GET` without a known cookie only reads and is answered under one shared anonymous session
//! that is never ended, so that any page elsewhere loading the console's addresses in `<img>`
//! tags starts nothing. A session starts logged in as the console was (its `--user` or CURVE
//! flags, or nobody); logging in on the page gives the browser a new session whose
//! connections log in as that user, so that it can do what the broker lets that user do and
//! nothing more.
//!
//! Sessions are bounded: at most [`MAX_SESSIONS`], at most [`MAX_PER_SOURCE`] per client
//! address, and none kept idle beyond [`IDLE_LIMIT`]. Past a bound the least recently used
//! goes first, but a session logged in on the page is never ended to make room for one that is
//! not: a flood of anonymous sessions ends only anonymous ones, and when none is left to end
//! the new one is refused. A session that goes gives back the logical broker it held.
//!
//! A session holds at most one claim from a Consume panel, and it belongs to the page that took
//! it (each page names itself when it loads): only that page renews it or reads under it, so
//! that a page lost without a word loses its claim when the lease runs out even while other
//! pages of the same browser stay open.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::pool::{Pool, Target};
use crate::client::Claimed;
use crate::security::Credentials;
use crate::{Client, Result};
use protocol::ErrorCode;

/// The cookie that names a browser's session.
pub const COOKIE: &str = "console_session";

/// At most this many sessions live at once; a new one beyond it ends the least recently used.
pub const MAX_SESSIONS: usize = 64;

/// At most this many sessions come from one client address; a new one beyond it ends the
/// least recently used of that address (never a logged-in one for an anonymous one).
pub const MAX_PER_SOURCE: usize = 16;

/// A session not used for this long ends.
pub const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);

/// One browser's view of the broker.
pub struct Session {
    /// The random name the browser's cookie carries.
    token: String,
    /// Connections logged in as this session's user.
    pub pool: Pool,
    /// The logical broker a page of this browser holds from its Consume panel, if any.
    held: Mutex<Option<Held>>,
    /// When the browser last asked for something.
    last_seen: Mutex<Instant>,
    /// Whether the login is one given on the page (else it is the console's own).
    page_login: bool,
    /// The client address that started it (`None`: the shared anonymous session).
    source: Option<IpAddr>,
    /// The claim this session's follow views share, and how many use it.
    following: Mutex<Option<(u64, usize)>>,
}

impl Session {
    /// The `Set-Cookie` value that gives this session to a browser.
    pub fn cookie(&self) -> String {
        format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", self.token)
    }

    /// Who this session speaks to the broker as: `user NAME`, or the console's own login.
    pub fn who(&self) -> String {
        let who = self.pool.credentials().who();
        match self.pool.credentials() {
            Credentials::None => who,
            _ if !self.page_login => format!("{who}, the console's login"),
            _ => who,
        }
    }

    /// The user name this session logged in with on the page, if it did.
    pub fn user(&self) -> Option<&str> {
        match self.pool.credentials() {
            Credentials::Plain { user, .. } if self.page_login => Some(user),
            _ => None,
        }
    }

    /// The claim page `page` holds from its Consume panel.
    pub fn held(&self, page: &str) -> Option<Claimed> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.as_ref().filter(|h| h.page == page).map(|h| h.claimed)
    }

    /// Records that page `page` holds `claimed`; returns what the session held before (a
    /// session holds one claim: a page claiming takes the place of another's).
    pub fn hold(&self, claimed: Claimed, page: &str) -> Option<Claimed> {
        let held = Held { claimed, page: page.to_owned() };
        let mut slot = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        slot.replace(held).map(|h| h.claimed)
    }

    /// Forgets the claim of page `page` (`None`: whichever page's) without giving it back;
    /// returns it.
    fn take_held(&self, page: Option<&str>) -> Option<Claimed> {
        let mut slot = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match page {
            Some(page) if slot.as_ref().is_some_and(|h| h.page != page) => None,
            _ => slot.take().map(|h| h.claimed),
        }
    }

    /// Forgets the claim of page `page` (its lease ran out: there is nothing to give back).
    pub fn forget(&self, page: &str) {
        self.take_held(Some(page));
    }

    /// Gives back the claim of page `page` (`None`: whichever page's), if any; returns the
    /// logical broker it was.
    ///
    /// # Errors
    /// The broker did not answer or refused (a claim whose lease ran out is gone already).
    pub fn release_held(&self, page: Option<&str>) -> Result<Option<u32>> {
        let Some(claimed) = self.take_held(page) else { return Ok(None) };
        self.give_back(claimed)
    }

    /// Gives `claimed` back to the broker.
    ///
    /// # Errors
    /// As [`Session::release_held`].
    pub fn give_back(&self, claimed: Claimed) -> Result<Option<u32>> {
        self.pool.with(|client| client.release(claimed.token)).map(Some)
    }

    /// Runs `work` under the claim of page `page` when it holds one, else under a claim of any
    /// free logical broker taken for the call and released after ([`with_brief_claim`]). Only
    /// the page that holds a claim uses it, so that another page of the same browser does not
    /// keep alive the claim of a page that is gone.
    ///
    /// # Errors
    /// No logical broker is free, or `work` fails.
    pub fn with_claim<T>(
        &self,
        client: &mut Client,
        page: &str,
        work: impl FnOnce(&mut Client, u64) -> Result<T>,
    ) -> Result<T> {
        match self.held(page) {
            Some(claimed) => {
                let result = work(client, claimed.token);
                if matches!(&result, Err(e) if e.broker_code() == Some(ErrorCode::UnknownClaim)) {
                    // Its lease ran out: the page is told so by its next renewal.
                    self.forget(page);
                }
                result
            }
            None => with_brief_claim(client, work),
        }
    }
}

impl Session {
    /// The claim this session's follow views share, taken with `client` by the first: so that
    /// a browser opening many follow views holds one logical broker, not one each (as the Kafka
    /// gateway's readers share one). Each view gives its place back with
    /// [`Session::leave_follow`]; the last gives the claim back.
    ///
    /// # Errors
    /// The claim is refused (`no_broker_available` when all are taken).
    pub fn join_follow(&self, client: &mut Client) -> Result<u64> {
        let mut following = self.following.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((token, users)) = following.as_mut() {
            *users += 1;
            return Ok(*token);
        }
        // Under the lock: another view of the session waits for this claim instead of taking
        // one of its own.
        let claimed = client.claim(None, client.max_hold(), Some(CLAIMANT))?;
        *following = Some((claimed.token, 1));
        Ok(claimed.token)
    }

    /// A follow view stops using `token`; the last of its views gives it back with `client`.
    /// Whether `client` was used and failed (so it is not kept).
    pub fn leave_follow(&self, token: u64, client: &mut Client) -> bool {
        let mut following = self.following.lock().unwrap_or_else(PoisonError::into_inner);
        match following.as_mut() {
            Some((shared, users)) if *shared == token => {
                *users -= 1;
                if *users > 0 {
                    return false;
                }
                *following = None;
            }
            // Lost and taken again since: this view's claim is gone already.
            _ => return false,
        }
        drop(following);
        match client.release(token) {
            Ok(_) => false,
            Err(e) => {
                tracing::debug!("cannot release claim {token}: {e}");
                true
            }
        }
    }

    /// The broker no longer knows `token` (its lease ran out, or the broker restarted): the
    /// next view to join takes a new claim. The views still on `token` find out at their next
    /// request and join again.
    pub fn lost_follow(&self, token: u64) {
        let mut following = self.following.lock().unwrap_or_else(PoisonError::into_inner);
        if following.is_some_and(|(shared, _)| shared == token) {
            *following = None;
        }
    }
}

/// A claim held from a page's Consume panel.
struct Held {
    /// The claim.
    claimed: Claimed,
    /// The page that holds it: a name it made up when it loaded.
    page: String,
}

/// The name the console's claims carry, which `status` shows as their holder (with users, the
/// broker shows the user instead).
pub const CLAIMANT: &str = "web console";

/// Runs `work` under a claim of any free logical broker, released after.
///
/// # Errors
/// The claim is refused (`no_broker_available` when all are taken), or `work` fails.
pub fn with_brief_claim<T>(
    client: &mut Client,
    work: impl FnOnce(&mut Client, u64) -> Result<T>,
) -> Result<T> {
    let claimed = client.claim(None, Duration::ZERO, Some(CLAIMANT))?;
    let result = work(client, claimed.token);
    if let Err(e) = client.release(claimed.token) {
        tracing::debug!("cannot release claim {}: {e}", claimed.token);
    }
    result
}

/// Every live session, by token.
pub struct Sessions {
    /// Where the sessions' connections go.
    target: Target,
    /// How a session logs in before its browser logs in: the console's own flags.
    default: Credentials,
    /// The sessions.
    live: Mutex<HashMap<String, Arc<Session>>>,
    /// The session of every `GET` without a known cookie: shared, never ended, no cookie.
    anonymous: Arc<Session>,
}

impl Sessions {
    /// No sessions yet; new ones log in with `default`.
    pub fn new(target: Target, default: Credentials) -> Sessions {
        let anonymous = Arc::new(Session {
            token: String::new(),
            pool: Pool::new(target.clone(), default.clone()),
            held: Mutex::new(None),
            last_seen: Mutex::new(Instant::now()),
            page_login: false,
            source: None,
            following: Mutex::new(None),
        });
        Sessions { target, default, live: Mutex::new(HashMap::new()), anonymous }
    }

    /// The session named in `cookies` (a `Cookie` header); else, when the request only reads
    /// (`own` false), the shared anonymous session; else a new one with the console's own
    /// login for `source`. With it, whether it is new (its cookie must be sent). `None`: a
    /// new session was needed and every place is taken by sessions logged in on the page.
    pub fn find_or_start(
        &self,
        cookies: Option<&str>,
        source: IpAddr,
        own: bool,
    ) -> Option<(Arc<Session>, bool)> {
        let token = cookies.and_then(token_in);
        if let Some(token) = token {
            let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(session) = live.get(token) {
                *session.last_seen.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                return Some((Arc::clone(session), false));
            }
        }
        if !own {
            return Some((Arc::clone(&self.anonymous), false));
        }
        self.start(None, source).map(|s| (s, true))
    }

    /// A new session logging in with `credentials` given on the page (`None`: the console's
    /// own login), in place of `old`, whose claim is given back: a browser that logs in or out
    /// gets a new name, so an old one is worth nothing. `None`: no place for it (see
    /// [`Sessions::find_or_start`]).
    pub fn replace(
        &self,
        old: &Session,
        credentials: Option<Credentials>,
        source: IpAddr,
    ) -> Option<Arc<Session>> {
        if old.source.is_some() {
            let removed =
                self.live.lock().unwrap_or_else(PoisonError::into_inner).remove(&old.token);
            if let Some(removed) = removed {
                end(&removed);
            }
        }
        self.start(credentials, source)
    }

    /// Whether the console logs in by a CURVE key pair of its own: the broker then takes no
    /// password logins from the page.
    pub fn uses_curve(&self) -> bool {
        matches!(self.default, Credentials::Curve { .. })
    }

    /// How the console's connections reach the broker.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Starts a session for `source`, ending idle ones and, when there are too many, the least
    /// recently used that it may end (see the module's doc).
    fn start(&self, credentials: Option<Credentials>, source: IpAddr) -> Option<Arc<Session>> {
        let page_login = credentials.is_some();
        let credentials = credentials.unwrap_or_else(|| self.default.clone());
        let session = Arc::new(Session {
            token: new_token(),
            pool: Pool::new(self.target.clone(), credentials),
            held: Mutex::new(None),
            last_seen: Mutex::new(Instant::now()),
            page_login,
            source: Some(source),
            following: Mutex::new(None),
        });
        let mut ended = Vec::new();
        let inserted = {
            let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            live.retain(|_, s| {
                let idle =
                    now.duration_since(*s.last_seen.lock().unwrap_or_else(PoisonError::into_inner));
                if idle > IDLE_LIMIT {
                    ended.push(Arc::clone(s));
                    false
                } else {
                    true
                }
            });
            // A session may make room by ending one not logged in on the page, or, when it is
            // logged in itself, any.
            let endable = |s: &Session| !s.page_login || page_login;
            let mut fits = true;
            while fits
                && live.values().filter(|s| s.source == Some(source)).count() >= MAX_PER_SOURCE
            {
                fits =
                    end_oldest(&mut live, &mut ended, |s| s.source == Some(source) && endable(s));
            }
            // Anonymous ones go first, whoever asks.
            while fits && live.len() >= MAX_SESSIONS {
                fits = end_oldest(&mut live, &mut ended, |s| !s.page_login)
                    || end_oldest(&mut live, &mut ended, endable);
            }
            if fits {
                live.insert(session.token.clone(), Arc::clone(&session));
            }
            fits
        };
        // Outside the lock: giving a claim back waits for the broker. Not at the word of the
        // browser whose new session made room, though on its thread.
        super::pool::for_no_one(|| ended.iter().for_each(|s| end(s)));
        inserted.then_some(session)
    }

    /// How many sessions live now.
    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no session lives.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every session, giving back the claims they hold (the console is stopping).
    pub fn end_all(&self) {
        let all: Vec<Arc<Session>> = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in &all {
            end(s);
        }
    }
}

/// Removes from `live` the least recently used session that `may` end, into `ended`; whether
/// there was one.
fn end_oldest(
    live: &mut HashMap<String, Arc<Session>>,
    ended: &mut Vec<Arc<Session>>,
    may: impl Fn(&Session) -> bool,
) -> bool {
    let oldest = live
        .iter()
        .filter(|(_, s)| may(s))
        .min_by_key(|(_, s)| *s.last_seen.lock().unwrap_or_else(PoisonError::into_inner))
        .map(|(token, _)| token.clone());
    match oldest.and_then(|token| live.remove(&token)) {
        Some(s) => {
            ended.push(s);
            true
        }
        None => false,
    }
}

/// Gives back what an ending session holds (its follow views, still running, give back their
/// shared claim as they end).
fn end(session: &Session) {
    if let Err(e) = session.release_held(None) {
        tracing::debug!("cannot give back an ended session's claim: {e}");
    }
}

/// The session token in a `Cookie` header, if any.
fn token_in(cookies: &str) -> Option<&str> {
    cookies.split(';').map(str::trim).find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == COOKIE).then_some(value)
    })
}

/// 128 unpredictable bits in hex: two SipHash values under keys std draws from the system's
/// random generator ([`RandomState`]), of a counter and the time.
fn new_token() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let count = COUNT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let half = || {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(count);
        hasher.write_u128(nanos);
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shutdown;

    /// Sessions whose connections would go nowhere: these tests make none.
    fn sessions() -> Sessions {
        let target = Target::new(
            crate::Endpoints::one("tcp://127.0.0.1:9"),
            Duration::from_millis(100),
            Shutdown::new(),
        );
        Sessions::new(target, Credentials::None)
    }

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// The `Cookie` header value that names `session`.
    fn cookie_of(session: &Session) -> String {
        session.cookie().split(';').next().expect("name=value").to_owned()
    }

    #[test]
    fn a_cookie_finds_its_session_and_a_read_without_one_starts_nothing() {
        let sessions = sessions();
        let (first, new) = sessions.find_or_start(None, HERE, true).expect("a place");
        assert!(new);
        let (again, new) = sessions
            .find_or_start(Some(&format!("other=1; {}", cookie_of(&first))), HERE, false)
            .expect("found");
        assert!(!new);
        assert!(Arc::ptr_eq(&first, &again));
        for _ in 0..1000 {
            let (shared, new) =
                sessions.find_or_start(Some("console_session=guessed"), HERE, false).expect("one");
            assert!(!new);
            assert!(!Arc::ptr_eq(&first, &shared));
        }
        assert_eq!(sessions.len(), 1, "reads without a cookie started sessions");
    }

    #[test]
    fn sessions_are_bounded_per_source_and_anonymous_ones_never_end_a_logged_in_one() {
        let sessions = sessions();
        let bob = Credentials::Plain { user: "bob".into(), password: "pw".into() };
        let (first, _) = sessions.find_or_start(None, HERE, true).expect("a place");
        let kept = sessions.replace(&first, Some(bob.clone()), HERE).expect("a place");
        let value = cookie_of(&kept);
        for _ in 0..MAX_SESSIONS * 4 {
            sessions.find_or_start(None, HERE, true);
        }
        assert_eq!(sessions.len(), MAX_PER_SOURCE);
        // Other addresses fill the rest, but only with anonymous sessions ending each other.
        for n in 0..MAX_SESSIONS * 4 {
            let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, (n / 200) as u8, n as u8));
            sessions.find_or_start(None, other, true);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        let (same, new) = sessions.find_or_start(Some(&value), HERE, false).expect("found");
        assert!(!new, "a logged-in session was ended for anonymous ones");
        assert!(Arc::ptr_eq(&kept, &same));
    }

    #[test]
    fn when_logged_in_sessions_take_every_place_an_anonymous_one_is_refused() {
        let sessions = sessions();
        let bob = Credentials::Plain { user: "bob".into(), password: "pw".into() };
        for n in 0..MAX_SESSIONS {
            let source = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, n as u8));
            let (old, _) = sessions.find_or_start(None, source, true).expect("a place");
            sessions.replace(&old, Some(bob.clone()), source).expect("a place");
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.find_or_start(None, HERE, true).is_none());
        let (shared, new) = sessions.find_or_start(None, HERE, false).expect("the shared one");
        assert!(!new);
        assert_eq!(shared.user(), None);
    }

    #[test]
    fn logging_in_gives_a_new_session_and_the_old_name_is_worth_nothing() {
        let sessions = sessions();
        let (old, _) = sessions.find_or_start(None, HERE, true).expect("a place");
        let credentials = Credentials::Plain { user: "bob".into(), password: "pw".into() };
        let bob = sessions.replace(&old, Some(credentials), HERE).expect("a place");
        assert_eq!(bob.user(), Some("bob"));
        assert_eq!(bob.who(), "user bob");
        assert_ne!(bob.cookie(), old.cookie());
        let (after, new) =
            sessions.find_or_start(Some(&cookie_of(&old)), HERE, true).expect("a place");
        assert!(new, "the name of a replaced session still works");
        assert_eq!(after.user(), None);
    }

    #[test]
    fn session_names_differ() {
        let names: std::collections::HashSet<String> = (0..1000).map(|_| new_token()).collect();
        assert_eq!(names.len(), 1000);
        assert!(names.iter().all(|n| n.len() == 32));
    }
}
