//! The console's JSON endpoints: each turns one browser request into a few broker requests.
//!
//! Reading topics and messages needs a claim (PROTOCOL.md, "Claims"), so those endpoints claim
//! any free logical broker as `web console`, read, and release it at once: the console holds
//! no logical broker between page refreshes. When every one is claimed they say so.

use protocol::{ErrorCode, Fetch, Message, NewMessage, Request, Response, Retention};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::pool::Pool;
use super::Query;
use crate::{Client, ClientError, Result};

/// The name the console's claims carry, which `status` shows as their holder.
pub const CLAIMANT: &str = "web console";

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
}

impl Reply {
    /// A `200` reply carrying `value` as JSON.
    pub fn json(value: &Value) -> Reply {
        Reply::json_status(200, value)
    }

    /// A reply of `status` carrying `value` as JSON.
    pub fn json_status(status: u16, value: &Value) -> Reply {
        Reply { status, content_type: "application/json", body: value.to_string().into_bytes() }
    }

    /// A reply of `status` carrying `{"error": reason}`.
    pub fn error(status: u16, reason: &str) -> Reply {
        Reply::json_status(status, &json!({ "error": reason }))
    }

    /// The reply for a failed broker request: `502` when the broker did not answer, `409`
    /// when it refused (the reason is the broker's), in words either way.
    pub fn failed(error: &ClientError) -> Reply {
        let status = if error.broker_code().is_some() { 409 } else { 502 };
        Reply::error(status, &describe(error))
    }

    /// The reply as `tiny_http` sends it.
    pub fn into_response(self) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
        super::response(self.status, self.content_type, self.body)
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
        _ => format!("{error:#}"),
    }
}

/// Runs `work` under a claim of any free logical broker, released after.
///
/// # Errors
/// The claim is refused (`no_broker_available` when all are taken), or `work` fails.
pub fn with_claim<T>(
    client: &mut Client,
    work: impl FnOnce(&mut Client, u64) -> Result<T>,
) -> Result<T> {
    let claimed = client.claim(None, std::time::Duration::ZERO, Some(CLAIMANT))?;
    let result = work(client, claimed.token);
    if let Err(e) = client.release(claimed.token) {
        tracing::debug!("cannot release claim {}: {e}", claimed.token);
    }
    result
}

/// `GET /api/overview`: the logical brokers, the topics and the consumer groups, at once.
///
/// `{"up": bool, "error"?: str, "brokers": [...], "topics": [...] | null, "topics_error"?:
/// str, "groups": [...]}`; `up` is false when the broker did not answer.
pub fn overview(pool: &Pool) -> Reply {
    let result = pool.with(|client| {
        // Status first, so that the console's own brief claim is not in it.
        let brokers = client.status()?;
        let topics = with_claim(client, |client, token| client.list_topics(token));
        let groups = client.list_groups(None, None)?;
        Ok((brokers, topics, groups))
    });
    match result {
        Err(e) => Reply::json(&json!({ "up": false, "error": describe(&e) })),
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
}

impl Shown {
    /// `message` as the page shows it.
    pub fn from_message(message: &Message<'_>) -> Shown {
        let (key, key_hex) = match message.key {
            Some(key) => {
                let (text, hex) = text_or_hex(key);
                (Some(text), hex)
            }
            None => (None, false),
        };
        let (value, value_hex) = text_or_hex(message.value);
        Shown {
            offset: message.offset,
            timestamp: message.timestamp,
            key,
            key_hex,
            value,
            value_hex,
        }
    }
}

/// `bytes` as text when they are UTF-8, else as lowercase hex; and whether it is hex.
fn text_or_hex(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (bytes.iter().map(|b| format!("{b:02x}")).collect(), true),
    }
}

/// `GET /api/messages?topic=T&offset=N&limit=L`: one page of a topic's messages.
///
/// `{"messages": [...], "next_offset": n, "end_offset": n}`.
pub fn messages(pool: &Pool, query: &Query) -> Reply {
    let Some(topic) = query.get("topic") else {
        return Reply::error(400, "which topic? (topic=...)");
    };
    let offset = match query.get("offset").map(str::parse::<u64>).transpose() {
        Ok(offset) => offset.unwrap_or(0),
        Err(_) => return Reply::error(400, "the offset must be a whole number"),
    };
    let limit = match query.get("limit").map(str::parse::<u32>).transpose() {
        Ok(limit) => limit.unwrap_or(50).clamp(1, MAX_PAGE),
        Err(_) => return Reply::error(400, "the limit must be a whole number"),
    };
    let result = pool.with(|client| {
        with_claim(client, |client, token| {
            let fetch = Fetch {
                claim: token,
                topic,
                offset,
                max_messages: limit,
                max_bytes: PAGE_BYTES,
                wait_ms: 0,
            };
            client.fetch(fetch, |batch| {
                let shown: Vec<Shown> = batch.messages.iter().map(Shown::from_message).collect();
                Ok(json!({
                    "messages": shown,
                    "next_offset": batch.next_offset,
                    "end_offset": batch.end_offset,
                }))
            })
        })
    });
    match result {
        Ok(value) => Reply::json(&value),
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
}

/// `POST /api/produce` with `{"topic", "key"?, "value"}`: appends one message.
///
/// `{"offset": n}`, or `{"error": reason}` in words.
pub fn produce(pool: &Pool, body: &[u8]) -> Reply {
    let form: ProduceForm = match serde_json::from_slice(body) {
        Ok(form) => form,
        Err(e) => return Reply::error(400, &format!("not a produce form: {e}")),
    };
    let key = form.key.as_deref().filter(|k| !k.is_empty()).map(str::as_bytes);
    let message = NewMessage { key, value: form.value.as_bytes() };
    match pool.with(|client| client.append(&form.topic, vec![message])) {
        Ok(appended) => Reply::json(&json!({ "offset": appended.first_offset })),
        Err(e) => Reply::failed(&e),
    }
}

/// The body of `POST /api/topics`.
#[derive(Debug, Deserialize)]
struct CreateForm {
    /// The new topic's name.
    name: String,
}

/// `POST /api/topics` with `{"name"}`: creates a topic with the broker's retention.
pub fn create_topic(pool: &Pool, body: &[u8]) -> Reply {
    let form: CreateForm = match serde_json::from_slice(body) {
        Ok(form) => form,
        Err(e) => return Reply::error(400, &format!("not a topic form: {e}")),
    };
    let request = Request::CreateTopic { topic: &form.name, retention: Retention::default() };
    let result = pool.with(|client| {
        client.call(&request, |response| match response {
            Response::Created { .. } => Ok(()),
            other => {
                Err(ClientError::UnexpectedReply { request: request.op(), reply: other.name() })
            }
        })
    });
    match result {
        Ok(()) => Reply::json(&json!({ "created": form.name })),
        Err(e) => Reply::failed(&e),
    }
}

/// `DELETE /api/topics?name=T`: deletes a topic and its messages.
pub fn delete_topic(pool: &Pool, query: &Query) -> Reply {
    let Some(name) = query.get("name") else {
        return Reply::error(400, "which topic? (name=...)");
    };
    let request = Request::DeleteTopic { topic: name };
    let result = pool.with(|client| {
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
