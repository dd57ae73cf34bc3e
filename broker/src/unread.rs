//! The bound on memory held by replies that peers have not read.
//!
//! A ROUTER queues a reply until its peer's connection takes it, and a peer that sends requests
//! without reading the replies makes the broker hold every one of them: with 16 MiB fetch
//! replies, gigabytes from a few kilobytes of requests. ZeroMQ's high-water marks count
//! messages, not bytes, so the broker counts the bytes itself. Each reply is handed to ZeroMQ
//! without a copy, carrying a [`Charge`] on its peer's count and on the total; ZeroMQ frees the
//! reply once it has written it to the connection (or drops it with a connection that closed),
//! and freeing it gives the charge back.
//!
//! The server asks [`Unread::allowance`] before it carries out a read (and again before it
//! answers a held one): a peer whose unread replies already hold [`Limits::per_peer`] bytes
//! gets a small `overloaded` error instead; while all peers together hold [`Limits::total`],
//! so does every peer with anything unread, and the fetches of peers that have read everything
//! are cut to [`SMALL_REPLY_BYTES`] (still at least one message), so that clients that read
//! their replies keep being served while others are not. Requests that change state are
//! never refused for this: their replies are small, and refusing an append's acknowledgement
//! would make its client send it again.
//!
//! So the unread bytes stay below the total, plus one maximal fetch reply (the read that
//! crossed it), plus one small reply (or one message) per peer, plus the replies of requests
//! that change state, which are small and which the socket's send high-water mark bounds per
//! peer.

use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How many unread reply bytes the broker allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// All peers together.
    pub total: usize,
    /// One peer (one routing identity).
    pub per_peer: usize,
}

impl Default for Limits {
    /// 128 MiB in all, 32 MiB for one peer: room for eight maximal fetch replies, and two
    /// for one peer, which a client reading its replies never comes near.
    fn default() -> Self {
        Limits { total: 128 << 20, per_peer: 32 << 20 }
    }
}

/// The most bytes of messages a fetch returns while all peers' unread replies are at their
/// limit (a fetch still returns one message, however large).
pub const SMALL_REPLY_BYTES: u32 = 64 << 10;

/// What a read may take, given what its peer and all peers have left unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// As much as it asks for.
    Any,
    /// At most [`SMALL_REPLY_BYTES`] of messages: all peers together are at the limit.
    Small,
    /// Nothing: its peer is at its limit, or has replies unread while all peers are at
    /// theirs; the reply is `overloaded`.
    Refused,
}

impl Allowance {
    /// The `max_bytes` a fetch asking for `asked` may have.
    pub fn max_bytes(self, asked: u32) -> u32 {
        match self {
            Allowance::Any => asked,
            Allowance::Small | Allowance::Refused => asked.min(SMALL_REPLY_BYTES),
        }
    }
}

/// Unread reply bytes, per peer and in all.
#[derive(Debug)]
pub struct Unread {
    /// The limits.
    limits: Limits,
    /// Bytes of every reply not yet written to its connection.
    total: Arc<AtomicUsize>,
    /// The same, per peer routing identity; a peer is forgotten once it has nothing unread.
    peers: HashMap<Vec<u8>, Arc<AtomicUsize>>,
    /// How many peers the map may hold before idle ones are forgotten.
    sweep_at: usize,
}

/// Replies of at most this many bytes are not counted: the send high-water mark bounds them
/// (10,000 per peer, so 2.5 MiB), and copying them into a message as ZeroMQ allocates it costs
/// one allocation where a counted reply costs three. Acknowledgements of appends, `status` and
/// most refusals are this small.
pub const UNCOUNTED_BYTES: usize = 256;

/// The fewest peers the map holds before idle ones are forgotten: a few clients in lockstep
/// keep their entries rather than make them anew for each request.
const MIN_SWEEP: usize = 64;

impl Unread {
    /// Nothing unread yet.
    pub fn new(limits: Limits) -> Unread {
        Unread { limits, total: Arc::default(), peers: HashMap::new(), sweep_at: MIN_SWEEP }
    }

    /// What a read from `peer` may take now.
    pub fn allowance(&self, peer: &[u8]) -> Allowance {
        let unread = self.peers.get(peer).map_or(0, |count| count.load(Ordering::Relaxed));
        if unread >= self.limits.per_peer {
            Allowance::Refused
        } else if self.total() >= self.limits.total {
            // A peer that has read everything gets a small reply; one that has not, none.
            if unread == 0 {
                Allowance::Small
            } else {
                Allowance::Refused
            }
        } else {
            Allowance::Any
        }
    }

    /// Bytes of replies not yet written to their connections, over all peers.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Makes a reply of `bytes` to `peer`, charged until it is written or dropped when it is
    /// larger than [`UNCOUNTED_BYTES`].
    pub fn charge(&mut self, peer: &[u8], bytes: &[u8]) -> Reply {
        if bytes.len() <= UNCOUNTED_BYTES {
            return Reply(Body::Small(zmq::Message::from(bytes)));
        }
        let count = match self.peers.get(peer) {
            Some(count) => Arc::clone(count),
            None => {
                let count = Arc::new(AtomicUsize::new(0));
                self.peers.insert(peer.to_vec(), Arc::clone(&count));
                count
            }
        };
        let len = bytes.len();
        count.fetch_add(len, Ordering::Relaxed);
        self.total.fetch_add(len, Ordering::Relaxed);
        let charge = Charge { peer: count, total: Arc::clone(&self.total), len };
        Reply(Body::Counted(Box::new(Counted { bytes: Box::from(bytes), _charge: charge })))
    }

    /// Forgets peers with nothing unread and no reply in flight once the map has doubled since
    /// the last time, so that it holds about the peers with a backlog, not every peer ever seen,
    /// at a cost per reply that does not grow with their number.
    pub fn forget_idle(&mut self) {
        if self.peers.len() >= self.sweep_at {
            self.peers.retain(|_, count| Arc::strong_count(count) > 1);
            self.sweep_at = (2 * self.peers.len()).max(MIN_SWEEP);
        }
    }

    /// How many peers have replies in flight or unread.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }
}

/// Bytes charged to a peer and to the total until dropped.
#[derive(Debug)]
struct Charge {
    /// The peer's count.
    peer: Arc<AtomicUsize>,
    /// The total.
    total: Arc<AtomicUsize>,
    /// The bytes charged.
    len: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.peer.fetch_sub(self.len, Ordering::Relaxed);
        self.total.fetch_sub(self.len, Ordering::Relaxed);
    }
}

/// An encoded reply, with its charge when it has one.
#[derive(Debug)]
pub struct Reply(Body);

/// A reply's bytes, in the form they are handed to ZeroMQ.
#[derive(Debug)]
enum Body {
    /// A small reply, copied into a message as ZeroMQ allocates it, not counted.
    Small(zmq::Message),
    /// A larger reply, handed over without a copy and counted until ZeroMQ frees it.
    Counted(Box<Counted>),
}

/// A counted reply's bytes and its charge, in one box whose address ZeroMQ keeps.
#[derive(Debug)]
struct Counted {
    /// The frame's bytes.
    bytes: Box<[u8]>,
    /// Given back when the reply is dropped, by the broker or by ZeroMQ.
    _charge: Charge,
}

impl Reply {
    /// The encoded reply, for tests that read what would be sent.
    #[cfg(test)]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Body::Small(message) => message,
            Body::Counted(reply) => &reply.bytes,
        }
    }

    /// Sends the reply as the last frame of a message on `socket`, handing its bytes to ZeroMQ
    /// without a copy. ZeroMQ drops the reply, and so gives back its charge, once it has
    /// written it out; if the send fails, it is dropped here.
    ///
    /// # Errors
    /// What `zmq_msg_send` reports (`EHOSTUNREACH` for a peer that is gone, `EAGAIN` for one
    /// whose queue is full).
    pub fn send(self, socket: &mut zmq::Socket, flags: i32) -> Result<(), zmq::Error> {
        let reply = match self.0 {
            Body::Small(message) => return socket.send(message, flags),
            Body::Counted(reply) => reply,
        };
        let (data, len) = (reply.bytes.as_ptr() as *mut c_void, reply.bytes.len());
        let hint = Box::into_raw(reply).cast::<c_void>();
        let mut msg = MaybeUninit::<zmq_sys::zmq_msg_t>::uninit();
        // SAFETY: `data` points at `len` bytes owned by the boxed reply at `hint`, which stays
        // alive, unmoved, until `free_reply` takes it back: ZeroMQ calls that exactly once,
        // when the message is closed, whether sent or not. `msg` is initialised by
        // `zmq_msg_init_data` before any other use, and closed here if the send fails (a sent
        // message belongs to ZeroMQ).
        unsafe {
            if zmq_sys::zmq_msg_init_data(msg.as_mut_ptr(), data, len, Some(free_reply), hint) != 0
            {
                drop(Box::from_raw(hint.cast::<Counted>()));
                return Err(zmq::Error::from_raw(zmq_sys::zmq_errno()));
            }
            if zmq_sys::zmq_msg_send(msg.as_mut_ptr(), socket.as_mut_ptr(), flags) == -1 {
                let error = zmq::Error::from_raw(zmq_sys::zmq_errno());
                zmq_sys::zmq_msg_close(msg.as_mut_ptr());
                return Err(error);
            }
        }
        Ok(())
    }
}

/// Called by ZeroMQ, on whichever thread closes the message, to free a sent reply.
unsafe extern "C" fn free_reply(_data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the pointer `Reply::send` made with `Box::into_raw`, given to ZeroMQ
    // once and freed once.
    drop(unsafe { Box::from_raw(hint.cast::<Counted>()) });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        vec![7; n]
    }

    #[test]
    fn charges_count_per_peer_and_in_all_until_dropped() {
        let mut unread = Unread::new(Limits { total: 10_000, per_peer: 6_000 });
        let a = unread.charge(b"a", &bytes(5_700));
        assert_eq!(unread.allowance(b"a"), Allowance::Any);
        let b = unread.charge(b"a", &bytes(300));
        assert_eq!(unread.allowance(b"a"), Allowance::Refused, "a peer at its limit");
        assert_eq!(unread.allowance(b"b"), Allowance::Any);
        let c = unread.charge(b"b", &bytes(4_000));
        assert_eq!(unread.allowance(b"c"), Allowance::Small, "once the total is reached");
        assert_eq!(unread.allowance(b"b"), Allowance::Refused, "b has replies unread");
        assert_eq!(unread.total(), 10_000);
        drop((a, b));
        assert_eq!(unread.allowance(b"a"), Allowance::Any);
        assert_eq!(unread.total(), 4_000);
        drop(c);
        assert_eq!(unread.total(), 0);
    }

    #[test]
    fn small_replies_are_not_counted() {
        let mut unread = Unread::new(Limits::default());
        let small = unread.charge(b"a", &bytes(UNCOUNTED_BYTES));
        assert_eq!((unread.total(), unread.peers()), (0, 0));
        let large = unread.charge(b"a", &bytes(UNCOUNTED_BYTES + 1));
        assert_eq!(unread.total(), UNCOUNTED_BYTES + 1);
        drop((small, large));
    }

    #[test]
    fn idle_peers_are_forgotten_once_the_map_has_grown() {
        let mut unread = Unread::new(Limits::default());
        let large = bytes(UNCOUNTED_BYTES + 1);
        let busy = unread.charge(b"busy", &large);
        for i in 0..MIN_SWEEP - 2 {
            drop(unread.charge(format!("idle {i}").as_bytes(), &large));
        }
        unread.forget_idle();
        assert_eq!(unread.peers(), MIN_SWEEP - 1, "too few to sweep yet");
        drop(unread.charge(b"one more", &large));
        unread.forget_idle();
        assert_eq!(unread.peers(), 1, "only the peer with a reply in flight is kept");
        drop(busy);
    }

    #[test]
    fn a_reply_sent_and_read_gives_its_charge_back_and_one_that_cannot_be_sent_too() {
        let context = zmq::Context::new();
        let mut router = context.socket(zmq::ROUTER).unwrap();
        router.set_router_mandatory(true).unwrap();
        router.bind("inproc://unread").unwrap();
        let dealer = context.socket(zmq::DEALER).unwrap();
        dealer.set_identity(b"peer").unwrap();
        dealer.connect("inproc://unread").unwrap();
        dealer.send("hello", 0).unwrap();
        let _ = router.recv_multipart(0).unwrap();

        let mut unread = Unread::new(Limits::default());
        let reply = unread.charge(b"peer", &bytes(1000));
        router.send("peer", zmq::SNDMORE).unwrap();
        reply.send(&mut router, 0).unwrap();
        assert_eq!(dealer.recv_bytes(0).unwrap(), vec![7; 1000]);
        drop(dealer);
        drop(router);
        drop(context);
        assert_eq!(unread.total(), 0, "ZeroMQ freed the sent reply");

        let context = zmq::Context::new();
        let mut pull = context.socket(zmq::PULL).unwrap();
        let reply = unread.charge(b"peer", &bytes(1000));
        assert_eq!(reply.send(&mut pull, 0), Err(zmq::Error::ENOTSUP));
        assert_eq!(unread.total(), 0);
    }
}
