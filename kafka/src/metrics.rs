//! The gateway's metrics for `--metrics-listen`: connections, requests by Kafka API, and
//! rebalances, in process-wide atomics bumped by the connection threads and rendered by the
//! operations port's threads.

use std::sync::atomic::{AtomicU64, Ordering};

use kafka_protocol::messages::ApiKey;
use ops::exposition::Kind;
use ops::Exposition;

/// Room for every Kafka API key (they run from 0 to under 100).
const API_KEYS: usize = 128;

/// The gateway's counters.
pub static METRICS: Metrics = Metrics {
    accepted: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    closed: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    requests: [const { AtomicU64::new(0) }; API_KEYS],
    rebalances: AtomicU64::new(0),
};

/// Counters, each bumped with one relaxed atomic addition.
#[derive(Debug)]
pub struct Metrics {
    /// Connections admitted.
    accepted: AtomicU64,
    /// Connections refused over `--max-connections`.
    refused: AtomicU64,
    /// Connections admitted that ended.
    closed: AtomicU64,
    /// Connections closed for what their peer sent (a bad frame, a failed login).
    dropped: AtomicU64,
    /// Requests answered, by API key.
    requests: [AtomicU64; API_KEYS],
    /// Rebalances completed, over all groups.
    rebalances: AtomicU64,
}

/// Adds one to `counter`.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts a connection admitted (`true`) or refused over the cap.
    pub fn connection(&self, admitted: bool) {
        bump(if admitted { &self.accepted } else { &self.refused });
    }

    /// Counts a connection that ended; `dropped` when the gateway closed it for what it sent.
    pub fn closed(&self, dropped: bool) {
        bump(&self.closed);
        if dropped {
            bump(&self.dropped);
        }
    }

    /// Counts a request of `api`.
    pub fn request(&self, api: ApiKey) {
        if let Some(counter) = usize::try_from(api as i16).ok().and_then(|i| self.requests.get(i)) {
            bump(counter);
        }
    }

    /// Counts a completed rebalance.
    pub fn rebalanced(&self) {
        bump(&self.rebalances);
    }
}

/// What the gateway shows on its operations port.
#[derive(Debug, Default)]
pub struct Endpoint;

impl ops::http::Endpoint for Endpoint {
    fn metrics(&self, page: &mut Exposition) {
        let m = &METRICS;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (accepted, closed) = (load(&m.accepted), load(&m.closed));
        page.counter(
            "kafka_gateway_connections_accepted_total",
            "Kafka connections admitted.",
            accepted,
        );
        page.counter(
            "kafka_gateway_connections_refused_total",
            "Kafka connections refused over --max-connections.",
            load(&m.refused),
        );
        page.counter(
            "kafka_gateway_connections_dropped_total",
            "Kafka connections closed for what their peer sent (a bad frame, a failed login).",
            load(&m.dropped),
        );
        page.gauge(
            "kafka_gateway_connections",
            "Kafka connections open.",
            accepted.saturating_sub(closed) as f64,
        );
        page.family("kafka_gateway_requests_total", Kind::Counter, "Kafka requests, by API.");
        for (key, counter) in m.requests.iter().enumerate() {
            let count = load(counter);
            let api = i16::try_from(key).ok().and_then(|k| ApiKey::try_from(k).ok());
            if let (Some(api), true) = (api, count > 0) {
                page.sample(
                    "kafka_gateway_requests_total",
                    &[("api", crate::apis::name(api))],
                    count as f64,
                );
            }
        }
        page.counter(
            "kafka_gateway_rebalances_total",
            "Consumer group rebalances completed, over all groups.",
            load(&m.rebalances),
        );
    }

    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}
