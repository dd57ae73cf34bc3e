//! `claim`: take a free logical broker, or a named one, for a lease.

use crate::quiet::Shown;
use protocol::Response;

use super::{deadline, refuse, Context, Outcome};
use crate::broker::Broker;
use crate::logical::ClaimError;
use crate::waiting::WaitingClaim;

/// Claims `wanted` (or any free logical broker) for `holder`. When none fits and the request
/// may wait, the server holds it until one frees up.
pub fn apply<'a>(
    broker: &mut Broker,
    wanted: Option<u32>,
    wait_ms: u64,
    holder: &str,
    cx: &Context<'_>,
) -> Outcome<'a> {
    match grant(broker, wanted, holder, cx) {
        Err(ClaimError::NoneAvailable(_) | ClaimError::Busy(_)) if wait_ms > 0 => {
            Outcome::WaitForClaim(WaitingClaim {
                envelope: (),
                broker: wanted,
                holder: holder.to_owned(),
                deadline: deadline(cx.now, wait_ms),
            })
        }
        Err(error) => refuse(error),
        Ok(reply) => Outcome::Reply(reply),
    }
}

/// Claims `wanted` (or any) for `holder` now, for a request that arrived now or has waited.
///
/// # Errors
/// Why it cannot be had.
pub fn grant<'a>(
    broker: &mut Broker,
    wanted: Option<u32>,
    holder: &str,
    cx: &Context<'_>,
) -> Result<Response<'a>, ClaimError> {
    let (id, token) = broker.brokers.claim(wanted, holder, cx.now)?;
    tracing::info!(broker = id, holder = %Shown(holder), "claimed");
    Ok(Response::Claimed {
        broker: id,
        claim: token,
        lease_ms: broker.brokers.lease().as_millis() as u64,
    })
}
