//! `release`: give a logical broker back.

use protocol::Response;

use super::{refuse, Outcome};
use crate::broker::Broker;

/// Ends `claim`; the server then hands the freed logical broker to the longest waiter.
pub fn apply<'a>(broker: &mut Broker, claim: u64) -> Outcome<'a> {
    match broker.brokers.release(claim) {
        Ok(id) => {
            tracing::info!(broker = id, "released");
            Outcome::Reply(Response::Released { broker: id })
        }
        Err(error) => refuse(error),
    }
}
