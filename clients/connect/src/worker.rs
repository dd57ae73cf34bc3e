//! The standalone worker: the connectors it runs, a thread each, and what the REST API asks of
//! them (add, pause, resume, restart, remove, status, offsets).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use client::{Client, Credentials, Endpoints};
use serde_json::{json, Value};

use crate::config::{group_name, ConfigError, ConnectorConfig};
use crate::file::{self, FileSink, FileSinkSettings, FileSourceSettings};
use crate::jdbc::{JdbcSettings, JdbcWriter};
use crate::offsets::Offsets;
use crate::sink::{Destination, SinkSettings, SinkTask};
use crate::task::{Control, State};

/// What a connector is, its settings checked.
#[derive(Debug, Clone)]
pub enum Kind {
    /// `JdbcSinkConnector`.
    JdbcSink(SinkSettings, Box<JdbcSettings>),
    /// `FileStreamSink`.
    FileSink(SinkSettings, FileSinkSettings),
    /// `FileStreamSource`.
    FileSource(FileSourceSettings),
}

/// The classes known, by the names Kafka Connect accepts: the full class name, the simple
/// name, or the simple name without `Connector`.
const CLASSES: &[(&str, &str)] = &[
    ("io.aiven.connect.jdbc.JdbcSinkConnector", "jdbc-sink"),
    ("io.confluent.connect.jdbc.JdbcSinkConnector", "jdbc-sink"),
    ("org.apache.kafka.connect.file.FileStreamSourceConnector", "file-source"),
    ("org.apache.kafka.connect.file.FileStreamSinkConnector", "file-sink"),
];

impl Kind {
    /// Checks `config` whole.
    ///
    /// # Errors
    /// The first key that is missing or wrong, named with the config's origin.
    pub fn from_config(config: &ConnectorConfig) -> Result<Kind, ConfigError> {
        let class = config.required("connector.class")?;
        let simple = class.rsplit('.').next().unwrap_or(class);
        let known = CLASSES.iter().find(|(full, _)| {
            let full_simple = full.rsplit('.').next().unwrap_or(full);
            *full == class
                || full_simple == simple
                || full_simple.strip_suffix("Connector") == Some(simple)
        });
        let Some((_, kind)) = known else {
            return Err(config.error(
                "connector.class",
                format!(
                    "{class:?} is not a connector this program has: JdbcSinkConnector \
                     (io.aiven.connect.jdbc or io.confluent.connect.jdbc), FileStreamSource, \
                     FileStreamSink"
                ),
            ));
        };
        config.number("tasks.max", 1, 1..=1_000)?;
        match *kind {
            "jdbc-sink" => Ok(Kind::JdbcSink(
                SinkSettings::from_config(config)?,
                Box::new(JdbcSettings::from_config(config)?),
            )),
            "file-sink" => Ok(Kind::FileSink(
                SinkSettings::from_config(config)?,
                FileSinkSettings::from_config(config)?,
            )),
            _ => Ok(Kind::FileSource(FileSourceSettings::from_config(config)?)),
        }
    }

    /// `source` or `sink`, as the REST API says.
    pub fn direction(&self) -> &'static str {
        match self {
            Kind::FileSource(_) => "source",
            Kind::JdbcSink(..) | Kind::FileSink(..) => "sink",
        }
    }
}

/// How the worker reaches the broker and where it keeps source offsets.
pub struct WorkerSettings {
    /// The broker's endpoints.
    pub endpoints: Endpoints,
    /// How long to wait for the broker.
    pub timeout: Duration,
    /// The login.
    pub credentials: Credentials,
    /// The offsets file.
    pub offsets: Offsets,
    /// The worker's id in statuses (`host:port` of its REST API, as Kafka Connect's).
    pub worker_id: String,
}

/// A connector the worker runs.
struct Running {
    /// Its config.
    config: ConnectorConfig,
    /// Its checked settings.
    kind: Kind,
    /// Its controls and status.
    control: Arc<Control>,
    /// Its thread.
    thread: Option<JoinHandle<()>>,
}

/// The most connectors the metrics page shows.
pub const MAX_SHOWN: usize = 1_000;

/// The worker. Cloning shares it.
#[derive(Clone)]
pub struct Worker {
    /// Shared by the REST threads and `main`.
    inner: Arc<Inner>,
}

/// The worker's state.
struct Inner {
    /// How to reach the broker.
    settings: WorkerSettings,
    /// The connectors by name.
    connectors: Mutex<BTreeMap<String, Running>>,
}

/// Why the worker refused a request.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// No connector by that name.
    #[error("connector {0} not found")]
    NotFound(String),
    /// One by that name runs already.
    #[error("connector {0} already exists")]
    Exists(String),
    /// The config is not one.
    #[error("{0}")]
    Config(#[from] ConfigError),
}

impl Worker {
    /// A worker with no connectors yet.
    pub fn new(settings: WorkerSettings) -> Worker {
        Worker { inner: Arc::new(Inner { settings, connectors: Mutex::new(BTreeMap::new()) }) }
    }

    fn connectors(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.inner.connectors.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts `config`'s connector.
    ///
    /// # Errors
    /// A bad config, or a connector of that name already.
    pub fn add(&self, config: ConnectorConfig) -> Result<(), WorkerError> {
        let kind = Kind::from_config(&config)?;
        let mut connectors = self.connectors();
        if connectors.contains_key(&config.name) {
            return Err(WorkerError::Exists(config.name));
        }
        let control = Arc::new(Control::default());
        let thread = self.spawn(&config.name, &kind, &control);
        connectors
            .insert(config.name.clone(), Running { config, kind, control, thread: Some(thread) });
        Ok(())
    }

    /// Starts the task thread of connector `name`.
    fn spawn(&self, name: &str, kind: &Kind, control: &Arc<Control>) -> JoinHandle<()> {
        let worker = self.clone();
        let (name, kind, control) = (name.to_owned(), kind.clone(), Arc::clone(control));
        std::thread::spawn(move || worker.run_task(&name, &kind, &control))
    }

    /// A task's life: a connection of its own to the broker, then its loop.
    fn run_task(&self, name: &str, kind: &Kind, control: &Control) {
        let s = &self.inner.settings;
        let client = match Client::connect_to(s.endpoints.clone(), s.timeout, s.credentials.clone())
        {
            Ok(client) => client.with_shutdown(control.shutdown.clone()),
            Err(e) => {
                control.fail(name, format!("cannot connect to the broker: {e}"));
                return;
            }
        };
        match kind {
            Kind::FileSource(settings) => {
                file::run_source(name, settings, client, control, &s.offsets)
            }
            Kind::FileSink(sink, settings) => {
                let mut destination = FileSink::new(settings.clone());
                SinkTask { name, settings: sink, client, control }.run(&mut destination);
            }
            Kind::JdbcSink(sink, settings) => {
                let mut destination = Jdbc(JdbcWriter::new((**settings).clone()));
                SinkTask { name, settings: sink, client, control }.run(&mut destination);
            }
        }
    }

    /// Each connector's name and a copy of its status, for the metrics page: at most
    /// [`MAX_SHOWN`] of them (the first by name), so the page stays bounded.
    pub fn statuses(&self) -> Vec<(String, crate::task::Status)> {
        let connectors = self.connectors();
        connectors
            .iter()
            .take(MAX_SHOWN)
            .map(|(name, r)| (name.clone(), r.control.status()))
            .collect()
    }

    /// The connectors' names.
    pub fn names(&self) -> Vec<String> {
        self.connectors().keys().cloned().collect()
    }

    /// Pauses or resumes connector `name`.
    ///
    /// # Errors
    /// No such connector.
    pub fn set_paused(&self, name: &str, paused: bool) -> Result<(), WorkerError> {
        let connectors = self.connectors();
        let running = connectors.get(name).ok_or_else(|| WorkerError::NotFound(name.into()))?;
        running.control.set_paused(paused);
        Ok(())
    }

    /// Stops connector `name` and starts it again (after a failure, say).
    ///
    /// # Errors
    /// No such connector.
    pub fn restart(&self, name: &str) -> Result<(), WorkerError> {
        let (config, old) = {
            let mut connectors = self.connectors();
            let running =
                connectors.remove(name).ok_or_else(|| WorkerError::NotFound(name.into()))?;
            (running.config.clone(), running)
        };
        stop(old);
        self.add(config)
    }

    /// Stops connector `name` and forgets it.
    ///
    /// # Errors
    /// No such connector.
    pub fn remove(&self, name: &str) -> Result<(), WorkerError> {
        let running =
            self.connectors().remove(name).ok_or_else(|| WorkerError::NotFound(name.into()))?;
        stop(running);
        Ok(())
    }

    /// Stops every connector, each finishing the batch it is on.
    pub fn stop_all(&self) {
        let all: Vec<Running> = std::mem::take(&mut *self.connectors()).into_values().collect();
        for running in &all {
            running.control.shutdown.trigger();
        }
        for running in all {
            stop(running);
        }
    }

    /// Connector `name`'s config and tasks, as `GET /connectors/NAME` shows them.
    ///
    /// # Errors
    /// No such connector.
    pub fn info(&self, name: &str) -> Result<Value, WorkerError> {
        let connectors = self.connectors();
        let r = connectors.get(name).ok_or_else(|| WorkerError::NotFound(name.into()))?;
        Ok(json!({
            "name": name,
            "config": r.config.props,
            "tasks": [{"connector": name, "task": 0}],
            "type": r.kind.direction(),
        }))
    }

    /// Connector `name`'s status, as `GET /connectors/NAME/status` shows it.
    ///
    /// # Errors
    /// No such connector.
    pub fn status(&self, name: &str) -> Result<Value, WorkerError> {
        let connectors = self.connectors();
        let r = connectors.get(name).ok_or_else(|| WorkerError::NotFound(name.into()))?;
        let status = r.control.status();
        let worker = &self.inner.settings.worker_id;
        // The connector's own state is its task's, but a failed task leaves the connector
        // running, as in Kafka Connect.
        let connector_state = match status.state {
            State::Failed => State::Running,
            other => other,
        };
        let mut task = json!({
            "id": 0,
            "state": status.state.name(),
            "worker_id": worker,
            "records_written": status.written,
            "records_rejected": status.rejected,
        });
        if let Some(trace) = &status.trace {
            task["trace"] = json!(trace);
        }
        if let Some(waiting) = &status.waiting {
            task["waiting"] = json!(waiting);
        }
        Ok(json!({
            "name": name,
            "connector": {"state": connector_state.name(), "worker_id": worker},
            "tasks": [task],
            "type": r.kind.direction(),
        }))
    }

    /// Connector `name`'s offsets, as `GET /connectors/NAME/offsets` shows them: a source's
    /// file position, a sink's group offsets (asked of the broker).
    ///
    /// # Errors
    /// No such connector; the broker did not answer.
    pub fn offsets(&self, name: &str) -> Result<Value, anyhow::Error> {
        let kind = {
            let connectors = self.connectors();
            connectors.get(name).ok_or_else(|| WorkerError::NotFound(name.into()))?.kind.clone()
        };
        let s = &self.inner.settings;
        if let Kind::FileSource(settings) = kind {
            let offsets: Vec<Value> = s
                .offsets
                .get(name)
                .map(|o| {
                    json!({"partition": {"filename": o.file}, "offset": {"position": o.position}})
                })
                .into_iter()
                .collect();
            let _ = settings;
            return Ok(json!({ "offsets": offsets }));
        }
        let mut client = Client::connect_to(s.endpoints.clone(), s.timeout, s.credentials.clone())?;
        let group = group_name(name);
        let groups = match client.list_groups(Some(&group), None) {
            Ok(groups) => groups,
            Err(e) if e.broker_code() == Some(protocol::ErrorCode::UnknownGroup) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let offsets: Vec<Value> = groups
            .iter()
            .map(|g| {
                json!({
                    "partition": {"kafka_topic": g.topic, "kafka_partition": 0},
                    "offset": {"kafka_offset": g.committed_offset},
                })
            })
            .collect();
        Ok(json!({ "offsets": offsets }))
    }
}

/// Stops a connector's task and waits for its thread.
fn stop(mut running: Running) {
    running.control.shutdown.trigger();
    if let Some(thread) = running.thread.take() {
        let _ = thread.join();
    }
}

/// The JDBC sink as a destination.
struct Jdbc(JdbcWriter);

impl Destination for Jdbc {
    fn put(
        &mut self,
        topic: &str,
        records: &[crate::task::Record],
        tolerate: bool,
    ) -> Result<Vec<crate::task::Rejected>, crate::task::TaskError> {
        self.0.put(topic, records, tolerate)
    }

    fn retries(&self) -> (u32, Duration) {
        let s = self.0.settings();
        (s.max_retries, s.retry_backoff)
    }

    fn batch_size(&self) -> u32 {
        self.0.settings().batch_size
    }
}
