//! `fetch`: read a partition of a topic from an offset under a claim, waiting for messages if
//! asked to.

use std::time::{Duration, Instant};

use protocol::batch::Batches;
use protocol::{Fetch, Response};

use super::{deadline, refuse, Context, Outcome};
use crate::broker::Broker;
use crate::store::{Budget, Store, StoreError};
use crate::waiting::HeldFetch;

/// How long a fetch may wait for messages the store reads back first ([`Log::loading`]),
/// whatever its own wait, before it is refused with `314`: within the clients' timeout.
///
/// [`Log::loading`]: crate::store::Log::loading
pub const LOAD_WAIT: Duration = Duration::from_secs(3);

/// Reads what `fetch` asks for, renewing its claim. At the end of the partition, with a wait,
/// the fetch is held (and its claim kept alive) until a message arrives there or the wait
/// ends; where the store reads the messages back first, it is held until they come.
pub fn apply<'a>(broker: &'a mut Broker, fetch: Fetch<'a>, cx: &Context<'_>) -> Outcome<'a> {
    if let Err(error) = broker.brokers.renew(fetch.claim, cx.now, cx.now) {
        return refuse(error);
    }
    let at_end = broker
        .store
        .offsets(fetch.topic, fetch.partition)
        .is_ok_and(|(_, next)| next == fetch.offset);
    let loading = broker.store.loading(fetch.topic, fetch.partition, fetch.offset);
    if loading || (at_end && fetch.wait_ms > 0) {
        let mut until = deadline(cx.now, fetch.wait_ms);
        if loading {
            until = until.max(cx.now + LOAD_WAIT);
        }
        // Cannot fail: the claim was renewed above, within this same request.
        let _ = broker.brokers.renew(fetch.claim, cx.now, until);
        return Outcome::HoldFetch(HeldFetch {
            envelope: (),
            claim: fetch.claim,
            topic: fetch.topic.to_owned(),
            partition: fetch.partition,
            offset: fetch.offset,
            max_messages: fetch.max_messages,
            max_bytes: fetch.max_bytes,
            batches: fetch.batches,
            deadline: until,
        });
    }
    let budget = Budget::of_fetch(fetch.max_messages, fetch.max_bytes);
    let read = Read { topic: fetch.topic, partition: fetch.partition, offset: fetch.offset };
    Outcome::Reply(answer(&*broker.store, read, budget, fetch.batches))
}

/// Where a fetch reads: a partition of a topic, from an offset.
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: u32,
    /// The first offset wanted.
    pub offset: u64,
}

/// The reply to a fetch of `read`, now: the messages there are, possibly none, as many as
/// `budget` takes; as the record batches that hold them when `batches`.
pub fn answer<'a>(store: &'a Store, read: Read<'a>, budget: Budget, batches: bool) -> Response<'a> {
    let Read { topic, partition, offset } = read;
    if batches {
        let mut pieces = Vec::new();
        return match store.read_batches(topic, partition, offset, budget, &mut pieces) {
            Ok(end_offset) => {
                let next_offset =
                    pieces.last().map_or(offset, |p| p.base_offset() + u64::from(p.count()));
                let batches = Batches::Pieces(pieces);
                Response::Batches { topic, partition, batches, next_offset, end_offset }
            }
            Err(error) => error.into(),
        };
    }
    let mut messages = Vec::new();
    match store.read(topic, partition, offset, budget, &mut messages) {
        Ok(end_offset) => {
            let next_offset = messages.last().map_or(offset, |m| m.offset + 1);
            Response::Messages { topic, partition, messages, next_offset, end_offset }
        }
        Err(error) => error.into(),
    }
}

/// The reply to a fetch held for messages the store reads back ([`LOAD_WAIT`]), woken at
/// `now`: `None` while they are still coming and its time lasts (it is held again).
pub fn answer_held<'a>(
    store: &'a Store,
    read: Read<'a>,
    (budget, batches): (Budget, bool),
    (now, deadline): (Instant, Instant),
) -> Option<Response<'a>> {
    let Read { topic, partition, offset } = read;
    if !store.loading(topic, partition, offset) {
        return Some(answer(store, read, budget, batches));
    }
    (now >= deadline).then(|| {
        let reason = format!("the messages from offset {offset} were not read back in time");
        StoreError::Unavailable(reason).into()
    })
}
