//! The floor `scripts/bench.sh --kafka` measures the Kafka door's produce path against: a
//! Kafka listener that acknowledges every Produce and stores nothing, so that a producer
//! sending to it costs only the producer, the framing and the loopback.
//!
//! `kafka-null-sink [HOST:PORT]` (default `127.0.0.1:0`, a free port) prints
//! `listening on HOST:PORT` and answers, one thread per connection, with the gateway's own
//! codec ([`kafka::frame::decode`], [`kafka::frame::write_response`]): `ApiVersions` as the
//! gateway answers it; `Metadata` with itself as the only broker and every topic asked for
//! existing with one partition (none listed when all are asked for); `InitProducerId` with a
//! fresh producer id; and `Produce` with each partition's base offset, growing by the record
//! counts of the batches' headers. Records are never read one by one, nor their CRCs checked:
//! the gateway's own work is what the ratio measures. Any other request closes the connection
//! with a line on standard error.

use std::collections::HashMap;
use std::io::{self, Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use bytes::Bytes;
use kafka::apis::{self, NODE_ID};
use kafka::frame::{self, Incoming};
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    BrokerId, InitProducerIdResponse, MetadataResponse, ProduceRequest, ProduceResponse,
    ProducerId, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

/// What every connection shares.
#[derive(Default)]
struct Sink {
    /// The host `Metadata` gives: the listening address's.
    host: String,
    /// The port `Metadata` gives.
    port: i32,
    /// The next offset of each partition produced to.
    offsets: Mutex<HashMap<(StrBytes, i32), i64>>,
    /// The next producer id `InitProducerId` gives.
    producer_ids: AtomicI64,
}

fn main() {
    // As the gateway does: a floor that faulted in each frame's pages anew would flatter it.
    kafka::reserve::keep_freed_memory();
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = match TcpListener::bind(&address) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {address}: {e}");
            std::process::exit(1);
        }
    };
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(e) => {
            eprintln!("cannot read the listening address: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {local}");
    let _ = std::io::stdout().flush();
    let sink = Arc::new(Sink {
        host: local.ip().to_string(),
        port: i32::from(local.port()),
        ..Sink::default()
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let sink = Arc::clone(&sink);
        thread::spawn(move || {
            if let Err(e) = serve(stream, &sink) {
                eprintln!("connection closed: {e}");
            }
        });
    }
}

/// The next frame's body from `stream`, read whole into a buffer of its size (the gateway's
/// [`frame::read_frame`] grows its buffer as the bytes come, so that a forged size reserves
/// nothing: a floor need not); `None` when the peer closed between frames.
fn read_frame(stream: &mut impl Read) -> Result<Option<Bytes>, String> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let size = usize::try_from(i32::from_be_bytes(size))
        .ok()
        .filter(|&size| size <= frame::MAX_FRAME_BYTES)
        .ok_or_else(|| format!("a frame of {} bytes", i32::from_be_bytes(size)))?;
    let mut body = vec![0; size];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(Some(Bytes::from(body)))
}

/// Answers one connection's requests in order until it closes.
fn serve(stream: TcpStream, sink: &Sink) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut conn = stream;
    while let Some(bytes) = read_frame(&mut conn)? {
        let request = match frame::decode(bytes).map_err(|e| e.to_string())? {
            Incoming::ApiVersionsTooNew(correlation_id) => {
                let api = kafka_protocol::messages::ApiKey::ApiVersions;
                let response = frame::api_versions_too_new();
                frame::write_response(&mut conn, api, 0, correlation_id, &response)
                    .map_err(|e| e.to_string())?;
                continue;
            }
            Incoming::Request(request) => request,
        };
        let response = match request.body {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(apis::api_versions()),
            RequestKind::Metadata(metadata) => {
                let mut response = MetadataResponse::default();
                let mut broker = MetadataResponseBroker::default();
                broker.node_id = BrokerId(NODE_ID);
                broker.host = StrBytes::from_string(sink.host.clone());
                broker.port = sink.port;
                response.brokers = vec![broker];
                if request.version >= 1 {
                    response.controller_id = BrokerId(NODE_ID);
                }
                response.topics = metadata
                    .topics
                    .iter()
                    .flatten()
                    .filter_map(|t| t.name.as_ref())
                    .map(|name| apis::topic_metadata(name.0.as_str().to_owned(), 0, 1))
                    .collect();
                ResponseKind::Metadata(response)
            }
            RequestKind::InitProducerId(_) => {
                let mut response = InitProducerIdResponse::default();
                response.producer_id =
                    ProducerId(sink.producer_ids.fetch_add(1, Ordering::Relaxed));
                ResponseKind::InitProducerId(response)
            }
            RequestKind::Produce(produce) => {
                let response = acknowledge(&produce, sink);
                if produce.acks == 0 {
                    continue;
                }
                ResponseKind::Produce(response)
            }
            _ => return Err(format!("{} is not answered here", apis::name(request.api))),
        };
        frame::write_response(
            &mut conn,
            request.api,
            request.version,
            request.correlation_id,
            &response,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Each partition of `produce` acknowledged at its next offset, which moves on by the records
/// its batches' headers count.
fn acknowledge(produce: &ProduceRequest, sink: &Sink) -> ProduceResponse {
    let mut offsets = sink.offsets.lock().unwrap_or_else(PoisonError::into_inner);
    let mut response = ProduceResponse::default();
    for topic in &produce.topic_data {
        let mut answer = TopicProduceResponse::default();
        answer.name = topic.name.clone();
        for partition in &topic.partition_data {
            let records = partition.records.as_deref().unwrap_or_default();
            let count = kafka::batch::producer(records).map_or(0, |(.., count)| count);
            let next = offsets.entry((topic.name.0.clone(), partition.index)).or_insert(0);
            let mut part = PartitionProduceResponse::default();
            part.index = partition.index;
            part.base_offset = *next;
            part.log_append_time_ms = -1;
            part.log_start_offset = 0;
            *next += i64::from(count.max(0));
            answer.partition_responses.push(part);
        }
        response.responses.push(answer);
    }
    response
}
