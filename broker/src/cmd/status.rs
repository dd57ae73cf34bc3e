//! `status`: every logical broker, free or claimed.

use super::{Context, Outcome};
use crate::broker::Broker;
use protocol::Response;

/// Describes every logical broker. Needs no claim and changes nothing.
pub fn apply<'a>(broker: &Broker, cx: &Context<'_>) -> Outcome<'a> {
    Outcome::Reply(Response::Status {
        brokers: broker.brokers.status(cx.now, broker.store.totals()),
    })
}
