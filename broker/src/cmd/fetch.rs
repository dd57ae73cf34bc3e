//! `fetch`: read a partition of a topic from an offset under a claim, waiting for messages if
//! asked to.

use protocol::{Fetch, Response};

use super::{deadline, refuse, Context, Outcome};
use crate::broker::Broker;
use crate::store::{Budget, Store};
use crate::waiting::HeldFetch;

/// Reads what `fetch` asks for, renewing its claim. At the end of the partition, with a wait,
/// the fetch is held (and its claim kept alive) until a message arrives there or the wait
/// ends.
pub fn apply<'a>(broker: &'a mut Broker, fetch: Fetch<'a>, cx: &Context<'_>) -> Outcome<'a> {
    if let Err(error) = broker.brokers.renew(fetch.claim, cx.now, cx.now) {
        return refuse(error);
    }
    let at_end = broker
        .store
        .offsets(fetch.topic, fetch.partition)
        .is_ok_and(|(_, next)| next == fetch.offset);
    if at_end && fetch.wait_ms > 0 {
        let until = deadline(cx.now, fetch.wait_ms);
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
            deadline: until,
        });
    }
    let budget = Budget::of_fetch(fetch.max_messages, fetch.max_bytes);
    Outcome::Reply(answer(&*broker.store, fetch.topic, fetch.partition, fetch.offset, budget))
}

/// The reply to a fetch of partition `partition` of `topic` from `offset`, now: the messages
/// there are, possibly none, as many as `budget` takes.
pub fn answer<'a>(
    store: &'a Store,
    topic: &'a str,
    partition: u32,
    offset: u64,
    budget: Budget,
) -> Response<'a> {
    let mut messages = Vec::new();
    match store.read(topic, partition, offset, budget, &mut messages) {
        Ok(end_offset) => {
            let next_offset = messages.last().map_or(offset, |m| m.offset + 1);
            Response::Messages { topic, partition, messages, next_offset, end_offset }
        }
        Err(error) => error.into(),
    }
}
