//! Connectors: moves data between the broker and the systems around it, as Kafka Connect does,
//! from Kafka Connect's own config files.
//!
//! `connect` is a client of the broker like `web` and `kafka-gateway`: it reaches the broker
//! only through [`client::Client`] and the protocol. A sink connector reads its topics as the
//! consumer group `connect-NAME` and acknowledges a batch only once its destination has it
//! ([`sink`]); a source appends what it reads and keeps its position in the offsets file
//! ([`offsets`]). The worker ([`worker`]) runs each connector on a thread of its own and the
//! REST API ([`rest`]) acts on them.

#![warn(missing_docs)]

pub mod config;
pub mod converter;
pub mod file;
pub mod jdbc;
pub mod metrics;
pub mod offsets;
pub mod postgres_url;
pub mod rest;
pub mod sink;
pub mod task;
pub mod worker;
