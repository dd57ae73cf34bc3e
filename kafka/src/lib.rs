//! The Kafka gateway: a second door through which Kafka clients (librdkafka, kafka-python, kcat)
//! produce to and consume from the broker unchanged, while the ZeroMQ protocol stays the native
//! one.
//!
//! The gateway is a program of its own that speaks the native protocol to the broker through
//! `client::Client`, exactly as `producer` and `consumer` do, so it holds no state of its own
//! and can do nothing a native client could not. [`gateway`] accepts Kafka connections, one
//! thread each; [`frame`] reads and writes Kafka's size-prefixed frames with the
//! `kafka-protocol` crate; [`batch`] reads Produce's record batches; [`apis`] answers each API by calling the broker; [`claim`] holds the
//! one logical broker the gateway reads through; [`limits`] bounds what peers can make it hold; [`rights`] asks the broker
//! whether a logged-in user may take part in a group; [`backoff`] throttles failed logins by
//! client address.

#![warn(missing_docs)]

pub mod apis;
pub mod backoff;
pub mod batch;
pub mod claim;
pub mod error;
pub mod frame;
pub mod gateway;
pub mod groups;
pub mod idempotence;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod reserve;
pub mod rights;
pub mod stack;
pub mod tls;

pub use error::{FrameError, Result};
