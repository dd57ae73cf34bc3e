//! `append`: add messages to a topic; needs no claim.

use protocol::{Append, Response};

use super::{refuse, Context, Outcome};
use crate::broker::Broker;

/// Appends the batch to its topic, creating the topic if needed, all stamped with this pass's
/// time. All or nothing: a refused batch leaves the topic as it was.
pub fn apply<'a>(broker: &mut Broker, append: Append<'a>, cx: &Context<'_>) -> Outcome<'a> {
    match broker.store.append(append.topic, &append.messages, cx.now_ms) {
        Ok((first_offset, last_offset)) => {
            broker.stats.appended += append.messages.len() as u64;
            broker.stats.appended_bytes += crate::metrics::payload_bytes(&append.messages);
            Outcome::Reply(Response::Appended { topic: append.topic, first_offset, last_offset })
        }
        Err(error) => refuse(error),
    }
}
