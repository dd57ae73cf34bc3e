//! The `producer`, `consumer` and `web` programs, built on the client library (the `client`
//! crate, whose modules are re-exported here under their old names).
//!
//! [`producer`] and [`consumer`] hold each program's options and its `run`; the binaries in
//! `src/bin` only parse arguments, install the Ctrl-C handler and call `run`.

#![warn(missing_docs)]

pub mod args;
pub mod claim;
pub mod consumer;
pub mod envelope;
pub mod group;
pub mod interactive;
pub mod output;
pub mod perf;
pub mod producer;
pub mod reset;
pub mod web;

pub use ::client::{client, endpoints, error, idempotence, pipeline, security, shutdown};
pub use ::client::{
    exit_status, init_tracing, install_ctrl_c, Client, ClientError, Endpoints, Idempotence, Result,
    Shutdown, DEFAULT_TIMEOUT,
};
