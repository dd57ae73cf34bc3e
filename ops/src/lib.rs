//! Operating the programs: metrics in Prometheus' text format, `/healthz` and `/readyz` on a
//! port of their own, and settings read from a TOML file.
//!
//! The broker, `kafka-gateway` and `web` each pass [`http::serve`] an [`http::Endpoint`] (what
//! they have to show and whether they are ready) and parse their flags with
//! [`config::parse`]; nothing else of this crate is theirs to know. It depends on no program
//! of the workspace, so the broker does not pull in the clients, nor the clients the broker.

pub mod config;
pub mod exposition;
pub mod histogram;
pub mod http;

pub use exposition::Exposition;
pub use histogram::{AtomicHistogram, Histogram};
