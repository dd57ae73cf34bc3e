//! What every connector's task shares: the records it moves, its errors, its status as the REST
//! API shows it, and the controls (pause, stop) the worker holds over it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use client::Shutdown;

/// A message read from a topic, owned (the reply frame it came in is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its offset in the topic.
    pub offset: u64,
    /// When the broker appended it (milliseconds since the Unix epoch).
    pub timestamp: u64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Vec<u8>,
}

/// A record a task could not write, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its offset.
    pub offset: u64,
    /// Why, for the dead-letter topic and the log.
    pub reason: String,
}

/// Why a task could not go on with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// Something outside went away (the database): nothing was written; try again later.
    Retriable(String),
    /// The task cannot go on: it fails, and its status says why.
    Fatal(String),
}

/// A task's state, as Kafka Connect names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet, or starting.
    Unassigned,
    /// Moving data (or waiting for it).
    Running,
    /// Paused through the REST API.
    Paused,
    /// Stopped by an error; `trace` says which. Only a restart starts it again.
    Failed,
}

impl State {
    /// The name the REST API shows.
    pub fn name(self) -> &'static str {
        match self {
            State::Unassigned => "UNASSIGNED",
            State::Running => "RUNNING",
            State::Paused => "PAUSED",
            State::Failed => "FAILED",
        }
    }
}

/// What the REST API shows of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Its state.
    pub state: State,
    /// Why it failed.
    pub trace: Option<String>,
    /// What it is waiting for while it runs (a database down, a broker not answering, a
    /// topic that does not exist yet), `None` while all is well.
    pub waiting: Option<String>,
    /// Records written to the destination since the start.
    pub written: u64,
    /// Records sent to the dead-letter topic (or dropped without one) since the start.
    pub rejected: u64,
}

/// The worker's hold over one connector's task, shared with its thread.
#[derive(Debug)]
pub struct Control {
    /// Asked to pause.
    paused: AtomicBool,
    /// Asked to stop: deleted, restarted, or the program ends. Cuts the task's waits short.
    pub shutdown: Shutdown,
    /// Its status.
    status: Mutex<Status>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            paused: AtomicBool::new(false),
            shutdown: Shutdown::new(),
            status: Mutex::new(Status {
                state: State::Unassigned,
                trace: None,
                waiting: None,
                written: 0,
                rejected: 0,
            }),
        }
    }
}

impl Control {
    /// Whether the task should stop.
    pub fn stopping(&self) -> bool {
        self.shutdown.is_signalled()
    }

    /// Whether the task is asked to pause.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Asks the task to pause or to go on.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Changes the status.
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut guard = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut guard);
    }

    /// Says the task runs, waiting for nothing.
    pub fn running(&self) {
        self.update(|s| {
            s.state = State::Running;
            s.waiting = None;
        });
    }

    /// Says what the task waits for, on standard error too when it is new.
    pub fn waiting(&self, name: &str, why: String) {
        self.update(|s| {
            if s.waiting.as_deref() != Some(why.as_str()) {
                eprintln!("connector {name}: {why}");
            }
            s.waiting = Some(why);
        });
    }

    /// Marks the task failed, and says why on standard error.
    pub fn fail(&self, name: &str, why: String) {
        eprintln!("connector {name} failed: {why}");
        self.update(|s| {
            s.state = State::Failed;
            s.trace = Some(why);
            s.waiting = None;
        });
    }

    /// Waits while the task is paused (saying so), until resumed or stopped; returns whether
    /// it had to wait.
    pub fn hold_while_paused(&self) -> bool {
        if !self.paused() {
            return false;
        }
        self.update(|s| s.state = State::Paused);
        while self.paused() && !self.stopping() {
            self.shutdown.pause(Duration::from_millis(50));
        }
        if !self.stopping() {
            self.running();
        }
        true
    }
}

/// The backoff after the `attempt`th failure in a row: doubling from 100 ms up to `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let step = Duration::from_millis(100).saturating_mul(1 << attempt.min(10));
    step.min(max)
}
