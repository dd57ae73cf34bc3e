//! `renew`: start a claim's lease again.

use protocol::Response;

use super::{refuse, Context, Outcome};
use crate::broker::Broker;

/// Restarts the lease of `claim` from now.
pub fn apply<'a>(broker: &mut Broker, claim: u64, cx: &Context<'_>) -> Outcome<'a> {
    match broker.brokers.renew(claim, cx.now, cx.now) {
        Ok(id) => Outcome::Reply(Response::Renewed {
            broker: id,
            lease_ms: broker.brokers.lease().as_millis() as u64,
        }),
        Err(error) => refuse(error),
    }
}
