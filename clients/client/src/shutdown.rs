//! The "has Ctrl-C been pressed?" flag that long waits check.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A shared flag set once by a signal handler (or a test) and polled by whoever waits.
///
/// Cloning shares the flag. Waits check it every 100 ms at most, so Ctrl-C takes effect
/// promptly even while a request is held by the broker.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Set when shutdown is asked for; never cleared.
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    /// A flag not yet signalled.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks everything watching this flag to stop. Safe to call from a signal handler thread.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether [`Shutdown::trigger`] has been called.
    pub fn is_signalled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleeps `duration`, or less if Ctrl-C comes: it looks at the flag every 100 ms.
    pub fn pause(&self, duration: Duration) {
        let slice = Duration::from_millis(100);
        let mut left = duration;
        while !left.is_zero() && !self.is_signalled() {
            let step = left.min(slice);
            thread::sleep(step);
            left -= step;
        }
    }
}

/// What the programs do on Ctrl-C: trigger `shutdown`, and the first time, when standard error
/// is a terminal, end the line the terminal echoed `^C` on, so that the summary that follows
/// starts on a line of its own.
pub fn on_ctrl_c(shutdown: &Shutdown) {
    let first = !shutdown.is_signalled();
    shutdown.trigger();
    let stderr = io::stderr();
    if first && stderr.is_terminal() {
        let _ = stderr.lock().write_all(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag() {
        let a = Shutdown::new();
        let b = a.clone();
        assert!(!b.is_signalled());
        a.trigger();
        assert!(b.is_signalled());
    }
}
