//! The errors of the client library and of the `producer` and `consumer` commands.

use std::io;

use protocol::endpoint::InvalidEndpoint;
use protocol::{DecodeError, ErrorCode, InvalidGroupName, InvalidTopicName};
use thiserror::Error;

/// Everything that can go wrong talking to the broker or carrying out a command.
///
/// Callers branch on [`ClientError::Broker`] (by its code), [`ClientError::Interrupted`] and
/// [`ClientError::Unreachable`]; the rest are reported as they are.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The endpoint could not be used at all (a malformed address, an unknown transport).
    #[error("cannot connect to {endpoint}")]
    Connect {
        /// The endpoint given.
        endpoint: String,
        /// What ZeroMQ said.
        #[source]
        source: zmq::Error,
    },
    /// The broker's address, from `from` (`--connect` or `BROKER_ENDPOINT`), is not one.
    // Not a `source`: its message is already this one's, and would be printed twice.
    #[error("{reason} (from {from})")]
    Endpoint {
        /// Where the address came from.
        from: &'static str,
        /// What is wrong with it; its message lists the forms expected.
        reason: InvalidEndpoint,
    },
    /// No reply came within the timeout (after the one retry that safe requests get).
    #[error("broker not reachable at {endpoint}")]
    Unreachable {
        /// The endpoint the client is connected to.
        endpoint: String,
    },
    /// The broker refused the client's credentials at the handshake (or asked for some and
    /// got none).
    #[error("authentication failed for {who} at {endpoint}")]
    AuthenticationFailed {
        /// Who the client said it was: `user NAME`, `key KEY`, or no credentials.
        who: String,
        /// The endpoint.
        endpoint: String,
    },
    /// The handshake failed before the broker looked at the credentials: the mechanisms
    /// differ, or (CURVE) the client's server key is not the broker's.
    #[error("the handshake with the broker at {endpoint} failed for {who}: {hint}")]
    HandshakeFailed {
        /// Who the client said it was.
        who: String,
        /// The endpoint.
        endpoint: String,
        /// What is likely wrong.
        hint: String,
    },
    /// The login flags cannot be used: what is wrong with them.
    #[error("{0}")]
    Credentials(String),
    /// The socket failed in a way other than a timeout.
    #[error("socket error talking to {endpoint}")]
    Socket {
        /// The endpoint the client is connected to.
        endpoint: String,
        /// What ZeroMQ said.
        #[source]
        source: zmq::Error,
    },
    /// The wait for a reply was cut short by Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    /// The broker refused the request with an error reply.
    #[error("{reason} ({code})")]
    Broker {
        /// The status code, displayed by its stable name.
        code: ErrorCode,
        /// The broker's sentence for people.
        reason: String,
        /// For `offset_out_of_range`: the topic's first kept offset and next offset.
        range: Option<(u64, u64)>,
    },
    /// The reply frame could not be decoded.
    #[error("the broker sent a reply this client cannot read")]
    Decode(#[source] DecodeError),
    /// A `batches` reply whose record batches do not read back (PROTOCOL.md, "Record
    /// batches"): none of its messages is taken.
    #[error("the broker sent record batches this client cannot read")]
    Batches(#[source] protocol::batch::BatchError),
    /// The reply decoded but is not one the request can get.
    #[error("the broker answered `{request}` with `{reply}`")]
    UnexpectedReply {
        /// The request's name.
        request: &'static str,
        /// The reply's name.
        reply: &'static str,
    },
    /// A claim without a logical broker id found every one claimed.
    #[error(
        "no logical broker is free{}; use --wait to wait for one (each serves one claim at a \
         time; `broker --brokers N` hosts more)",
        claimed_count(*.total)
    )]
    NoBrokerFree {
        /// How many logical brokers there are, when `status` could tell.
        total: Option<usize>,
    },
    /// A claim naming a logical broker found it claimed by someone else.
    #[error(
        "logical broker {broker} is busy{}; use --wait to wait for it, or leave out --broker \
         to take any free one",
        holder.as_ref().map(|h| format!(" (claimed by {h})")).unwrap_or_default()
    )]
    BrokerBusy {
        /// The logical broker asked for.
        broker: u32,
        /// Who holds it, when `status` could tell.
        holder: Option<String>,
    },
    /// A reset of a group that has members on the topic, without `--force`.
    #[error(
        "group {group} has {} active member{} on {topic} (on logical broker{} {}); stop {} \
         first, or add --force to reset anyway (they then read from the new offset)",
        members.len(),
        if members.len() == 1 { "" } else { "s" },
        if members.len() == 1 { "" } else { "s" },
        members.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        if members.len() == 1 { "it" } else { "them" }
    )]
    GroupActive {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The logical brokers of its members.
        members: Vec<u32>,
    },
    /// A topic name given on the command line breaks the naming rules.
    #[error("invalid topic name {name:?}")]
    InvalidTopic {
        /// The name given.
        name: String,
        /// The rule it breaks.
        #[source]
        source: InvalidTopicName,
    },
    /// A group name given on the command line breaks the naming rules.
    #[error("invalid group name {name:?}")]
    InvalidGroup {
        /// The name given.
        name: String,
        /// The rule it breaks.
        #[source]
        source: InvalidGroupName,
    },
    /// Messages went out in an append whose reply never came, so whether they were stored is
    /// unknown: a plain append is not sent again because a copy could store them twice, and an
    /// idempotent one got no reply to any copy within the timeout.
    #[error("{cause}; {}", unconfirmed(*.count))]
    Unconfirmed {
        /// How many messages the unanswered append carried.
        count: usize,
        /// Why no reply came (shown first, not as a separate cause).
        cause: Box<ClientError>,
    },
    /// A copy of an idempotent append, sent again after an earlier sending got no reply or one
    /// that could not say whether it was stored, was refused: the refusal speaks for the copy
    /// alone, and the earlier sending may have been stored.
    #[error("{refusal} (to a copy sent again)")]
    CopyRefused {
        /// What the broker answered the copy.
        refusal: Box<ClientError>,
    },
    /// Lines of standard input were left out for being over the size limit (each was
    /// reported as it was met; the others were sent).
    #[error(
        "{count} line{} not sent: over the broker's message size limit",
        if *count == 1 { " was" } else { "s were" }
    )]
    LinesSkipped {
        /// How many.
        count: u64,
    },
    /// Lines of standard input went out in appends that got no reply, so that they may or may
    /// not have been stored (each was reported as it was met; the producer went on through
    /// another endpoint with the others).
    #[error(
        "{count} line{} not confirmed: {} may or may not have been appended",
        if *count == 1 { " was" } else { "s were" },
        if *count == 1 { "it" } else { "they" }
    )]
    LinesUnconfirmed {
        /// How many.
        count: u64,
    },
    /// The consumer was run with no command and standard input or output is not a terminal,
    /// so the interactive walk cannot run.
    #[error("no command given, and the interactive mode needs a terminal")]
    NotATerminal,
    /// Reading standard input or writing standard output failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The interactive prompt failed.
    #[error("interactive prompt failed")]
    Prompt(#[source] dialoguer::Error),
}

/// The result of everything in this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// The status code, when the broker refused the request.
    pub fn broker_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this is a write to a closed pipe (`consumer fetch t | head`): the reader has all
    /// it wants, so the program should stop quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ClientError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The process exit status for this error: 130 for Ctrl-C (the shell's convention for
    /// SIGINT), 2 for a usage error (an address that is not one), 0 for a closed output pipe, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Interrupted => 130,
            ClientError::NotATerminal | ClientError::Endpoint { .. } => 2,
            ClientError::AuthenticationFailed { .. } | ClientError::HandshakeFailed { .. } => 3,
            _ if self.is_broken_pipe() => 0,
            _ => 1,
        }
    }

    /// This error as the outcome of an append of `count` messages an earlier sending of which
    /// may have been stored: a refusal that need not hold for that sending (a `3xx`, which
    /// depends on the broker's state, or `502`) leaves them unconfirmed. Other refusals
    /// (`5xx`) are what any copy of the same request gets, the first included: nothing of it
    /// was stored.
    pub fn left_in_doubt(self, count: usize) -> ClientError {
        match self {
            ClientError::Broker { code, .. }
                if code.is_transient() || code == ErrorCode::InternalError =>
            {
                let cause = Box::new(ClientError::CopyRefused { refusal: Box::new(self) });
                ClientError::Unconfirmed { count, cause }
            }
            other => other,
        }
    }

    /// An error for writing standard output.
    pub fn output(source: io::Error) -> ClientError {
        ClientError::Io { what: "cannot write to standard output", source }
    }
}

/// What is known of `count` messages whose append got no reply.
fn unconfirmed(count: usize) -> String {
    if count == 1 {
        "the message sent was not confirmed and may or may not have been appended".to_owned()
    } else {
        format!(
            "the {count} messages sent were not confirmed and may or may not have been appended"
        )
    }
}

/// ` (all N are claimed)` when the count is known.
fn claimed_count(total: Option<usize>) -> String {
    total.map(|n| format!(" (all {n} are claimed)")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_the_user_expects() {
        let e = ClientError::Unreachable { endpoint: "tcp://127.0.0.1:9".into() };
        assert_eq!(e.to_string(), "broker not reachable at tcp://127.0.0.1:9");
        let e = ClientError::Broker {
            code: ErrorCode::UnknownTopic,
            reason: "no topic x".into(),
            range: None,
        };
        assert_eq!(e.to_string(), "no topic x (unknown_topic)");
        assert_eq!(
            ClientError::NoBrokerFree { total: Some(2) }.to_string(),
            "no logical broker is free (all 2 are claimed); use --wait to wait for one (each \
             serves one claim at a time; `broker --brokers N` hosts more)"
        );
        assert_eq!(
            ClientError::NoBrokerFree { total: None }.to_string(),
            "no logical broker is free; use --wait to wait for one (each serves one claim at a \
             time; `broker --brokers N` hosts more)"
        );
        let lost = ClientError::Unconfirmed {
            count: 2,
            cause: Box::new(ClientError::Unreachable { endpoint: "tcp://h:1".into() }),
        };
        assert_eq!(
            lost.to_string(),
            "broker not reachable at tcp://h:1; the 2 messages sent were not confirmed and may \
             or may not have been appended"
        );
        assert_eq!(
            ClientError::LinesUnconfirmed { count: 2 }.to_string(),
            "2 lines were not confirmed: they may or may not have been appended"
        );
        let refused = ClientError::Broker {
            code: ErrorCode::StoreUnavailable,
            reason: "the store cannot be reached (down); nothing was appended".into(),
            range: None,
        };
        assert_eq!(
            refused.left_in_doubt(3).to_string(),
            "the store cannot be reached (down); nothing was appended (store_unavailable) (to a \
             copy sent again); the 3 messages sent were not confirmed and may or may not have \
             been appended"
        );
        let too_large = ClientError::Broker {
            code: ErrorCode::MessageTooLarge,
            reason: "message 0 of the batch is 9 bytes; the limit is 8".into(),
            range: None,
        };
        assert_eq!(too_large.left_in_doubt(1).broker_code(), Some(ErrorCode::MessageTooLarge));
        let busy = ClientError::BrokerBusy { broker: 1, holder: Some("consumer-7".into()) };
        assert!(busy.to_string().starts_with("logical broker 1 is busy (claimed by consumer-7);"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(ClientError::Interrupted.exit_code(), 130);
        assert_eq!(ClientError::NotATerminal.exit_code(), 2);
        let pipe = ClientError::output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(pipe.exit_code(), 0);
        assert_eq!(ClientError::NoBrokerFree { total: None }.exit_code(), 1);
    }
}
