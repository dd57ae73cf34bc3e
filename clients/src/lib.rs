//! Client library of the broker, and the `producer` and `consumer` command-line programs
//! built on it.
//!
//! [`Client`] is the connection: one REQ socket, bounded waits and a fresh socket after a
//! timeout. [`producer`] and [`consumer`] hold each program's options and its `run`; the
//! binaries in `src/bin` only parse arguments, install the Ctrl-C handler and call `run`.

#![warn(missing_docs)]

pub mod args;
pub mod claim;
pub mod client;
pub mod consumer;
pub mod error;
pub mod group;
pub mod interactive;
pub mod output;
pub mod perf;
pub mod producer;
pub mod shutdown;

pub use client::{Client, DEFAULT_TIMEOUT};
pub use error::{ClientError, Result};
pub use shutdown::Shutdown;

/// Sends log records to standard error, filtered by `RUST_LOG` (warnings and errors only when
/// it is not set), so that standard output carries nothing but the program's output.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
