//! Latency histograms with fixed buckets, in seconds: [`Histogram`] for the thread that owns
//! it, [`AtomicHistogram`] for one shared with a thread that only observes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the buckets, in seconds: 100 µs to 10 s, 1-2.5-5 steps, enough for a
/// write to the page cache (microseconds), a flush (milliseconds) and a JetStream round trip.
pub const BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The bucket of an observation: the first whose bound it does not exceed, or the one past
/// the last for `+Inf`.
fn bucket_of(seconds: f64) -> usize {
    BOUNDS.iter().position(|bound| seconds <= *bound).unwrap_or(BOUNDS.len())
}

/// Observations by bucket (not cumulative), their count and sum: plain numbers, for the
/// thread that owns them, copied whole for a scrape.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Observations in each bucket, the last one past every bound.
    counts: [u64; BOUNDS.len() + 1],
    /// The sum of all observations, in nanoseconds.
    sum_nanos: u64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, took: Duration) {
        self.counts[bucket_of(took.as_secs_f64())] += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(took.as_nanos() as u64);
    }

    /// Observations in each bounded bucket, in the order of [`BOUNDS`] (not cumulative).
    pub fn buckets(&self) -> &[u64] {
        &self.counts[..BOUNDS.len()]
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }
}

/// A histogram another thread observes into (a flush thread, say) while a scrape reads it.
/// Each observation is a few relaxed atomic additions; a scrape may see one observation's
/// bucket before its sum, which Prometheus' rates smooth over.
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    /// Observations in each bucket, the last one past every bound.
    counts: [AtomicU64; BOUNDS.len() + 1],
    /// The sum of all observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram, for a `static`.
    pub const fn new() -> AtomicHistogram {
        AtomicHistogram {
            counts: [const { AtomicU64::new(0) }; BOUNDS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, took: Duration) {
        self.counts[bucket_of(took.as_secs_f64())].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A copy, for a scrape.
    pub fn snapshot(&self) -> Histogram {
        let mut copy = Histogram::default();
        for (to, from) in copy.counts.iter_mut().zip(&self.counts) {
            *to = from.load(Ordering::Relaxed);
        }
        copy.sum_nanos = self.sum_nanos.load(Ordering::Relaxed);
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fall_in_the_first_bucket_they_do_not_exceed() {
        let shared = AtomicHistogram::new();
        shared.observe(Duration::from_micros(100));
        shared.observe(Duration::from_micros(101));
        shared.observe(Duration::from_secs(11));
        let copy = shared.snapshot();
        assert_eq!(copy.buckets()[0], 1);
        assert_eq!(copy.buckets()[1], 1);
        assert_eq!(copy.buckets().iter().sum::<u64>(), 2);
        assert_eq!(copy.count(), 3);
    }
}
