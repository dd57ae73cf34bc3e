//! The console's metrics for `--metrics-listen`: requests by endpoint, requests answered now,
//! follow streams (Server-Sent Events), sessions and refusals when busy, rendered by the
//! operations port's threads from atomics the request threads bump.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ops::exposition::Kind;
use ops::Exposition;

use super::Console;

/// The endpoints counted by name; any other path is `other`, so the label stays bounded
/// whatever browsers ask for.
const ROUTES: [&str; 15] = [
    "/",
    "/assets",
    "/api/follow",
    "/api/overview",
    "/api/messages",
    "/api/session",
    "/api/consume/topics",
    "/api/consume/renew",
    "/api/consume/release",
    "/api/consume/claim",
    "/api/logout",
    "/api/login",
    "/api/topics",
    "/api/produce",
    "other",
];

/// The console's counters.
pub static METRICS: Metrics = Metrics {
    requests: [const { AtomicU64::new(0) }; ROUTES.len()],
    streams: AtomicU64::new(0),
    busy: AtomicU64::new(0),
};

/// Counters, each bumped with one relaxed atomic addition.
#[derive(Debug)]
pub struct Metrics {
    /// Requests by endpoint, in the order of [`ROUTES`].
    requests: [AtomicU64; ROUTES.len()],
    /// Follow streams started.
    streams: AtomicU64,
    /// Requests refused because the console was answering its most at once.
    busy: AtomicU64,
}

impl Metrics {
    /// Counts a request for `path`.
    pub fn request(&self, path: &str) {
        let route = if path.starts_with("/assets/") { "/assets" } else { path };
        let at = ROUTES.iter().position(|r| *r == route).unwrap_or(ROUTES.len() - 1);
        self.requests[at].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a follow stream started.
    pub fn stream(&self) {
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused as busy.
    pub fn busy(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the console shows on its operations port.
pub struct Endpoint(pub Arc<Console>);

impl ops::http::Endpoint for Endpoint {
    fn metrics(&self, page: &mut Exposition) {
        let m = &METRICS;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        page.family("web_requests_total", Kind::Counter, "HTTP requests, by endpoint.");
        for (route, counter) in ROUTES.iter().zip(&m.requests) {
            page.sample("web_requests_total", &[("path", route)], load(counter) as f64);
        }
        page.counter(
            "web_requests_busy_total",
            "Requests refused with 503 while the console answered its most at once.",
            load(&m.busy),
        );
        let now = |count: &std::sync::atomic::AtomicUsize| count.load(Ordering::Relaxed) as f64;
        page.gauge("web_requests_in_flight", "Requests being answered now.", now(&self.0.requests));
        page.counter("web_sse_streams_started_total", "Follow streams started.", load(&m.streams));
        page.gauge("web_sse_streams", "Follow streams open now.", now(&self.0.streams));
        page.gauge("web_sessions", "Browser sessions kept.", self.0.sessions.len() as f64);
    }

    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}
