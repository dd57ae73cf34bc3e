//! The one logical broker the gateway reads through.
//!
//! Every native read (`list_topics`, `fetch`) needs a claim, and a claim is exclusive. A Kafka
//! client opens several connections (librdkafka one for the bootstrap address and one per
//! broker it learns of), and one claim per connection would take every logical broker from
//! native consumers. So all the gateway's connections share one claim: taken at the first read,
//! renewed by every read under it, taken again if its lease ran out while no Kafka client read,
//! and released when the last connection using it closes (and when the gateway stops). Native
//! consumers see it in `status` as held by [`HOLDER`]. With SASL logins a claim belongs to its
//! user, so each user's connections share one claim of their own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use client::{Client, ClientError};
use protocol::ErrorCode;

/// The name the gateway's claim shows in `status`.
pub const HOLDER: &str = "kafka-gateway";

/// How long a claim may wait for a logical broker to free up before the Kafka request that
/// needed it is answered with a retriable error.
const CLAIM_WAIT: Duration = Duration::from_secs(1);

/// The claim shared by all the gateway's connections.
#[derive(Debug, Default)]
pub struct SharedClaim {
    /// The token, when a claim is held.
    token: Mutex<Option<u64>>,
    /// How many connections read through it.
    users: AtomicUsize,
}

impl SharedClaim {
    /// Runs `read` under the shared claim, claiming a logical broker first if none is held,
    /// and once more if the claim had ended (its lease ran out).
    ///
    /// # Errors
    /// What `read` returns, and the claim's own errors (`no_broker_available` when every
    /// logical broker is held by someone else).
    pub fn with<T>(
        &self,
        client: &mut Client,
        mut read: impl FnMut(&mut Client, u64) -> client::Result<T>,
    ) -> client::Result<T> {
        let token = self.token(client)?;
        match read(client, token) {
            Err(e) if e.broker_code() == Some(ErrorCode::UnknownClaim) => {
                self.forget(token);
                let token = self.token(client)?;
                read(client, token)
            }
            other => other,
        }
    }

    /// Counts a connection that reads through this claim.
    pub fn enter(&self) {
        self.users.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a connection out; the last one gives the logical broker back through `client`.
    pub fn leave(&self, client: &mut Client) {
        if self.users.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.release(client);
        }
    }

    /// Gives the logical broker back, if one is held.
    pub fn release(&self, client: &mut Client) {
        let token = self.token.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(token) = token {
            if let Err(e) = client.release(token) {
                tracing::warn!("could not release the gateway's claim: {e:#}");
            }
        }
    }

    /// The held token, or a new claim's.
    fn token(&self, client: &mut Client) -> client::Result<u64> {
        let mut held = self
            .token
            .lock()
            .map_err(|_| ClientError::Credentials("the shared claim's lock is poisoned".into()))?;
        if let Some(token) = *held {
            return Ok(token);
        }
        let claimed = client.claim(None, CLAIM_WAIT, Some(HOLDER)).inspect_err(|e| {
            tracing::warn!("Kafka reads wait: the gateway cannot claim a logical broker: {e:#}");
        })?;
        tracing::info!("reading through logical broker {}", claimed.broker);
        *held = Some(claimed.token);
        Ok(claimed.token)
    }

    /// Drops `token` if it is still the one held.
    fn forget(&self, token: u64) {
        if let Ok(mut held) = self.token.lock() {
            if *held == Some(token) {
                *held = None;
            }
        }
    }
}
