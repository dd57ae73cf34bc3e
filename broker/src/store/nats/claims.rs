//! Claims on logical brokers kept in the JetStream's key-value bucket `broker_claims`, so that
//! a logical broker claimed through one broker process is busy through all of them.
//!
//! The key `broker.<id>` exists while someone holds logical broker `id`; it is created with
//! compare-and-set (create fails when the key exists), renewed by the holding process's
//! runtime three times a lease for as long as the claim is held there, deleted when it ends,
//! and removed by JetStream a lease after its last renewal when the holding process is gone.

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::mpsc as tmpsc;

use super::runtime::Command;
use crate::logical::Ledger;

/// How long taking a claim in JetStream may take before the claim is refused.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);

/// The [`Ledger`] of a broker process on a JetStream.
#[derive(Debug)]
pub struct NatsClaims {
    /// Commands to the store's runtime, which holds the connection.
    commands: Option<tmpsc::UnboundedSender<Command>>,
}

impl NatsClaims {
    /// Claims through the runtime that `commands` reaches.
    pub(super) fn new(commands: Option<tmpsc::UnboundedSender<Command>>) -> NatsClaims {
        NatsClaims { commands }
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
}
