//! `list_topics`: every topic with each partition's offsets, under a claim.

use protocol::Response;

use super::{refuse, Context, Outcome};
use crate::broker::Broker;

/// Lists the topics, renewing `claim`.
pub fn apply<'a>(broker: &mut Broker, claim: u64, cx: &Context<'_>) -> Outcome<'a> {
    match broker.brokers.renew(claim, cx.now, cx.now) {
        Ok(_) => Outcome::Reply(Response::Topics { topics: broker.store.list() }),
        Err(error) => refuse(error),
    }
}
