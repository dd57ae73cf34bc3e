//! Kafka's quickstart connectors: `FileStreamSource` (the lines of a file into a topic, following
//! the file as it grows, from its stored position after a restart) and `FileStreamSink` (a
//! topic's records into a file, a line each).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use client::{Client, ClientError};
use protocol::NewMessage;

use crate::config::{ConfigError, ConnectorConfig};
use crate::converter::{Converter, Type};
use crate::offsets::{Offsets, SourceOffset};
use crate::sink::Destination;
use crate::task::{backoff, Control, Record, Rejected, TaskError};

/// How often a source at the end of its file looks for more (Kafka's is a second too).
const POLL: Duration = Duration::from_millis(500);

/// The most bytes a source reads at once; a line must fit in it.
const READ_BYTES: usize = 1 << 20;

/// `FileStreamSource`'s settings.
#[derive(Debug, Clone)]
pub struct FileSourceSettings {
    /// `file`.
    pub file: PathBuf,
    /// `topic`.
    pub topic: String,
    /// `batch.size`: at most this many lines per append (Kafka's default, 2000).
    pub batch_size: usize,
    /// `value.converter`: how a line becomes a message (StringConverter by default: the line).
    pub converter: Converter,
}

impl FileSourceSettings {
    /// Reads the source's keys.
    ///
    /// # Errors
    /// A missing or bad key, named.
    pub fn from_config(config: &ConnectorConfig) -> Result<FileSourceSettings, ConfigError> {
        let file = PathBuf::from(config.required("file")?);
        let topic = config.required("topic")?.to_owned();
        if topic.contains(',') {
            return Err(config.error("topic", "one topic: a source writes to one"));
        }
        protocol::validate_topic_name(&topic)
            .map_err(|e| config.error("topic", format!("{topic:?}: {e}")))?;
        Ok(FileSourceSettings {
            file,
            topic,
            batch_size: config.number(
                "batch.size",
                2000,
                1..=protocol::MAX_APPEND_MESSAGES as u64,
            )? as usize,
            converter: Converter::from_config(config, "value.converter", Converter::String)?,
        })
    }
}

/// `FileStreamSink`'s settings.
#[derive(Debug, Clone)]
pub struct FileSinkSettings {
    /// `file`.
    pub file: PathBuf,
    /// `value.converter`: how a message becomes a line.
    pub converter: Converter,
    /// `batch.size`: at most this many records per group fetch.
    pub batch_size: u32,
}

impl FileSinkSettings {
    /// Reads the sink's own keys (the topics are the sink's common ones).
    ///
    /// # Errors
    /// A missing or bad key, named.
    pub fn from_config(config: &ConnectorConfig) -> Result<FileSinkSettings, ConfigError> {
        Ok(FileSinkSettings {
            file: PathBuf::from(config.required("file")?),
            converter: Converter::from_config(config, "value.converter", Converter::String)?,
            batch_size: config.number(
                "batch.size",
                2000,
                1..=u64::from(protocol::MAX_FETCH_MESSAGES),
            )? as u32,
        })
    }
}

/// Runs a file source until stopped or failed.
pub fn run_source(
    name: &str,
    s: &FileSourceSettings,
    mut client: Client,
    control: &Control,
    offsets: &Offsets,
) {
    let file_name = s.file.display().to_string();
    let mut position = offsets.get(name).filter(|o| o.file == file_name).map_or(0, |o| o.position);
    let mut buffer = vec![0u8; READ_BYTES];
    let mut failures = 0u32;
    control.running();
    while !control.stopping() {
        if control.hold_while_paused() {
            continue;
        }
        let read = read_from(&s.file, position, &mut buffer);
        let filled = match read {
            Ok(n) => n,
            Err(e) => {
                control.waiting(name, format!("cannot read {file_name}: {e}; trying again"));
                control.shutdown.pause(POLL);
                continue;
            }
        };
        // Whole lines only: a line still being written waits for its end.
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut consumed = 0usize;
        while lines.len() < s.batch_size {
            let Some(end) = buffer[consumed..filled].iter().position(|b| *b == b'\n') else {
                break;
            };
            let mut line = &buffer[consumed..consumed + end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            lines.push(line);
            consumed += end + 1;
        }
        if lines.is_empty() {
            if filled == READ_BYTES {
                control.fail(
                    name,
                    format!(
                        "{file_name}: a line at byte {position} is longer than {READ_BYTES} bytes"
                    ),
                );
                return;
            }
            control.running();
            control.shutdown.pause(POLL);
            continue;
        }
        let values: Vec<Vec<u8>> = match lines.iter().map(|l| encode_line(s.converter, l)).collect()
        {
            Ok(values) => values,
            Err(e) => {
                control.fail(name, format!("{file_name} at byte {position}: {e}"));
                return;
            }
        };
        let messages: Vec<NewMessage<'_>> =
            values.iter().map(|v| NewMessage::new(None, v)).collect();
        match client.append(&s.topic, None, messages) {
            Ok(_) => failures = 0,
            Err(e) if e.broker_code().is_some_and(|c| !c.is_transient()) => {
                control.fail(name, format!("appending to {}: {e}", s.topic));
                return;
            }
            Err(e) => {
                // Perhaps stored, perhaps not: sent again (at least once, as Kafka's source).
                control.waiting(name, format!("appending to {}: {e}; trying again", s.topic));
                control.shutdown.pause(backoff(failures, Duration::from_secs(2)));
                failures = failures.saturating_add(1);
                continue;
            }
        }
        position += consumed as u64;
        if let Err(e) = offsets.store(name, SourceOffset { file: file_name.clone(), position }) {
            control.waiting(name, format!("cannot store the position: {e}"));
        } else {
            control.update(|st| {
                st.written += lines.len() as u64;
                st.waiting = None;
            });
        }
    }
}

/// Reads from `position` of `path` into `buffer`, as much as is there; the bytes read.
fn read_from(path: &std::path::Path, position: u64, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(position))?;
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// A line as a message, as the source's converter writes a Connect string.
fn encode_line(converter: Converter, line: &[u8]) -> Result<Vec<u8>, String> {
    match converter {
        Converter::String | Converter::Bytes => Ok(line.to_vec()),
        Converter::Json { schemas } => {
            let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8 text: {e}"))?;
            let value = if schemas {
                serde_json::json!({"schema": {"type": Type::String.name(), "optional": false}, "payload": text})
            } else {
                serde_json::Value::String(text.to_owned())
            };
            serde_json::to_vec(&value).map_err(|e| e.to_string())
        }
    }
}

/// `FileStreamSink`: appends each record's value to a file as a line.
pub struct FileSink {
    /// The settings.
    settings: FileSinkSettings,
    /// The file, opened at the first batch.
    file: Option<File>,
}

impl FileSink {
    /// A sink to the file `settings` names.
    pub fn new(settings: FileSinkSettings) -> FileSink {
        FileSink { settings, file: None }
    }

    /// A record's value as the line written: a string's text, other Connect data as JSON.
    fn line(&self, record: &Record) -> Result<Vec<u8>, String> {
        match self.settings.converter {
            Converter::String | Converter::Bytes => Ok(record.value.clone()),
            json => {
                let data = json.read(Some(&record.value))?;
                Ok(match data.value {
                    serde_json::Value::String(s) => s.into_bytes(),
                    other => other.to_string().into_bytes(),
                })
            }
        }
    }
}

impl Destination for FileSink {
    fn put(
        &mut self,
        _topic: &str,
        records: &[Record],
        tolerate: bool,
    ) -> Result<Vec<Rejected>, TaskError> {
        let mut out = Vec::with_capacity(records.iter().map(|r| r.value.len() + 1).sum());
        let mut rejected = Vec::new();
        for record in records {
            match self.line(record) {
                Ok(line) => {
                    out.extend_from_slice(&line);
                    out.push(b'\n');
                }
                Err(reason) if tolerate => {
                    rejected.push(Rejected { offset: record.offset, reason })
                }
                Err(reason) => {
                    return Err(TaskError::Fatal(format!("offset {}: {reason}", record.offset)))
                }
            }
        }
        let path = &self.settings.file;
        if self.file.is_none() {
            let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
                TaskError::Retriable(format!("cannot open {}: {e}", path.display()))
            })?;
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else { return Ok(rejected) };
        // On disk before the batch is acknowledged.
        let written = file.write_all(&out).and_then(|()| file.sync_data());
        if let Err(e) = written {
            self.file = None;
            return Err(TaskError::Retriable(format!("cannot write {}: {e}", path.display())));
        }
        Ok(rejected)
    }

    fn retries(&self) -> (u32, Duration) {
        (10, Duration::from_secs(3))
    }

    fn batch_size(&self) -> u32 {
        self.settings.batch_size
    }
}

/// Whether a client error is worth waiting out.
pub fn transient(e: &ClientError) -> bool {
    e.broker_code().is_none_or(|c| c.is_transient())
}
