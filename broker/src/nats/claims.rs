//! Claims on logical brokers kept in the JetStream's key-value bucket `broker_claims`, so that
//! a logical broker claimed through one broker process is busy through all of them.
//!
//! The key `broker.<id>` exists while someone holds logical broker `id`; it is created with
//! compare-and-set (create fails when the key exists), renewed by the holding process's
//! runtime three times a time to live (half a lease, [`time_to_live`]) for as long as the
//! claim is held there, deleted when it ends, and removed by JetStream within a lease of its
//! last renewal when the holding process is gone.
//!
//! The runtime watches the bucket, so that every process knows the claims held through the
//! others: `status` shows them, and a claim waiting for a logical broker is woken when one
//! held elsewhere ends. A key removed by its time to live leaves no trace in the watch, so a
//! claim held elsewhere is taken to end a time to live after its last renewal was seen (a
//! claim tried after that and before JetStream removed the key is refused as busy).
//!
//! [`NatsClaims`] is the serving thread's side, the door `logical` knows; [`ClaimsBucket`] is
//! the runtime's.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc as tmpsc;

use super::runtime::{Command, Connection};
use crate::logical::{ClaimChange, Ledger};

/// How long taking a claim in JetStream may take before the claim is refused.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);

/// The [`Ledger`] of a broker process on a JetStream.
#[derive(Debug)]
pub struct NatsClaims {
    /// Commands to the store's runtime, which holds the connection.
    commands: Option<tmpsc::UnboundedSender<Command>>,
    /// The claims taken, renewed or ended through other broker processes, as the runtime
    /// watches them.
    changes: Option<mpsc::Receiver<ClaimChange>>,
}

impl NatsClaims {
    /// Claims through the runtime that `commands` reaches, hearing of those made elsewhere
    /// on `changes`.
    pub fn new(
        commands: Option<tmpsc::UnboundedSender<Command>>,
        changes: Option<mpsc::Receiver<ClaimChange>>,
    ) -> NatsClaims {
        NatsClaims { commands, changes }
    }
}

impl Ledger for NatsClaims {
    fn take(&mut self, id: u32, holder: &str) -> Result<bool, String> {
        let (reply, answer) = mpsc::channel();
        let command = Command::Claim { id, holder: holder.to_owned(), reply };
        let sent = self.commands.as_ref().is_some_and(|c| c.send(command).is_ok());
        if !sent {
            return Err("the connection to NATS has stopped".into());
        }
        answer
            .recv_timeout(CLAIM_TIMEOUT)
            .unwrap_or_else(|_| Err("JetStream did not answer the claim in time".into()))
    }

    fn free(&mut self, id: u32) {
        if let Some(commands) = &self.commands {
            let _ = commands.send(Command::Unclaim { id });
        }
    }

    fn changes(&mut self) -> Vec<ClaimChange> {
        self.changes.as_ref().map(|c| c.try_iter().collect()).unwrap_or_default()
    }
}

/// The key-value bucket of the claims on logical brokers, shared by every broker process.
const CLAIMS_BUCKET: &str = "broker_claims";

/// The claims bucket on the runtime, and the claims held through this process.
#[derive(Default)]
pub struct ClaimsBucket {
    /// The bucket, once opened.
    bucket: Option<jetstream::kv::Store>,
    /// The logical brokers claimed through this process: holder and the key's last revision.
    held: HashMap<u32, (String, u64)>,
}

impl ClaimsBucket {
    /// The claims bucket, opened or created (its time to live the lease) on first use.
    pub async fn bucket(&mut self, conn: &Connection) -> Result<jetstream::kv::Store, String> {
        let config = jetstream::kv::Config {
            bucket: CLAIMS_BUCKET.into(),
            history: 1,
            max_age: time_to_live(conn.setup.lease),
            num_replicas: conn.setup.replicas,
            ..Default::default()
        };
        conn.bucket(&mut self.bucket, config).await
    }

    /// A watch of the claims bucket: every key's present value, then each change, so that
    /// claims held through other broker processes are known here. `None` when it cannot be
    /// made now (tried again later).
    pub async fn watch(&mut self, conn: &Connection) -> Option<jetstream::kv::Watch> {
        let bucket = match self.bucket(conn).await {
            Ok(bucket) => bucket,
            Err(error) => {
                tracing::debug!(%error, "cannot watch the claims bucket yet");
                return None;
            }
        };
        match bucket.watch_with_history(">").await {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::debug!(%error, "cannot watch the claims bucket yet");
                None
            }
        }
    }

    /// Tells the serving thread of a claim taken, renewed or ended through another broker
    /// process, as the claims bucket's watch saw it; claims of this process are its own.
    pub fn watched(&self, conn: &Connection, entry: &jetstream::kv::Entry) {
        let Some(id) = broker_of(&entry.key) else { return };
        if self.held.contains_key(&id) {
            return;
        }
        let held = match entry.operation {
            jetstream::kv::Operation::Put => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128);
                let age = u64::try_from(now - entry.created.unix_timestamp_nanos()).unwrap_or(0);
                still_held(&entry.value, Duration::from_nanos(age), time_to_live(conn.setup.lease))
            }
            jetstream::kv::Operation::Delete | jetstream::kv::Operation::Purge => None,
        };
        conn.events.claim(ClaimChange { id, held });
    }

    /// Takes logical broker `id` for `holder` unless another process holds it.
    pub async fn take(
        &mut self,
        conn: &Connection,
        id: u32,
        holder: String,
    ) -> Result<bool, String> {
        let bucket = self.bucket(conn).await?;
        match bucket.create(claim_key(id), Bytes::from(holder.clone().into_bytes())).await {
            Ok(revision) => {
                self.held.insert(id, (holder, revision));
                Ok(true)
            }
            Err(error) if error.kind() == jetstream::kv::CreateErrorKind::AlreadyExists => {
                Ok(false)
            }
            Err(error) => Err(format!("cannot claim through JetStream: {error}")),
        }
    }

    /// Gives logical broker `id` back, if this process holds it.
    pub async fn free(&mut self, conn: &Connection, id: u32) {
        let Some((_, revision)) = self.held.remove(&id) else { return };
        let Ok(bucket) = self.bucket(conn).await else { return };
        if let Err(error) = bucket.delete_expect_revision(claim_key(id), Some(revision)).await {
            tracing::warn!(broker = id, %error, "cannot free a claim in JetStream; it expires");
        }
    }

    /// Renews every claim held through this process, so that it outlives the bucket's time
    /// to live for as long as it is held here.
    pub async fn renew(&mut self, conn: &Connection) {
        if self.held.is_empty() {
            return;
        }
        let Ok(bucket) = self.bucket(conn).await else { return };
        for (id, (holder, revision)) in &mut self.held {
            let value = Bytes::from(holder.clone().into_bytes());
            match bucket.update(claim_key(*id), value, *revision).await {
                Ok(next) => *revision = next,
                Err(error) => {
                    tracing::warn!(broker = *id, %error, "cannot renew a claim in JetStream");
                }
            }
        }
    }

    /// Gives back every claim held through this process, at a clean stop.
    pub async fn free_all(&mut self, conn: &Connection) {
        let ids: Vec<u32> = self.held.keys().copied().collect();
        for id in ids {
            self.free(conn, id).await;
        }
    }
}

/// The next entry of the claims bucket's watch; never, while there is none.
pub async fn next(
    watch: &mut Option<jetstream::kv::Watch>,
) -> Option<Result<jetstream::kv::Entry, jetstream::kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// The key of logical broker `id` in the claims bucket.
fn claim_key(id: u32) -> String {
    format!("broker.{id}")
}

/// The logical broker a key of the claims bucket names; `None` for a key that names none.
fn broker_of(key: &str) -> Option<u32> {
    key.strip_prefix("broker.").and_then(|n| n.parse().ok())
}

/// The claims bucket's time to live for a lease of `lease`: half of it. JetStream removes
/// messages past their age by a timer that may fire up to one time to live late, so a key of
/// a process that died is gone between one and two times to live after its last renewal: at
/// most a lease. A process that holds a claim renews it three times a time to live.
pub fn time_to_live(lease: Duration) -> Duration {
    (lease / 2).max(Duration::from_millis(100))
}

/// Who holds a claim stored `age` ago with `holder` as its value, and for how much longer: it
/// lasts a lease from when it was stored (JetStream removes it then). `None` once it ended.
fn still_held(holder: &[u8], age: Duration, lease: Duration) -> Option<(String, Duration)> {
    let left = lease.saturating_sub(age);
    (!left.is_zero()).then(|| (String::from_utf8_lossy(holder).into_owned(), left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_logical_broker_and_nothing_else() {
        for id in [1, 2, 40, u32::MAX] {
            assert_eq!(broker_of(&claim_key(id)), Some(id));
        }
        for key in ["broker.", "broker.x", "broker.-1", "brokers.1", "g.61.62", "broker.4294967296"]
        {
            assert_eq!(broker_of(key), None, "{key}");
        }
    }

    #[test]
    fn a_claim_seen_elsewhere_lasts_what_is_left_of_its_lease() {
        let lease = Duration::from_secs(30);
        let held = still_held(b"alice", Duration::from_secs(10), lease);
        assert_eq!(held, Some(("alice".to_owned(), Duration::from_secs(20))));
        assert_eq!(still_held(b"alice", lease, lease), None);
        assert_eq!(still_held(b"alice", lease * 2, lease), None);
        // A holder that is not text is still shown, not refused.
        assert_eq!(still_held(b"\xff", Duration::ZERO, lease).map(|(_, left)| left), Some(lease));
    }
}
