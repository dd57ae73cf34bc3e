//! Helpers for the broker's wire-level tests: start the real `broker` binary, send requests on
//! raw REQ and DEALER sockets, decode the replies and check them as a client would.
//!
//! Every reply is checked against the rules every frame follows (`v` 1, `code` 200 on success,
//! `code` and `error` agreeing on an error) before a test looks at its fields.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use protocol::{
    BrokerStatus, ErrorCode, Fetch, Message, NewMessage, Request, Response, TopicInfo,
    DEFAULT_FETCH_BYTES, DEFAULT_FETCH_MESSAGES,
};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

use testkit::BrokerProcess;

/// The sample topics of `broker --preload`, ordered by name, with the word their values use.
pub const SAMPLES: [(&str, &str); 4] = [
    ("Ciao mondo", "messaggio"),
    ("Hallo welt", "botschaft"),
    ("Hello world", "message"),
    ("Hola mundo", "mensaje"),
];

/// How many messages each sample topic starts with.
pub const SAMPLE_MESSAGES: u64 = 3;

/// How long a test watches a socket to show that no reply came.
pub const QUIET: Duration = Duration::from_millis(200);

/// Starts the real broker binary with `args` on an ephemeral loopback port.
pub fn start(args: &[&str]) -> BrokerProcess {
    BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_broker")), args)
}

/// Starts a broker holding the sample topics.
pub fn start_preloaded() -> BrokerProcess {
    start(&["--preload"])
}

/// A DEALER socket connected to `endpoint`, with the same timeouts as the REQ sockets.
pub fn dealer(context: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let socket = context.socket(zmq::DEALER).expect("DEALER socket");
    socket.set_linger(0).expect("linger");
    socket.set_rcvtimeo(testkit::STEP.as_millis() as i32).expect("rcvtimeo");
    socket.set_sndtimeo(testkit::STEP.as_millis() as i32).expect("sndtimeo");
    socket.connect(endpoint).expect("connect");
    socket
}

/// The encoding of `request`.
pub fn encode(request: &Request<'_>) -> Vec<u8> {
    let mut frame = Vec::new();
    protocol::encode_request(request, &mut frame);
    frame
}

/// Sends `request` on a REQ socket without waiting for the reply.
pub fn send(socket: &zmq::Socket, request: &Request<'_>) {
    socket.send(encode(request), 0).expect("send");
}

/// Receives one reply on a REQ socket and decodes it.
pub fn receive(socket: &zmq::Socket) -> Response<'static> {
    decode(socket.recv_bytes(0).expect("a reply within the step limit"))
}

/// Sends `request` on a REQ socket and decodes the reply.
pub fn ask(socket: &zmq::Socket, request: &Request<'_>) -> Response<'static> {
    decode(testkit::round_trip(socket, request))
}

/// Sends the raw `frame` on a REQ socket and decodes the reply.
pub fn ask_raw(socket: &zmq::Socket, frame: &[u8]) -> Response<'static> {
    decode(testkit::round_trip_raw(socket, frame))
}

/// The fields every reply carries, read without the protocol crate's decoder.
#[derive(Debug, Deserialize)]
struct Header {
    /// The protocol version.
    v: u32,
    /// 200, or the error's code.
    code: u16,
    /// The reply's name.
    reply: String,
    /// The error's name, on an error reply.
    #[serde(default)]
    error: Option<String>,
}

/// Decodes a reply frame after checking the fields every reply carries.
///
/// The frame is leaked so that the reply, which borrows from it, can outlive the call; a test
/// decodes a few hundred bytes at most.
pub fn decode(frame: Vec<u8>) -> Response<'static> {
    let header: Header = rmp_serde::from_slice(&frame)
        .unwrap_or_else(|e| panic!("reply is not a map with v, code and reply ({e}): {frame:?}"));
    assert_eq!(header.v, protocol::VERSION, "reply version: {header:?}");
    let frame: &'static [u8] = Box::leak(frame.into_boxed_slice());
    let response = protocol::decode_response(frame)
        .unwrap_or_else(|e| panic!("undecodable reply ({e}): {header:?}"));
    match &response {
        Response::Error { code, .. } => {
            assert_eq!(header.code, code.code(), "code of {response:?}");
            assert_eq!(header.error.as_deref(), Some(code.name()), "error name of {response:?}");
        }
        _ => {
            assert_eq!(header.code, 200, "code of a success reply: {response:?}");
            assert_eq!(header.reply, response.name());
        }
    }
    response
}

/// Panics unless `response` is an error with `code`; returns its offset range.
#[track_caller]
pub fn expect_error(response: &Response<'_>, code: ErrorCode) -> Option<(u64, u64)> {
    match response {
        Response::Error { code: got, reason, range, .. } if *got == code => {
            assert!(!reason.is_empty(), "an error reply without a reason: {response:?}");
            *range
        }
        other => panic!("expected {} {}, got {other:?}", code.code(), code.name()),
    }
}

/// Claims logical broker `broker` (any when `None`) as `client`; returns its id and the token.
#[track_caller]
pub fn claim(socket: &zmq::Socket, broker: Option<u32>, client: &str) -> (u32, u64) {
    match ask(socket, &Request::Claim { broker, wait_ms: 0, client: Some(client) }) {
        Response::Claimed { broker, claim, .. } => (broker, claim),
        other => panic!("claim {broker:?} for {client}: expected claimed, got {other:?}"),
    }
}

/// Releases claim `token`; returns the freed logical broker.
#[track_caller]
pub fn release(socket: &zmq::Socket, token: u64) -> u32 {
    match ask(socket, &Request::Release { claim: token }) {
        Response::Released { broker } => broker,
        other => panic!("release: expected released, got {other:?}"),
    }
}

/// Every logical broker as `status` shows it.
#[track_caller]
pub fn status(socket: &zmq::Socket) -> Vec<BrokerStatus> {
    match ask(socket, &Request::Status) {
        Response::Status { brokers } => brokers,
        other => panic!("status: expected status, got {other:?}"),
    }
}

/// Every topic, listed under claim `token`.
#[track_caller]
pub fn topics(socket: &zmq::Socket, token: u64) -> Vec<TopicInfo> {
    match ask(socket, &Request::ListTopics { claim: Some(token) }) {
        Response::Topics { topics } => topics,
        other => panic!("list_topics: expected topics, got {other:?}"),
    }
}

/// A fetch of `topic` from `offset` under `claim` with the default limits and no wait.
pub fn fetch_from(claim: u64, topic: &str, offset: u64) -> Fetch<'_> {
    Fetch {
        claim,
        topic,
        partition: 0,
        offset,
        max_messages: DEFAULT_FETCH_MESSAGES,
        max_bytes: DEFAULT_FETCH_BYTES,
        wait_ms: 0,
        batches: false,
    }
}

/// What a `messages` reply holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The messages.
    pub messages: Vec<Message<'static>>,
    /// The reply's `next_offset`.
    pub next_offset: u64,
    /// The reply's `end_offset`.
    pub end_offset: u64,
}

impl Fetched {
    /// The values as text.
    pub fn values(&self) -> Vec<String> {
        self.messages.iter().map(|m| String::from_utf8_lossy(m.value).into_owned()).collect()
    }

    /// The offsets.
    pub fn offsets(&self) -> Vec<u64> {
        self.messages.iter().map(|m| m.offset).collect()
    }
}

/// Panics unless `response` is a `messages` reply for `topic`; returns what it holds.
#[track_caller]
pub fn expect_messages(response: Response<'static>, topic: &str) -> Fetched {
    match response {
        Response::Messages { topic: got, messages, next_offset, end_offset, .. }
            if got == topic =>
        {
            Fetched { messages, next_offset, end_offset }
        }
        other => panic!("expected messages of {topic:?}, got {other:?}"),
    }
}

/// Fetches as `fetch` says and expects messages.
#[track_caller]
pub fn fetch(socket: &zmq::Socket, fetch: Fetch<'_>) -> Fetched {
    let topic = fetch.topic;
    expect_messages(ask(socket, &Request::Fetch(fetch)), topic)
}

/// An append of `values`, without keys.
pub fn append_of<'a>(topic: &'a str, values: &[&'a str]) -> Request<'a> {
    let messages = values.iter().map(|v| NewMessage::new(None, v.as_bytes())).collect();
    Request::Append(protocol::Append { topic, messages, partition: None, sequenced: None })
}

/// Appends `values` to `topic`; returns the first and last offsets given.
#[track_caller]
pub fn append(socket: &zmq::Socket, topic: &str, values: &[&str]) -> (u64, u64) {
    match ask(socket, &append_of(topic, values)) {
        Response::Appended { topic: got, first_offset, last_offset, .. } if got == topic => {
            (first_offset, last_offset)
        }
        other => panic!("append to {topic:?}: expected appended, got {other:?}"),
    }
}

/// Sends `request` on a DEALER socket behind the routing frame `tag`, as a proxy would, so that
/// several requests can be outstanding on one connection and their replies told apart.
pub fn send_tagged(socket: &zmq::Socket, tag: &str, request: &Request<'_>) {
    let frames = [tag.as_bytes().to_vec(), Vec::new(), encode(request)];
    socket.send_multipart(frames, 0).expect("send");
}

/// Receives one reply to [`send_tagged`] on a DEALER socket; returns its tag and the reply.
pub fn receive_tagged(socket: &zmq::Socket) -> (String, Response<'static>) {
    let frames = socket.recv_multipart(0).expect("a reply within the step limit");
    let [tag, delimiter, body] = <[Vec<u8>; 3]>::try_from(frames)
        .unwrap_or_else(|frames| panic!("expected [tag, empty, reply], got {frames:?}"));
    assert!(delimiter.is_empty(), "no delimiter after the tag: {delimiter:?}");
    (String::from_utf8(tag).expect("tag"), decode(body))
}

/// Panics if a message arrives on `socket` within `within`.
#[track_caller]
pub fn assert_silent(socket: &zmq::Socket, within: Duration, what: &str) {
    let ready = socket.poll(zmq::POLLIN, within.as_millis() as i64).expect("poll");
    if ready > 0 {
        let frames = socket.recv_multipart(0).expect("recv");
        panic!("{what}: expected no reply yet, got {frames:?}");
    }
}

/// The time now in milliseconds since the Unix epoch, by the clock the broker stamps messages
/// with.
#[allow(unused_imports)] // Not every test file reads the clock.
pub use broker::clock::epoch_ms as now_ms;

/// One logical broker's state as `status` shows it, without the lease time that runs down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerState {
    /// Its id.
    pub id: u32,
    /// Whether it is free.
    pub available: bool,
    /// Who holds it.
    pub holder: Option<String>,
    /// Topics, messages and bytes it serves.
    pub totals: (u64, u64, u64),
}

/// What `status` shows, less the lease times: equal before and after a refused request.
#[track_caller]
pub fn broker_states(socket: &zmq::Socket) -> Vec<BrokerState> {
    status(socket)
        .into_iter()
        .map(|b| BrokerState {
            id: b.id,
            available: b.available,
            holder: b.holder,
            totals: (b.topics, b.messages, b.bytes),
        })
        .collect()
}

/// A MessagePack value built by hand, for frames the protocol crate would never encode.
#[derive(Debug, Clone)]
pub enum Value {
    /// `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A byte string.
    Bin(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map with string keys, in this order (duplicates allowed).
    Map(Vec<(String, Value)>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::UInt(n)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(n) => serializer.serialize_i64(*n),
            Value::UInt(n) => serializer.serialize_u64(*n),
            Value::Float(x) => serializer.serialize_f64(*x),
            Value::Str(s) => serializer.serialize_str(s),
            Value::Bin(b) => serializer.serialize_bytes(b),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

/// The MessagePack encoding of a map of `entries`, in order.
pub fn map(entries: &[(&str, Value)]) -> Vec<u8> {
    let entries = entries.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    rmp_serde::to_vec(&Value::Map(entries)).expect("encoding to memory")
}
