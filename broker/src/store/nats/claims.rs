//! Claims on logical brokers kept in the JetStream's key-value bucket `broker_claims`, so that
//! a logical broker claimed through one broker process is busy through all of them.
//!
//! The key `broker.<id>` exists while someone holds logical broker `id`; it is created with
//! compare-and-set (create fails when the key exists), renewed by the holding process's
//! runtime three times a lease for as long as the claim is held there, deleted when it ends,
//! and removed by JetStream a lease after its last renewal when the holding process is gone.
//!
//! The runtime watches the bucket, so that every process knows the claims held through the
//! others: `status` shows them, and a claim waiting for a logical broker is woken when one
//! held elsewhere ends. A key removed by its time to live leaves no trace in the watch, so a
//! claim held elsewhere is taken to end a lease after its last renewal was seen.

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::mpsc as tmpsc;

use super::runtime::Command;
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
    pub(super) fn new(
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
