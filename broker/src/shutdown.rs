//! The stop signal: set once by Ctrl-C, SIGTERM or a test, read by the serve loop each pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag that says the broker should stop. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Set once, never cleared.
    signalled: Arc<AtomicBool>,
}

impl Shutdown {
    /// A flag not yet set.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks the broker to stop. Safe to call from a signal-handling thread.
    pub fn trigger(&self) {
        self.signalled.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_signalled(&self) -> bool {
        self.signalled.load(Ordering::SeqCst)
    }
}
