//! How the consumer shows what it reads: plain text for people, JSON lines for programs.
//!
//! # Format
//! Text messages are one line each, tab separated: `offset` (`partition:offset` when the
//! reading spans several partitions), then the timestamp (with
//! `--print-timestamp`: RFC 3339 in local time; `=ms`: milliseconds; Kafka's
//! `print.timestamp=true`: `CreateTime:` and milliseconds), then the headers (with
//! `--print-headers`, Kafka's `print.headers=true`: `name:value` pairs joined by commas,
//! `NO_HEADERS` for none, `null` for a header without a value) and a tab, then the key or `null`
//! (with `--print-key`) and the key separator (a tab unless `key.separator` says otherwise),
//! then the value.
//! Keys and values that are valid UTF-8 are printed as they are; in others each byte that is
//! not part of valid UTF-8 is written `\xNN`.
//!
//! Text output never hands the terminal a character that would act instead of showing: control
//! characters (escape sequences, carriage returns, newlines, tabs) and the bidirectional
//! overrides and isolates (which reorder what follows) are written as escapes, `\x1b`, `\r`,
//! `\n`, `\t`, `\u{202e}`, in message lines, in tables (holder, topic and group names) and in
//! the interactive walk alike. So a message cannot fake lines of output or hide its end. JSON
//! output stays exact: JSON's own escaping covers control characters, and a program reading
//! it gets the bytes as they are. Tables align by display width, so wide characters (CJK,
//! emoji) and combining marks keep columns straight.
//!
//! JSON messages are one object per line:
//! `{"topic":..,"partition":..,"offset":..,"timestamp":..,"key":..,"value":..}`. `key` and `value` are strings
//! when they are valid UTF-8. Otherwise they are `null` and `key_hex` / `value_hex` hold the
//! bytes in hexadecimal; a message without a key has `"key":null` and no `key_hex`. A message
//! with headers has `"headers":[{"key":..,"value":..}, ...]` in their order, each value a
//! string, `null` for none, or, when not UTF-8, `null` beside `value_hex`; a message without
//! headers has no `headers`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use chrono::{Local, SecondsFormat, TimeZone};
use protocol::{BrokerStatus, GroupInfo, Message, TopicInfo};
use serde::Serialize;
use unicode_width::UnicodeWidthStr;

use crate::args::{ConsumerProperty, PrintArgs, TimestampStyle};

/// How messages are printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFormat {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Text only: start the line with the offset (Kafka's `print.offset`; on by default).
    pub print_offset: bool,
    /// Text only: add the key (or `null`) before the value.
    pub print_key: bool,
    /// Text only: add the timestamp after the offset, in this style.
    pub timestamp: Option<TimestampStyle>,
    /// Text only: what goes between the key and the value (Kafka's `key.separator`).
    pub key_separator: String,
    /// Print a value in Connect's JSON envelope as its payload alone (`--unwrap-schema`).
    pub unwrap_schema: bool,
    /// Text only: put the partition before the offset (`2:15`), for a reading that spans
    /// several partitions.
    pub print_partition: bool,
    /// Text only: add the headers before the key and value (Kafka's `print.headers`).
    pub print_headers: bool,
    /// Text only: what goes between two headers (Kafka's `headers.separator`).
    pub headers_separator: String,
    /// Text only: what goes between a header's name and value (`headers.key.separator`).
    pub headers_key_separator: String,
}

impl Default for MessageFormat {
    fn default() -> MessageFormat {
        MessageFormat {
            json: false,
            print_offset: true,
            print_key: false,
            timestamp: None,
            key_separator: "\t".to_owned(),
            unwrap_schema: false,
            print_partition: false,
            print_headers: false,
            headers_separator: ",".to_owned(),
            headers_key_separator: ":".to_owned(),
        }
    }
}

impl MessageFormat {
    /// The format the consumer's flags ask for; `--property` settings apply last, in order.
    pub fn from_args(json: bool, print: &PrintArgs) -> MessageFormat {
        let mut format = MessageFormat {
            json,
            print_key: print.print_key,
            timestamp: print.print_timestamp,
            unwrap_schema: print.unwrap_schema,
            print_headers: print.print_headers,
            ..MessageFormat::default()
        };
        for property in &print.property {
            match property {
                ConsumerProperty::PrintKey(on) => format.print_key = *on,
                ConsumerProperty::PrintTimestamp(on) => {
                    format.timestamp = on.then_some(TimestampStyle::CreateTime);
                }
                ConsumerProperty::PrintOffset(on) => format.print_offset = *on,
                ConsumerProperty::KeySeparator(separator) => {
                    format.key_separator = separator.clone();
                }
                ConsumerProperty::PrintHeaders(on) => format.print_headers = *on,
                ConsumerProperty::HeadersSeparator(separator) => {
                    format.headers_separator = separator.clone();
                }
                ConsumerProperty::HeadersKeySeparator(separator) => {
                    format.headers_key_separator = separator.clone();
                }
            }
        }
        format
    }
}

/// A message as a JSON line.
#[derive(Serialize)]
struct JsonMessage<'a> {
    /// The topic it came from.
    topic: &'a str,
    /// The partition it came from.
    partition: u32,
    /// Its offset in the partition.
    offset: u64,
    /// When the broker stored it, in milliseconds since the Unix epoch.
    timestamp: u64,
    /// The key as text, or `null` when absent or not UTF-8.
    key: Option<Cow<'a, str>>,
    /// The key in hexadecimal, only when it is present and not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_hex: Option<Cow<'a, str>>,
    /// The value as text, or `null` when not UTF-8.
    value: Option<Cow<'a, str>>,
    /// The value in hexadecimal, only when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hex: Option<Cow<'a, str>>,
    /// Its headers in order, only when it has some.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<JsonHeader<'a>>,
}

/// A message's header as JSON.
#[derive(Serialize)]
struct JsonHeader<'a> {
    /// Its name.
    key: &'a str,
    /// Its value as text, or `null` when it has none or it is not UTF-8.
    value: Option<Cow<'a, str>>,
    /// The value in hexadecimal, only when it is present and not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hex: Option<Cow<'a, str>>,
}

/// A logical broker as a JSON line; unlike the wire record, a free one has explicit `null`s.
#[derive(Serialize)]
struct JsonBroker<'a> {
    /// Its id.
    id: u32,
    /// Whether it is free.
    available: bool,
    /// Who holds it.
    holder: Option<&'a str>,
    /// How long the present claim has left.
    lease_remaining_ms: Option<u64>,
    /// How many topics it serves.
    topics: u64,
    /// How many messages they hold.
    messages: u64,
    /// How many bytes of keys and values they hold.
    bytes: u64,
    /// How many bytes the store takes on disk; `null` when it is kept in memory only.
    disk_bytes: Option<u64>,
}

/// A topic as a JSON line; like [`JsonBroker`], with an explicit `null` for an in-memory store.
#[derive(Serialize)]
struct JsonTopic<'a> {
    /// Its name.
    name: &'a str,
    /// How many partitions it has.
    partitions: u32,
    /// How many messages it holds.
    messages: u64,
    /// The oldest offset kept.
    first_offset: u64,
    /// The offset the next message will get.
    next_offset: u64,
    /// How many bytes of keys and values it holds.
    bytes: u64,
    /// How many bytes its files take on disk; `null` when it is kept in memory only.
    disk_bytes: Option<u64>,
    /// Each partition's oldest offset kept, partition 0 first.
    first_offsets: &'a [u64],
    /// Each partition's next offset, partition 0 first.
    next_offsets: &'a [u64],
}

/// A group's state on a topic as a JSON line: the wire record plus its lag.
#[derive(Serialize)]
struct JsonGroup<'a> {
    /// The group's name.
    group: &'a str,
    /// The topic.
    topic: &'a str,
    /// The partition the offsets are of.
    partition: u32,
    /// Every offset below it is acknowledged.
    committed_offset: u64,
    /// The next offset never delivered to the group.
    delivered_offset: u64,
    /// The topic's next offset.
    end_offset: u64,
    /// How many messages the group has yet to acknowledge.
    lag: u64,
    /// How many are delivered and not acknowledged.
    pending: u64,
    /// The logical brokers of its members.
    members: &'a [u32],
}

/// A group reset as a JSON line.
#[derive(Serialize)]
struct JsonReset<'a> {
    /// The group's name.
    group: &'a str,
    /// The topic.
    topic: &'a str,
    /// The partition moved; `null` for every partition.
    partition: Option<u32>,
    /// The committed offset now.
    committed_offset: u64,
}

/// Writes one message of `topic`'s `partition` as `format` says, with its newline.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn write_message(
    out: &mut impl Write,
    topic: &str,
    partition: u32,
    message: &Message<'_>,
    format: &MessageFormat,
) -> io::Result<()> {
    let payload = if format.unwrap_schema { crate::envelope::unwrap(message.value) } else { None };
    let unwrapped;
    let message = match &payload {
        Some(value) => {
            unwrapped = Message { value, ..message.clone() };
            &unwrapped
        }
        None => message,
    };
    if format.json {
        let (key, key_hex) = match message.key {
            Some(key) => text_or_hex_fields(key),
            None => (None, None),
        };
        let (value, value_hex) = text_or_hex_fields(message.value);
        let headers = message
            .headers
            .iter()
            .map(|header| {
                let (value, value_hex) = match header.value {
                    Some(value) => text_or_hex_fields(value),
                    None => (None, None),
                };
                JsonHeader { key: header.key, value, value_hex }
            })
            .collect();
        let line = JsonMessage {
            topic,
            partition,
            offset: message.offset,
            timestamp: message.timestamp,
            key,
            key_hex,
            value,
            value_hex,
            headers,
        };
        return write_json(out, &line);
    }
    let mut line = String::new();
    if format.print_offset && format.print_partition {
        let _ = write!(line, "{partition}:{}\t", message.offset);
    } else if format.print_offset {
        let _ = write!(line, "{}\t", message.offset);
    }
    if let Some(style) = format.timestamp {
        line.push_str(&format_timestamp(message.timestamp, style));
        line.push('\t');
    }
    if format.print_headers {
        if message.headers.is_empty() {
            line.push_str("NO_HEADERS");
        }
        for (i, header) in message.headers.iter().enumerate() {
            if i > 0 {
                line.push_str(&format.headers_separator);
            }
            line.push_str(&escape(header.key.as_bytes()));
            line.push_str(&format.headers_key_separator);
            match header.value {
                Some(value) => line.push_str(&escape(value)),
                None => line.push_str("null"),
            }
        }
        line.push('\t');
    }
    if format.print_key {
        match message.key {
            Some(key) => line.push_str(&escape(key)),
            None => line.push_str("null"),
        }
        line.push_str(&format.key_separator);
    }
    line.push_str(&escape(message.value));
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// A timestamp in milliseconds since the Unix epoch as `style` shows it. One that local time
/// cannot show (out of range) is shown in milliseconds.
pub fn format_timestamp(ms: u64, style: TimestampStyle) -> String {
    match style {
        TimestampStyle::Ms => ms.to_string(),
        TimestampStyle::CreateTime => format!("CreateTime:{ms}"),
        TimestampStyle::Local => i64::try_from(ms)
            .ok()
            .and_then(|ms| Local.timestamp_millis_opt(ms).single())
            .map_or_else(
                || ms.to_string(),
                |time| time.to_rfc3339_opts(SecondsFormat::Millis, false),
            ),
    }
}

/// Writes the logical brokers as a table, or one JSON object per line.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn write_status(out: &mut impl Write, brokers: &[BrokerStatus], json: bool) -> io::Result<()> {
    if json {
        for b in brokers {
            let line = JsonBroker {
                id: b.id,
                available: b.available,
                holder: b.holder.as_deref(),
                lease_remaining_ms: b.lease_remaining_ms,
                topics: b.topics,
                messages: b.messages,
                bytes: b.bytes,
                disk_bytes: b.disk_bytes,
            };
            write_json(out, &line)?;
        }
        return Ok(());
    }
    let rows = brokers
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                if b.available { "free" } else { "claimed" }.to_owned(),
                b.holder.clone().unwrap_or_else(|| "-".to_owned()),
                b.lease_remaining_ms.map_or_else(|| "-".to_owned(), format_lease),
                b.topics.to_string(),
                b.messages.to_string(),
            ]
        })
        .collect();
    write_table(out, &["BROKER", "STATE", "HOLDER", "LEASE LEFT", "TOPICS", "MESSAGES"], rows)
}

/// Writes the topics as a table, or one JSON object per line.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn write_topics(out: &mut impl Write, topics: &[TopicInfo], json: bool) -> io::Result<()> {
    if json {
        for t in topics {
            let line = JsonTopic {
                name: &t.name,
                partitions: t.partitions,
                messages: t.messages,
                first_offset: t.first_offset,
                next_offset: t.next_offset,
                bytes: t.bytes,
                disk_bytes: t.disk_bytes,
                first_offsets: &t.first_offsets,
                next_offsets: &t.next_offsets,
            };
            write_json(out, &line)?;
        }
        return Ok(());
    }
    let rows = topics
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.partitions.to_string(),
                t.messages.to_string(),
                per_partition(&t.first_offsets, t.first_offset),
                per_partition(&t.next_offsets, t.next_offset),
            ]
        })
        .collect();
    write_table(out, &["TOPIC", "PARTITIONS", "MESSAGES", "FIRST OFFSET", "NEXT OFFSET"], rows)
}

/// How many partitions' offsets a table cell lists before it stops.
const SHOWN_PARTITION_OFFSETS: usize = 8;

/// One offset per partition as a table cell: `3` for one partition, `3,0,7` for several (the
/// first few, then `,...`); `single` when the broker sent no list.
fn per_partition(offsets: &[u64], single: u64) -> String {
    if offsets.len() <= 1 {
        return single.to_string();
    }
    let shown: Vec<String> =
        offsets.iter().take(SHOWN_PARTITION_OFFSETS).map(u64::to_string).collect();
    let more = if offsets.len() > SHOWN_PARTITION_OFFSETS { ",..." } else { "" };
    format!("{}{more}", shown.join(","))
}

/// Writes group states as a table with their lag (like `kafka-consumer-groups --describe`), or
/// one JSON object per line.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn write_groups(out: &mut impl Write, groups: &[GroupInfo], json: bool) -> io::Result<()> {
    if json {
        for g in groups {
            let line = JsonGroup {
                group: &g.group,
                topic: &g.topic,
                partition: g.partition,
                committed_offset: g.committed_offset,
                delivered_offset: g.delivered_offset,
                end_offset: g.end_offset,
                lag: g.lag(),
                pending: g.pending,
                members: &g.members,
            };
            write_json(out, &line)?;
        }
        return Ok(());
    }
    let rows = groups
        .iter()
        .map(|g| {
            let members = if g.members.is_empty() {
                "-".to_owned()
            } else {
                g.members.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            };
            vec![
                g.group.clone(),
                g.topic.clone(),
                g.partition.to_string(),
                g.committed_offset.to_string(),
                g.end_offset.to_string(),
                g.lag().to_string(),
                g.pending.to_string(),
                members,
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "COMMITTED OFFSET",
            "END OFFSET",
            "LAG",
            "PENDING",
            "MEMBERS",
        ],
        rows,
    )
}

/// Writes where a reset moved a group, as a table row or a JSON object.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn write_reset(
    out: &mut impl Write,
    group: &str,
    topic: &str,
    partition: Option<u32>,
    committed_offset: u64,
    json: bool,
) -> io::Result<()> {
    if json {
        return write_json(out, &JsonReset { group, topic, partition, committed_offset });
    }
    let Some(partition) = partition else {
        let row = vec![group.to_owned(), topic.to_owned(), committed_offset.to_string()];
        return write_table(out, &["GROUP", "TOPIC", "COMMITTED OFFSET"], vec![row]);
    };
    let row = vec![
        group.to_owned(),
        topic.to_owned(),
        partition.to_string(),
        committed_offset.to_string(),
    ];
    write_table(out, &["GROUP", "TOPIC", "PARTITION", "COMMITTED OFFSET"], vec![row])
}

/// A lease left in milliseconds as seconds with one decimal: `29.5s`.
pub fn format_lease(ms: u64) -> String {
    format!("{}.{}s", ms / 1000, ms % 1000 / 100)
}

/// `bytes` as text safe to show on a terminal: each byte that is not part of valid UTF-8 is
/// written `\xNN`, and each character [`safe`] escapes is escaped. Borrowed when there is
/// nothing to change.
pub fn escape(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return safe(text);
    }
    let mut text = String::with_capacity(bytes.len() * 2);
    for chunk in bytes.utf8_chunks() {
        text.push_str(&safe(chunk.valid()));
        for byte in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
    Cow::Owned(text)
}

/// `text` with every character that would act on a terminal instead of showing written as an
/// escape: `\n`, `\r`, `\t`, `\x1b` for the other ASCII controls, `\u{85}` for the C1
/// controls, and `\u{202e}` and the like for the bidirectional marks, embeddings, overrides and
/// isolates. Borrowed when there is nothing to escape.
pub fn safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Writing to a String cannot fail.
            c if is_unsafe(c) && c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether `c` acts on a terminal or reorders the text around it: a control character, or a
/// bidirectional formatting character (the Unicode `Bidi_Control` property).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `bytes` in lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// `bytes` as text when they are UTF-8, else as lower-case hexadecimal; and whether it is
/// hexadecimal. What JSON output and the web console show of a key or a value.
pub fn text_or_hex(bytes: &[u8]) -> (Cow<'_, str>, bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Cow::Borrowed(text), false),
        Err(_) => (Cow::Owned(hex(bytes)), true),
    }
}

/// [`text_or_hex`] as the two JSON fields that hold one or the other (`value`, `value_hex`).
fn text_or_hex_fields(bytes: &[u8]) -> (Option<Cow<'_, str>>, Option<Cow<'_, str>>) {
    match text_or_hex(bytes) {
        (hex, true) => (None, Some(hex)),
        (text, false) => (Some(text), None),
    }
}

/// Writes `value` as one line of JSON.
fn write_json(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// Writes `rows` under `headers` in columns two spaces apart, the last one unpadded so that
/// lines carry no trailing blanks. Cells are made [`safe`] first, and padded by display width
/// (not bytes or characters), by hand: `format!`'s `{:<w$}` cannot take a width of 65,536 or
/// more, and a name that long can come from the network.
fn write_table(out: &mut impl Write, headers: &[&str], rows: Vec<Vec<String>>) -> io::Result<()> {
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let rows: Vec<Vec<String>> = std::iter::once(header)
        .chain(rows)
        .map(|row| row.iter().map(|cell| safe(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = vec![0; headers.len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.width());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = width.saturating_sub(cell.width()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `s` unless `n` is 1.
pub(crate) fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<'a>(key: Option<&'a [u8]>, value: &'a [u8]) -> Message<'a> {
        Message { offset: 7, timestamp: 1_700_000_000_000, key, value, headers: Vec::new() }
    }

    fn text(m: &Message<'_>, format: &MessageFormat) -> String {
        let mut out = Vec::new();
        write_message(&mut out, "t", 2, m, format).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_lines() {
        let m = message(None, b"hello");
        assert_eq!(text(&m, &MessageFormat::default()), "7\thello\n");
        let all = MessageFormat {
            print_key: true,
            timestamp: Some(TimestampStyle::Ms),
            ..MessageFormat::default()
        };
        assert_eq!(text(&m, &all), "7\t1700000000000\tnull\thello\n");
        let keyed = message(Some(b"k"), b"\xffok\x00");
        assert_eq!(text(&keyed, &all), "7\t1700000000000\tk\t\\xffok\\x00\n");
        let kafka = MessageFormat {
            print_offset: false,
            print_key: true,
            timestamp: Some(TimestampStyle::CreateTime),
            key_separator: ":".into(),
            ..MessageFormat::default()
        };
        assert_eq!(text(&keyed, &kafka), "CreateTime:1700000000000\tk:\\xffok\\x00\n");
        let spanning = MessageFormat { print_partition: true, ..MessageFormat::default() };
        assert_eq!(text(&m, &spanning), "2:7\thello\n");
    }

    #[test]
    fn headers_print_as_kafka_prints_them_and_go_into_json() {
        let mut with = message(Some(b"k"), b"v");
        with.headers = vec![
            protocol::Header { key: "trace", value: Some(b"a1") },
            protocol::Header { key: "trace", value: None },
            protocol::Header { key: "bin", value: Some(b"\xff\n") },
        ];
        let kafka = MessageFormat {
            print_headers: true,
            print_key: true,
            print_offset: false,
            ..MessageFormat::default()
        };
        assert_eq!(text(&with, &kafka), "trace:a1,trace:null,bin:\\xff\\n\tk\tv\n");
        assert_eq!(text(&message(None, b"v"), &kafka), "NO_HEADERS\tnull\tv\n");
        let piped = MessageFormat {
            headers_separator: "|".into(),
            headers_key_separator: "=".into(),
            ..kafka.clone()
        };
        assert_eq!(text(&with, &piped), "trace=a1|trace=null|bin=\\xff\\n\tk\tv\n");
        let json = MessageFormat { json: true, ..MessageFormat::default() };
        let v: serde_json::Value = serde_json::from_str(&text(&with, &json)).unwrap();
        assert_eq!(
            v["headers"],
            serde_json::json!([
                {"key": "trace", "value": "a1"},
                {"key": "trace", "value": null},
                {"key": "bin", "value": null, "value_hex": "ff0a"},
            ])
        );
        let v: serde_json::Value =
            serde_json::from_str(&text(&message(None, b"v"), &json)).unwrap();
        assert!(v.get("headers").is_none());
    }

    #[test]
    fn json_lines_fall_back_to_hex() {
        let json = MessageFormat { json: true, ..MessageFormat::default() };
        let line = text(&message(None, b"hi"), &json);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["topic"], "t");
        assert_eq!(v["offset"], 7);
        assert_eq!(v["partition"], 2);
        assert_eq!(v["key"], serde_json::Value::Null);
        assert_eq!(v["value"], "hi");
        assert!(v.get("key_hex").is_none() && v.get("value_hex").is_none());
        let line = text(&message(Some(b"\xfe"), b"\x01\xff"), &json);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["key"], serde_json::Value::Null);
        assert_eq!(v["key_hex"], "fe");
        assert_eq!(v["value"], serde_json::Value::Null);
        assert_eq!(v["value_hex"], "01ff");
    }

    #[test]
    fn tables_line_up() {
        let topics = vec![
            TopicInfo {
                name: "Hola mundo".into(),
                partitions: 1,
                messages: 3,
                first_offset: 0,
                next_offset: 3,
                bytes: 27,
                disk_bytes: None,
                first_offsets: vec![0],
                next_offsets: vec![3],
                retention_messages: None,
                retention_bytes: None,
                retention_ms: None,
            },
            TopicInfo {
                name: "x".into(),
                partitions: 3,
                messages: 10,
                first_offset: 0,
                next_offset: 4,
                bytes: 1,
                disk_bytes: Some(4096),
                first_offsets: vec![0, 0, 1],
                next_offsets: vec![4, 3, 4],
                retention_messages: None,
                retention_bytes: None,
                retention_ms: None,
            },
        ];
        let mut out = Vec::new();
        write_topics(&mut out, &topics, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "TOPIC       PARTITIONS  MESSAGES  FIRST OFFSET  NEXT OFFSET\n\
             Hola mundo  1           3         0             3\n\
             x           3           10        0,0,1         4,3,4\n"
        );
        let mut out = Vec::new();
        write_topics(&mut out, &topics, true).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["disk_bytes"], serde_json::Value::Null);
        assert_eq!(lines[1]["disk_bytes"], 4096);
        assert_eq!(lines[1]["partitions"], 3);
        assert_eq!(lines[1]["next_offsets"], serde_json::json!([4, 3, 4]));
    }

    #[test]
    fn groups_show_their_lag_and_members() {
        let groups = vec![
            GroupInfo {
                group: "preparers".into(),
                topic: "orders".into(),
                partition: 1,
                committed_offset: 3,
                delivered_offset: 5,
                end_offset: 9,
                pending: 2,
                members: vec![1, 2],
            },
            GroupInfo {
                group: "x".into(),
                topic: "orders".into(),
                partition: 0,
                committed_offset: 9,
                delivered_offset: 9,
                end_offset: 9,
                pending: 0,
                members: vec![],
            },
        ];
        let mut out = Vec::new();
        write_groups(&mut out, &groups, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GROUP      TOPIC   PARTITION  COMMITTED OFFSET  END OFFSET  LAG  PENDING  MEMBERS\n\
             preparers  orders  1          3                 9           6    2        1,2\n\
             x          orders  0          9                 9           0    0        -\n"
        );
        let mut out = Vec::new();
        write_groups(&mut out, &groups, true).unwrap();
        let first: serde_json::Value =
            serde_json::from_str(String::from_utf8(out).unwrap().lines().next().unwrap()).unwrap();
        assert_eq!(first["lag"], 6);
        assert_eq!(first["members"], serde_json::json!([1, 2]));
        assert_eq!(first["delivered_offset"], 5);
        assert_eq!(first["partition"], 1);
    }

    #[test]
    fn what_acts_on_a_terminal_is_escaped() {
        assert!(matches!(safe("Hola mundo ñ 日本"), Cow::Borrowed(_)));
        assert_eq!(safe("a\x1b[31mb\rc\nd\te\x7f"), "a\\x1b[31mb\\rc\\nd\\te\\x7f");
        assert_eq!(safe("\u{85}x\u{9b}"), "\\u{85}x\\u{9b}");
        assert_eq!(
            safe("\u{202e}\u{2066}\u{200f}\u{61c}ok"),
            "\\u{202e}\\u{2066}\\u{200f}\\u{61c}ok"
        );
        assert_eq!(escape(b"\xff\x1b"), "\\xff\\x1b");
    }

    #[test]
    fn wide_characters_pad_by_display_width() {
        let mut out = Vec::new();
        let rows =
            vec![vec!["日本".to_owned(), "1".to_owned()], vec!["ab".to_owned(), "2".to_owned()]];
        write_table(&mut out, &["NAME", "N"], rows).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "NAME  N\n日本  1\nab    2\n");
    }

    #[test]
    fn leases_in_seconds() {
        assert_eq!(format_lease(29_512), "29.5s");
        assert_eq!(format_lease(80), "0.0s");
    }
}
