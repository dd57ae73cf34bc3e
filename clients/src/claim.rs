//! Claiming a logical broker for a consumer, waiting for one when asked, and giving it back.

use std::time::Duration;

use protocol::ErrorCode;
use tracing::debug;

use crate::client::{Claimed, Client};
use crate::{ClientError, Result};

/// Which logical broker a consumer wants, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSpec {
    /// The logical broker's id; `None` takes any free one.
    pub broker: Option<u32>,
    /// Wait for it to be free instead of failing.
    pub wait: bool,
    /// The name `status` shows as the holder.
    pub client_name: String,
}

impl ClaimSpec {
    /// A spec naming the claimant after this process: `<program>-<pid>`.
    pub fn new(program: &str, broker: Option<u32>, wait: bool) -> ClaimSpec {
        ClaimSpec { broker, wait, client_name: format!("{program}-{}", std::process::id()) }
    }
}

/// Claims a logical broker as `spec` says.
///
/// The first attempt does not wait, so that the usual case answers at once. When nothing fits
/// and `spec.wait` is set, a note goes to standard error and the claim is repeated, each time
/// held by the broker up to [`Client::max_hold`] (so that a broker that goes away during the
/// wait is noticed within the timeout), until one frees up or Ctrl-C.
///
/// # Errors
/// [`ClientError::NoBrokerFree`] or [`ClientError::BrokerBusy`] when nothing fits and
/// `spec.wait` is not set; otherwise whatever the claim request fails with.
pub fn acquire(client: &mut Client, spec: &ClaimSpec) -> Result<Claimed> {
    let name = Some(spec.client_name.as_str());
    let first = client.claim(spec.broker, Duration::ZERO, name);
    match first {
        Err(ref e) if is_taken(e) && spec.wait => {}
        Err(e) if is_taken(&e) => return Err(explain_taken(client, spec.broker)),
        other => return other,
    }
    match spec.broker {
        Some(id) => eprintln!("logical broker {id} is claimed; waiting for it to be released"),
        None => eprintln!("every logical broker is claimed; waiting for one to be released"),
    }
    loop {
        let slice = client.max_hold();
        match client.claim(spec.broker, slice, name) {
            Err(e) if is_taken(&e) => debug!("still waiting for a logical broker"),
            other => return other,
        }
    }
}

/// Gives back `claimed`. A failure is reported on standard error but is no error of the
/// command: the claim ends with its lease anyway.
pub fn release(client: &mut Client, claimed: &Claimed) {
    match client.release(claimed.token) {
        Ok(_) => debug!(broker = claimed.broker, "released"),
        // Already over: the lease ran out or the broker restarted.
        Err(e) if e.broker_code() == Some(ErrorCode::UnknownClaim) => {
            debug!(broker = claimed.broker, "the claim had already ended")
        }
        // The broker did not answer: the lease ends the claim in its own time.
        Err(e @ ClientError::Unreachable { .. }) => eprintln!(
            "warning: logical broker {} not released ({e}); its lease will end the claim",
            claimed.broker
        ),
        Err(e) => eprintln!("warning: could not release logical broker {}: {e}", claimed.broker),
    }
}

/// Whether a claim failed only because what it wanted is claimed by someone else.
fn is_taken(e: &ClientError) -> bool {
    matches!(e.broker_code(), Some(ErrorCode::NoBrokerAvailable | ErrorCode::BrokerBusy))
}

/// The error for a claim that found nothing free, with what `status` can add to it.
fn explain_taken(client: &mut Client, broker: Option<u32>) -> ClientError {
    let status = client.status().ok();
    match broker {
        None => ClientError::NoBrokerFree { total: status.map(|brokers| brokers.len()) },
        Some(id) => {
            let holder = status
                .and_then(|brokers| brokers.into_iter().find(|b| b.id == id))
                .and_then(|b| b.holder)
                // A name from the network: shown safely in the error message.
                .map(|holder| crate::output::safe(&holder).into_owned());
            ClientError::BrokerBusy { broker: id, holder }
        }
    }
}

/// How long a follow asks the broker to hold each fetch when nothing is there, unless the
/// timeout calls for less ([`Client::max_hold`]).
pub(crate) const FOLLOW_WAIT: Duration = Duration::from_secs(1);

/// How often a follow looks again for a topic that does not exist yet.
pub(crate) const TOPIC_RETRY: Duration = Duration::from_secs(1);

/// Claims again after the broker no longer knew the claim `claimed` (`unknown_claim`), saying
/// so, as `spec` says: its lease ran out under a reader (a pause longer than the lease), or the
/// client moved to another broker process, which knows nothing of tokens given by the one it
/// left.
///
/// With several endpoints the claim waits for a logical broker as `--wait` does: the one the
/// old claim held stays busy until that claim's lease runs out on the broker process left
/// behind, and a reader should go on rather than fail meanwhile.
///
/// # Errors
/// As [`acquire`].
pub(crate) fn reclaim(client: &mut Client, claimed: &mut Claimed, spec: &ClaimSpec) -> Result<()> {
    let several = client.endpoints().len() > 1;
    if several {
        eprintln!(
            "the claim on logical broker {} is not known at {} (it expired, or was made through \
             another broker process); claiming again",
            claimed.broker,
            client.endpoint()
        );
    } else {
        eprintln!("the claim on logical broker {} has expired; claiming again", claimed.broker);
    }
    let spec = ClaimSpec { wait: spec.wait || several, ..spec.clone() };
    *claimed = acquire(client, &spec)?;
    Ok(())
}
