//! `list_topics`: every topic with each partition's offsets; needs no claim.

use protocol::Response;

use super::{refuse, Context, Outcome};
use crate::broker::Broker;

/// Lists the topics, renewing `claim` when one is given.
pub fn apply<'a>(broker: &mut Broker, claim: Option<u64>, cx: &Context<'_>) -> Outcome<'a> {
    if let Some(claim) = claim {
        if let Err(error) = broker.brokers.renew(claim, cx.now, cx.now) {
            return refuse(error);
        }
    }
    Outcome::Reply(Response::Topics { topics: broker.store.list() })
}
