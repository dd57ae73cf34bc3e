//! The client library of the broker, shared by every program that talks to it: `producer`,
//! `consumer`, `web`, `kafka-gateway`.
//!
//! [`Client`] is the connection: one REQ socket, bounded waits and a fresh socket after a
//! timeout, on the next of its [`Endpoints`] when several broker processes share the topics.
//! [`Pipeline`] is a producer's connection with several appends in flight, gathered from single
//! messages. [`Idempotence`] marks a producer's appends so that one sent again is stored once.
//! [`Credentials`] log it in; [`ClientError`] says what went wrong; [`Shutdown`] is the Ctrl-C
//! flag its waits check. It knows nothing of terminals' tables, HTTP or Kafka: Cargo keeps the
//! programs' dependencies out of it.

#![warn(missing_docs)]

pub mod client;
pub mod endpoints;
pub mod error;
pub mod idempotence;
pub mod pipeline;
pub mod security;
pub mod shutdown;

use std::process::ExitCode;

pub use client::{Client, DEFAULT_TIMEOUT};
pub use endpoints::Endpoints;
pub use error::{ClientError, Result};
pub use idempotence::Idempotence;
pub use pipeline::{Outcome, Pipeline, PipelineOptions};
pub use security::Credentials;
pub use shutdown::Shutdown;

/// Sends log records to standard error, filtered by `RUST_LOG` (warnings and errors only when
/// it is not set), so that standard output carries nothing but the program's output.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Installs the programs' Ctrl-C handler on `shutdown` ([`shutdown::on_ctrl_c`]).
///
/// # Errors
/// The handler could not be installed.
pub fn install_ctrl_c(shutdown: &Shutdown) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let flag = shutdown.clone();
    ctrlc::set_handler(move || shutdown::on_ctrl_c(&flag))
        .context("cannot install the Ctrl-C handler")
}

/// The exit status of a program that ended with `result`, after printing its error. Ctrl-C ends
/// a follow or a read of standard input normally, but the status still says it was interrupted,
/// as after any other Ctrl-C; Ctrl-C and a closed output pipe are ends the user chose, so their
/// errors are not printed: the command has said what it did already.
pub fn exit_status(result: anyhow::Result<()>, shutdown: &Shutdown) -> ExitCode {
    match result {
        Ok(()) if shutdown.is_signalled() => ExitCode::from(ClientError::Interrupted.exit_code()),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let client_error = e.downcast_ref::<ClientError>();
            let quiet = client_error
                .is_some_and(|e| e.is_broken_pipe() || matches!(e, ClientError::Interrupted));
            if !quiet {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(client_error.map_or(1, ClientError::exit_code))
        }
    }
}
