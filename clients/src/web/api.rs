//! The console's JSON endpoints: each turns one browser request into a few broker requests.
//!
//! Every endpoint speaks to the broker as the browser's session does ([`Session`]). Reading
//! topics and messages needs a claim (PROTOCOL.md, "Claims"): the session's own when it holds
//! one from the Consume panel, else one of any free logical broker taken for the request and
//! released at once, so that the console holds no logical broker between page refreshes. When
//! every one is claimed the page is told so.

use std::net::IpAddr;

use protocol::{ErrorCode, Fetch, Message, NewMessage, Request, ResetTo, Response, Retention};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::session::{Session, Sessions, CLAIMANT};
use super::throttle::Throttle;
use super::Query;
use crate::output::text_or_hex;
use crate::security::Credentials;
use crate::ClientError;

/// The most messages one page of a topic shows.
pub const MAX_PAGE: u32 = 500;

/// The byte budget of one page of messages.
const PAGE_BYTES: u32 = 1024 * 1024;

/// An HTTP reply: status, content type and body.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The body's media type.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// A `Set-Cookie` value to send with it: a new session's.
    pub set_cookie: Option<String>,
}

impl Reply {
    /// A `200` reply carrying `value` as JSON.
    pub fn json(value: &Value) -> Reply {
        Reply::json_status(200, value)
    }

    /// A reply of `status` carrying `value` as JSON.
    pub fn json_status(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
            set_cookie: None,
        }
    }

    /// A `200` reply carrying one of the built-in files.
    pub fn asset(content_type: &'static str, text: &str) -> Reply {
        Reply { status: 200, content_type, body: text.into(), set_cookie: None }
    }

    /// A reply of `status` carrying `{"error": reason}`.
    pub fn error(status: u16, reason: &str) -> Reply {
        Reply::json_status(status, &json!({ "error": reason }))
    }

    /// The reply for a failed broker request: `409` when the broker refused (the reason is
    /// the broker's), `401` when it refused the login, `502` when it did not answer; in words.
    pub fn failed(error: &ClientError) -> Reply {
        let status = match error {
            _ if error.broker_code().is_some() => 409,
            ClientError::AuthenticationFailed { .. } => 401,
            _ => 502,
        };
        Reply::error(status, &describe(error))
    }

    /// The reply as `tiny_http` sends it.
    pub fn into_response(self) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
        let mut response = super::response(self.status, self.content_type, self.body);
        if let Some(h) = self.set_cookie.and_then(|c| super::make_header("Set-Cookie", &c)) {
            response.add_header(h);
        }
        response
    }
}

/// `error` in words for the page.
pub fn describe(error: &ClientError) -> String {
    match error.broker_code() {
        Some(ErrorCode::NoBrokerAvailable) => {
            "every logical broker is claimed: topics and messages can be read again once one \
             is free"
                .to_owned()
        }
        _ => match error {
            ClientError::AuthenticationFailed { .. } => format!(
                "{error}: the broker asks for a user name and password (log in above), or \
                 refused the ones given"
            ),
            _ => format!("{error:#}"),
        },
    }
}

/// `GET /api/overview`: the logical brokers, the topics and the consumer groups, at once.
///
/// `{"up": bool, "error"?: str, "brokers": [...], "topics": [...] | null, "topics_error"?:
/// str, "groups": [...]}`; `up` is false when the broker did not answer.
pub fn overview(session: &Session) -> Reply {
    let result = session.pool.probe(|client| {
        let brokers = client.status()?;
        // Listing needs no claim: the overview holds no logical broker from anyone.
        let topics = client.topics();
        let groups = client.list_groups(None, None)?;
        Ok((brokers, topics, groups))
    });
    match result {
        Err(e) => Reply::json(&json!({
            "up": false,
            "refused": matches!(e, ClientError::AuthenticationFailed { .. }),
            "error": describe(&e),
        })),
        Ok((brokers, topics, groups)) => {
            let groups: Vec<Value> = groups
                .iter()
                .map(|g| {
                    let mut value = json!(g);
                    value["lag"] = json!(g.lag());
                    value
                })
                .collect();
            let (topics, topics_error) = match topics {
                Ok(topics) => (json!(topics), Value::Null),
                Err(e) => (Value::Null, json!(describe(&e))),
            };
            Reply::json(&json!({
                "up": true,
                "brokers": brokers,
                "topics": topics,
                "topics_error": topics_error,
                "groups": groups,
            }))
        }
    }
}

/// A message as the page shows it: key and value as text when they are UTF-8, else as hex.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// The message's offset.
    pub offset: u64,
    /// When the broker appended it, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The key, if any, as text or hex.
    pub key: Option<String>,
    /// Whether `key` is hex.
    pub key_hex: bool,
    /// The value, as text or hex.
    pub value: String,
    /// Whether `value` is hex.
    pub value_hex: bool,
    /// Its headers in order, each value as text or hex; left out when it has none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ShownHeader>,
}

/// A message's header as the page shows it.
#[derive(Debug, Serialize)]
pub struct ShownHeader {
    /// Its name.
    pub key: String,
    /// Its value as text or hex; `None` for a header without one (Kafka's null).
    pub value: Option<String>,
    /// Whether `value` is hex.
    pub value_hex: bool,
}

impl Shown {
    /// `message` as the page shows it.
    pub fn from_message(message: &Message<'_>) -> Shown {
        let (key, key_hex) = match message.key {
            Some(key) => {
                let (text, hex) = text_or_hex(key);
                (Some(text.into_owned()), hex)
            }
            None => (None, false),
        };
        let (value, value_hex) = text_or_hex(message.value);
        let value = value.into_owned();
        let headers = message
            .headers
            .iter()
            .map(|header| {
                let (value, value_hex) = match header.value.map(text_or_hex) {
                    Some((text, hex)) => (Some(text.into_owned()), hex),
                    None => (None, false),
                };
                ShownHeader { key: header.key.to_owned(), value, value_hex }
            })
            .collect();
        Shown {
            offset: message.offset,
            timestamp: message.timestamp,
            key,
            key_hex,
            value,
            value_hex,
            headers,
        }
    }
}

/// How many messages one search reads at most before it answers with what it found so far
/// (and where to go on from): a search never holds a request thread for long.
const SEARCH_MESSAGES: u64 = 200_000;

/// The byte budget of one search's reading, for the same reason.
const SEARCH_BYTES: u64 = 64 * 1024 * 1024;

/// The most memory a search pattern may compile to: a browser cannot make the console build
/// an unbounded automaton (the `regex` crate matches in linear time, so no pattern is slow).
const PATTERN_BYTES: usize = 1024 * 1024;

/// What a search looks for: each given pattern must match, the key's and the value's.
struct Search {
    /// Matches the key (a message without one never matches).
    key: Option<regex::bytes::Regex>,
    /// Matches the value.
    value: Option<regex::bytes::Regex>,
}

impl Search {
    /// The search `query` asks for (`key=`, `value=`, `regex=1` for patterns rather than
    /// substrings), `None` for none, or the reason it cannot be made.
    fn of(query: &Query) -> Result<Option<Search>, String> {
        let regex = query.get("regex") == Some("1");
        let compile = |field: &str| -> Result<Option<regex::bytes::Regex>, String> {
            let Some(text) = query.get(field).filter(|t| !t.is_empty()) else { return Ok(None) };
            let pattern = if regex { text.to_owned() } else { regex::escape(text) };
            regex::bytes::RegexBuilder::new(&pattern)
                .size_limit(PATTERN_BYTES)
                .build()
                .map(Some)
                .map_err(|e| format!("the {field} pattern is not a regular expression: {e}"))
        };
        let search = Search { key: compile("key")?, value: compile("value")? };
        Ok((search.key.is_some() || search.value.is_some()).then_some(search))
    }

    /// Whether `message` is one looked for.
    fn matches(&self, message: &Message<'_>) -> bool {
        let key = self.key.as_ref().is_none_or(|k| message.key.is_some_and(|key| k.is_match(key)));
        key && self.value.as_ref().is_none_or(|v| v.is_match(message.value))
    }
}

/// Where a page starts: `offset=N`, `offset=first`, `offset=last` (the last `limit` messages),
/// `before=N` (the `limit` messages before offset N) or `time=MS` (at the first message appended
/// at or after MS milliseconds since the Unix epoch).
enum PageStart {
    /// At this offset.
    At(u64),
    /// At the topic's first kept message.
    First,
    /// So that the page ends at the topic's end.
    Last,
    /// So that the page ends just before this offset.
    Before(u64),
    /// At the first message appended at or after this time, in milliseconds since the epoch.
    Time(u64),
}

impl PageStart {
    /// The start `query` asks for, or the reason it is not one.
    fn of(query: &Query) -> Result<PageStart, &'static str> {
        if let Some(before) = query.get("before") {
            return before.parse().map(PageStart::Before).map_err(|_| "before must be an offset");
        }
        if let Some(time) = query.get("time") {
            return time
                .parse()
                .map(PageStart::Time)
                .map_err(|_| "the time must be milliseconds since 1970 (UTC)");
        }
        match query.get("offset") {
            None | Some("first") => Ok(PageStart::First),
            Some("last") => Ok(PageStart::Last),
            Some(n) => n
                .parse()
                .map(PageStart::At)
                .map_err(|_| "the offset must be a whole number (or first or last)"),
        }
    }
}

/// `GET /api/messages?topic=T[&partition=P]&offset=N&limit=L[&key=K][&value=V][&regex=1]`:
/// one page of a partition's messages (partition 0 unless named), or with `key`/`value` the
/// next ones that match, searching from the start.
///
/// `{"messages": [...], "offset": n, "next_offset": n, "first_offset": n, "end_offset": n,
/// "scanned"?: n}`: `offset` is where the page starts, `next_offset` where the next page does
/// (after the last message read, which a page cut by its byte budget or a search that ran out
/// of its reading budget puts before `end_offset`). An offset the topic does not hold is
/// refused (`409`) with `first_offset` and `end_offset`, so that the page can go there.
pub fn messages(session: &Session, page: &str, query: &Query) -> Reply {
    let Some(topic) = query.get("topic") else {
        return Reply::error(400, "which topic? (topic=...)");
    };
    let start = match PageStart::of(query) {
        Ok(start) => start,
        Err(reason) => return Reply::error(400, reason),
    };
    let limit = match query.get("limit").map(str::parse::<u32>).transpose() {
        Ok(limit) => limit.unwrap_or(50).clamp(1, MAX_PAGE),
        Err(_) => return Reply::error(400, "the limit must be a whole number"),
    };
    let search = match Search::of(query) {
        Ok(search) => search,
        Err(reason) => return Reply::error(400, &reason),
    };
    let partition = match query.get("partition").map(str::parse::<u32>).transpose() {
        Ok(partition) => partition.unwrap_or(0),
        Err(_) => return Reply::error(400, "the partition must be a whole number"),
    };
    let result = session.pool.with(|client| {
        session.with_claim(client, page, |client, token| {
            let topics = client.list_topics(token)?;
            let Some(info) = topics.iter().find(|t| t.name == topic) else {
                return Err(ClientError::Broker {
                    code: ErrorCode::UnknownTopic,
                    reason: format!("there is no topic {topic:?}"),
                    range: None,
                });
            };
            let Some((first, end)) = partition_offsets(info, partition) else {
                return Err(ClientError::Broker {
                    code: ErrorCode::UnknownPartition,
                    reason: format!(
                        "{topic} has {} partition{}, numbered from 0: there is no partition \
                         {partition}",
                        info.partitions,
                        if info.partitions == 1 { "" } else { "s" }
                    ),
                    range: None,
                });
            };
            let source = Source { token, topic, partition, first };
            let offset = match start {
                PageStart::At(offset) => offset,
                PageStart::First => first,
                PageStart::Last => return page_before(client, &source, end, limit),
                PageStart::Before(to) => return page_before(client, &source, to.min(end), limit),
                PageStart::Time(ms) => offset_at(client, &source, end, ms)?,
            };
            match &search {
                None => page_of(client, &source, offset, limit).map(|(page, _)| page),
                Some(search) => search_from(client, &source, offset, limit, search),
            }
        })
    });
    match result {
        Ok(value) => Reply::json(&value),
        Err(ClientError::Broker { code: ErrorCode::OffsetOutOfRange, range, .. }) => {
            let (first, end) = range.unwrap_or((0, 0));
            let reason = if first == end {
                format!("{topic} holds no messages now; new ones will start at offset {end}")
            } else {
                format!(
                    "{topic} holds offsets {first} to {} now; older ones were removed by its \
                     retention, newer ones are not written yet",
                    end - 1
                )
            };
            Reply::json_status(
                409,
                &json!({ "error": reason, "first_offset": first, "end_offset": end }),
            )
        }
        Err(e) => Reply::failed(&e),
    }
}

/// A partition's first kept offset and next offset, from its topic's record; `None` for a
/// partition the topic does not have.
pub fn partition_offsets(info: &protocol::TopicInfo, partition: u32) -> Option<(u64, u64)> {
    let index = partition as usize;
    match (info.first_offsets.get(index), info.next_offsets.get(index)) {
        (Some(first), Some(next)) => Some((*first, *next)),
        _ if partition == 0 => Some((info.first_offset, info.next_offset)),
        _ => None,
    }
}

/// What a page reads: a partition of a topic under a claim, whose first kept offset is `first`.
struct Source<'a> {
    /// The claim read under.
    token: u64,
    /// The topic.
    topic: &'a str,
    /// The partition.
    partition: u32,
    /// The partition's first kept offset.
    first: u64,
}

/// The page of a partition that ends just before offset `to`: at most `limit` messages, fewer
/// when they do not fit in the page's byte budget (then the page starts later, so that it
/// still ends at `to`).
fn page_before(
    client: &mut crate::Client,
    source: &Source<'_>,
    to: u64,
    limit: u32,
) -> crate::Result<Value> {
    let first = source.first;
    let mut start = to.saturating_sub(u64::from(limit)).max(first);
    // Each try starts where as many messages as the last one held fit before `to`; larger
    // messages nearer `to` may cut it again, a few times at most.
    for _ in 0..8 {
        let count = u32::try_from(to.saturating_sub(start)).unwrap_or(limit).clamp(1, limit);
        let (page, next) = page_of(client, source, start, count)?;
        if next >= to || start >= to {
            return Ok(page);
        }
        start = to - (next - start).max(1);
    }
    page_of(client, source, start, limit).map(|(page, _)| page)
}

/// The offset of the first message of a partition appended at or after `ms` (milliseconds
/// since the epoch), or `end` when none was: a binary search of one-message fetches between the
/// first kept offset and `end`, as the Kafka door answers ListOffsets by time. Timestamps rise
/// with offsets unless the broker's clock was set back; then it finds one such message, not
/// necessarily the first.
fn offset_at(
    client: &mut crate::Client,
    source: &Source<'_>,
    end: u64,
    ms: u64,
) -> crate::Result<u64> {
    let (mut low, mut high) = (source.first, end);
    while low < high {
        let middle = low + (high - low) / 2;
        let fetch = Fetch {
            claim: source.token,
            topic: source.topic,
            partition: source.partition,
            offset: middle,
            max_messages: 1,
            max_bytes: 0,
            wait_ms: 0,
            batches: false,
        };
        // Retention may take the message meanwhile: then it is before any time asked for.
        let stamp = match client
            .fetch(fetch, |batch| Ok(batch.messages.first().map(|m| (m.offset, m.timestamp))))
        {
            Ok(stamp) => stamp,
            Err(e) if e.broker_code() == Some(ErrorCode::OffsetOutOfRange) => None,
            Err(e) => return Err(e),
        };
        match stamp {
            Some((_, timestamp)) if timestamp >= ms => high = middle,
            Some((offset, _)) => low = offset.max(middle) + 1,
            None => low = middle + 1,
        }
    }
    Ok(low)
}

/// One page of a partition from `offset`, and where the next one starts.
fn page_of(
    client: &mut crate::Client,
    source: &Source<'_>,
    offset: u64,
    limit: u32,
) -> crate::Result<(Value, u64)> {
    let first = source.first;
    let fetch = Fetch {
        claim: source.token,
        topic: source.topic,
        partition: source.partition,
        offset,
        max_messages: limit,
        max_bytes: PAGE_BYTES,
        wait_ms: 0,
        batches: false,
    };
    client.fetch(fetch, |batch| {
        let shown: Vec<Shown> = batch.messages.iter().map(Shown::from_message).collect();
        let page = json!({
            "messages": shown,
            "partition": batch.partition,
            "offset": offset,
            "next_offset": batch.next_offset,
            "first_offset": first,
            "end_offset": batch.end_offset,
        });
        Ok((page, batch.next_offset))
    })
}

/// The next `limit` messages of a partition from `offset` that `search` looks for, reading at
/// most [`SEARCH_MESSAGES`] and [`SEARCH_BYTES`], up to the partition's end as it is now.
fn search_from(
    client: &mut crate::Client,
    source: &Source<'_>,
    offset: u64,
    limit: u32,
    search: &Search,
) -> crate::Result<Value> {
    let first = source.first;
    let mut found: Vec<Shown> = Vec::new();
    let mut end;
    let (mut at, mut scanned, mut read) = (offset, 0u64, 0u64);
    loop {
        let fetch = Fetch {
            claim: source.token,
            topic: source.topic,
            partition: source.partition,
            offset: at,
            max_messages: MAX_PAGE,
            max_bytes: PAGE_BYTES,
            wait_ms: 0,
            batches: false,
        };
        let (next, batch_end, bytes, count) = client.fetch(fetch, |batch| {
            let mut bytes = 0u64;
            for message in &batch.messages {
                bytes += (message.value.len() + message.key.map_or(0, <[u8]>::len)) as u64;
                if found.len() < limit as usize && search.matches(message) {
                    found.push(Shown::from_message(message));
                }
            }
            Ok((batch.next_offset, batch.end_offset, bytes, batch.messages.len() as u64))
        })?;
        at = next;
        end = batch_end;
        scanned += count;
        read += bytes;
        if count == 0
            || at >= end
            || found.len() >= limit as usize
            || scanned >= SEARCH_MESSAGES
            || read >= SEARCH_BYTES
        {
            break;
        }
    }
    // Found a whole page: the next search starts after its last match, not after what the
    // last batch read beyond it.
    if found.len() >= limit as usize {
        at = found.last().map_or(at, |m| m.offset + 1);
    }
    Ok(json!({
        "messages": found,
        "partition": source.partition,
        "offset": offset,
        "next_offset": at,
        "first_offset": first,
        "end_offset": end,
        "scanned": scanned,
    }))
}

/// The body of `POST /api/groups/reset`.
#[derive(Debug, Deserialize)]
struct ResetForm {
    /// The group.
    group: String,
    /// The topic.
    topic: String,
    /// `earliest`, `latest` or `offset`.
    to: String,
    /// The offset, for `to: "offset"`.
    #[serde(default)]
    offset: Option<u64>,
    /// Reset even while the group has members on the topic.
    #[serde(default)]
    force: bool,
    /// The one partition to move; absent: every partition.
    #[serde(default)]
    partition: Option<u32>,
}

/// `POST /api/groups/reset` with `{"group", "topic", "to", "offset"?, "force"?,
/// "partition"?}`: moves a
/// group's committed offset, refusing as `consumer group-reset` does while the group has
/// members on the topic unless `force`.
///
/// `{"committed_offset": n}`, or `{"error"}` in words (`409` for a refusal).
pub fn reset_group(session: &Session, body: &[u8]) -> Reply {
    let form: ResetForm = match serde_json::from_slice(body) {
        Ok(form) => form,
        Err(e) => return Reply::error(400, &format!("not a reset form: {e}")),
    };
    let to = match (form.to.as_str(), form.offset) {
        ("earliest", _) => ResetTo::Earliest,
        ("latest", _) => ResetTo::Latest,
        ("offset", Some(offset)) => ResetTo::Offset(offset),
        ("offset", None) => return Reply::error(400, "to which offset?"),
        _ => return Reply::error(400, "reset to earliest, latest or an offset"),
    };
    let result = session.pool.with(|client| {
        crate::reset::reset_unless_active(
            client,
            &form.group,
            &form.topic,
            form.partition,
            to,
            form.force,
        )
    });
    match result {
        Ok(committed) => Reply::json(&json!({ "committed_offset": committed })),
        Err(ClientError::GroupActive { members, .. }) => Reply::error(
            409,
            &format!(
                "{} is being read now (by members on logical broker{} {}): stop them first, or \
                 reset anyway, and they read on from the new offset",
                form.group,
                if members.len() == 1 { "" } else { "s" },
                members.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
        ),
        Err(e) => Reply::failed(&e),
    }
}

/// The body of `POST /api/produce`.
#[derive(Debug, Deserialize)]
struct ProduceForm {
    /// The topic to append to.
    topic: String,
    /// The key; empty or absent for none.
    #[serde(default)]
    key: Option<String>,
    /// The value.
    value: String,
    /// The partition; absent or `null` for where the broker puts it (by the key's hash).
    #[serde(default)]
    partition: Option<u32>,
}

/// `POST /api/produce` with `{"topic", "key"?, "value", "partition"?}`: appends one message.
///
/// `{"partition": p, "offset": n}`, or `{"error": reason}` in words.
pub fn produce(session: &Session, body: &[u8]) -> Reply {
    let form: ProduceForm = match serde_json::from_slice(body) {
        Ok(form) => form,
        Err(e) => return Reply::error(400, &format!("not a produce form: {e}")),
    };
    let key = form.key.as_deref().filter(|k| !k.is_empty()).map(str::as_bytes);
    let message = NewMessage::new(key, form.value.as_bytes());
    let size = message.value.len() + message.key.map_or(0, <[u8]>::len);
    match session.pool.with(|client| client.append(&form.topic, form.partition, vec![message])) {
        Ok(appended) => Reply::json(
            &json!({ "partition": appended.partition, "offset": appended.first_offset }),
        ),
        // The broker's reason counts messages in a batch; the form sends one.
        Err(e) if e.broker_code() == Some(ErrorCode::MessageTooLarge) => Reply::error(
            409,
            &format!("the key and value are {size} bytes, more than the broker takes in a message"),
        ),
        Err(e) => Reply::failed(&e),
    }
}

/// The body of `POST /api/topics`.
#[derive(Debug, Deserialize)]
struct CreateForm {
    /// The new topic's name.
    name: String,
    /// Keep about this many of its newest messages (else the broker's limit).
    #[serde(default)]
    retention_messages: Option<u64>,
    /// Keep about this many bytes of its newest keys and values.
    #[serde(default)]
    retention_bytes: Option<u64>,
    /// Keep its messages this long, as people write it (`7d`, `12h`).
    #[serde(default)]
    retention_time: Option<String>,
    /// How many partitions (the broker's `--partitions` unless given).
    #[serde(default)]
    partitions: Option<u32>,
}

/// `POST /api/topics` with `{"name", "partitions"?, "retention_messages"?, "retention_bytes"?,
/// "retention_time"?}`: creates a topic of that many partitions, with the broker's count of
/// partitions and retention where none is given.
pub fn create_topic(session: &Session, body: &[u8]) -> Reply {
    let form: CreateForm = match serde_json::from_slice(body) {
        Ok(form) => form,
        Err(e) => return Reply::error(400, &format!("not a topic form: {e}")),
    };
    let ms = match form.retention_time.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(text) => match humantime::parse_duration(text) {
            Ok(time) => Some(u64::try_from(time.as_millis()).unwrap_or(u64::MAX)),
            Err(e) => {
                return Reply::error(
                    400,
                    &format!("keep for {text:?}: {e}; write it as 30s, 12h or 7d"),
                )
            }
        },
    };
    let retention =
        Retention { messages: form.retention_messages, bytes: form.retention_bytes, ms };
    if form.partitions.is_some_and(|n| !(1..=protocol::MAX_PARTITIONS).contains(&n)) {
        return Reply::error(
            400,
            &format!("a topic has from 1 to {} partitions", protocol::MAX_PARTITIONS),
        );
    }
    let result =
        session.pool.with(|client| client.create_topic(&form.name, form.partitions, retention));
    match result {
        Ok(partitions) => Reply::json(&json!({ "created": form.name, "partitions": partitions })),
        Err(e) => Reply::failed(&e),
    }
}

/// `DELETE /api/topics?name=T`: deletes a topic and its messages.
pub fn delete_topic(session: &Session, query: &Query) -> Reply {
    let Some(name) = query.get("name") else {
        return Reply::error(400, "which topic? (name=...)");
    };
    let request = Request::DeleteTopic { topic: name };
    let result = session.pool.with(|client| {
        client.call(&request, |response| match response {
            Response::Deleted { .. } => Ok(()),
            other => {
                Err(ClientError::UnexpectedReply { request: request.op(), reply: other.name() })
            }
        })
    });
    match result {
        Ok(()) => Reply::json(&json!({ "deleted": name })),
        Err(e) => Reply::failed(&e),
    }
}

/// `GET /api/session`: who the browser speaks to the broker as, and the claim it holds.
///
/// `{"who": str, "user": str | null, "held": {"broker", "lease_ms"} | null}`.
pub fn session(session: &Session, page: &str) -> Reply {
    Reply::json(&session_json(session, page))
}

/// The session as `/api/session` describes it to page `page`.
fn session_json(session: &Session, page: &str) -> Value {
    let held = session.held(page).map(|c| {
        json!({ "broker": c.broker, "lease_ms": u64::try_from(c.lease.as_millis()).unwrap_or(u64::MAX) })
    });
    json!({ "who": session.who(), "user": session.user(), "held": held })
}

/// The body of `POST /api/login`.
#[derive(Debug, Deserialize)]
struct LoginForm {
    /// The broker user.
    user: String,
    /// Its password.
    password: String,
}

/// `POST /api/login` with `{"user", "password"}`: from now on this browser speaks to the
/// broker as that user (PLAIN), in a new session, once the broker has accepted the login.
/// Failures slow down the address they come from ([`Throttle`]).
///
/// The session, or `{"error"}`: `401` when the broker refused the login, `429` when `source`
/// failed too often lately.
pub fn log_in(
    sessions: &Sessions,
    throttle: &Throttle,
    old: &Session,
    source: IpAddr,
    body: &[u8],
) -> Reply {
    let form: LoginForm = match serde_json::from_slice(body) {
        Ok(form) => form,
        Err(e) => return Reply::error(400, &format!("not a login form: {e}")),
    };
    if form.user.is_empty() {
        return Reply::error(400, "which user?");
    }
    // A broker that uses CURVE takes no PLAIN login: trying one would cost a connection and
    // count as a failure of this address.
    if sessions.uses_curve() {
        return Reply::error(
            400,
            "this console reaches the broker by CURVE with a key pair of its own              (--curve-server-key): the broker then takes no passwords, and every browser acts              as the user of the console's key",
        );
    }
    if let Err(wait) = throttle.admit(source) {
        tracing::warn!(
            source = %source,
            user = %crate::output::escape(form.user.as_bytes()),
            "login throttled: too many failed logins from this address"
        );
        return Reply::error(
            429,
            &format!(
                "too many failed logins from your address; try again in {} ms",
                wait.as_millis().max(1)
            ),
        );
    }
    // Said on the `audit` target with the browser's address: the broker checks the login in
    // its handshake, before any request could say whom the console speaks for. The name as
    // the browser gave it, cut short and escaped.
    let user = crate::output::escape(protocol::limits::cut(&form.user).as_bytes()).into_owned();
    let credentials = Credentials::Plain { user: form.user, password: form.password };
    // A connection of its own, so that the check proves these credentials and no other.
    let trial = super::pool::Pool::new(sessions.target().apart(), credentials.clone());
    if let Err(e) = trial.with(|client| client.status().map(drop)) {
        tracing::warn!(target: "audit", %user, %source, "login refused: {e}");
        // Any failure counts: a broker that spaces a login's failed checks of its own lets
        // the trial time out rather than refuse it.
        throttle.failed(source);
        return match e {
            ClientError::AuthenticationFailed { .. } => Reply::error(
                401,
                &format!("the broker refused the login: {e} (wrong user name or password)"),
            ),
            e => Reply::failed(&e),
        };
    }
    tracing::info!(target: "audit", %user, %source, "login accepted");
    throttle.succeeded(source);
    match sessions.replace(old, Some(credentials), source) {
        Some(session) => {
            let mut reply = Reply::json(&session_json(&session, ""));
            reply.set_cookie = Some(session.cookie());
            reply
        }
        None => Reply::error(503, "the console has too many sessions; try again"),
    }
}

/// `POST /api/logout`: this browser goes back to the console's own login, in a new session.
pub fn log_out(sessions: &Sessions, old: &Session, source: IpAddr) -> Reply {
    match sessions.replace(old, None, source) {
        Some(session) => {
            let mut reply = Reply::json(&session_json(&session, ""));
            reply.set_cookie = Some(session.cookie());
            reply
        }
        None => Reply::error(503, "the console has too many sessions; try again"),
    }
}

/// The body of `POST /api/consume/claim`.
#[derive(Debug, Default, Deserialize)]
struct ClaimForm {
    /// The logical broker wanted; any free one when absent.
    #[serde(default)]
    broker: Option<u32>,
}

/// `POST /api/consume/claim` with `{"broker"?}`: this browser claims a logical broker, which
/// is busy for everyone else until released, the page closes, or the lease runs out.
pub fn claim(session: &Session, page: &str, body: &[u8]) -> Reply {
    if page.is_empty() {
        return Reply::error(400, "which page? (X-Console-Page)");
    }
    let form: ClaimForm = if body.is_empty() {
        ClaimForm::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(form) => form,
            Err(e) => return Reply::error(400, &format!("not a claim form: {e}")),
        }
    };
    if let Err(e) = session.release_held(Some(page)) {
        tracing::debug!("cannot give back the claim held before: {e}");
    }
    let claimed = session
        .pool
        .with(|client| client.claim(form.broker, std::time::Duration::ZERO, Some(CLAIMANT)));
    match claimed {
        Ok(claimed) => {
            // Another page of this browser held one: this one takes its place.
            if let Some(before) = session.hold(claimed, page) {
                if let Err(e) = session.give_back(before) {
                    tracing::debug!("cannot give back another page's claim: {e}");
                }
            }
            Reply::json(&session_json(session, page))
        }
        Err(e) => Reply::failed(&e),
    }
}

/// `POST /api/consume/renew`: starts the held claim's lease again; the page calls it while it
/// is open, so that a closed page's claim runs out by itself.
pub fn renew(session: &Session, page: &str) -> Reply {
    let Some(claimed) = session.held(page) else {
        return Reply::error(409, "no logical broker is held (another page may have claimed one)");
    };
    match session.pool.with(|client| client.renew(claimed.token)) {
        Ok(_) => Reply::json(&session_json(session, page)),
        Err(e) => {
            if e.broker_code() == Some(ErrorCode::UnknownClaim) {
                session.forget(page);
                return Reply::error(409, "the claim has ended: its lease ran out");
            }
            Reply::failed(&e)
        }
    }
}

/// `POST /api/consume/release`: gives back the logical broker held, if any.
pub fn release(session: &Session, page: &str) -> Reply {
    match session.release_held(Some(page)) {
        Ok(broker) => Reply::json(&json!({ "released": broker })),
        // Its lease ran out already: nothing is held either way.
        Err(e) if e.broker_code() == Some(ErrorCode::UnknownClaim) => {
            Reply::json(&json!({ "released": null }))
        }
        Err(e) => Reply::failed(&e),
    }
}

/// `GET /api/consume/topics`: the topics, read under the held claim.
pub fn held_topics(session: &Session, page: &str) -> Reply {
    let Some(claimed) = session.held(page) else {
        return Reply::error(409, "claim a logical broker first");
    };
    match session.pool.with(|client| client.list_topics(claimed.token)) {
        Ok(topics) => Reply::json(&json!({ "topics": topics })),
        Err(e) => Reply::failed(&e),
    }
}
