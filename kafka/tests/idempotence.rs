//! Idempotent producers: a retried batch is stored once, whether the retry comes from
//! librdkafka or is sent by hand.

mod common;

use std::net::TcpStream;
use std::process::Command;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    RequestKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use common::{ask, binary, run, script, success, Door};

/// A batch of `count` records from producer `id`, its first at `sequence`.
fn batch(id: i64, sequence: i32, count: usize) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i32::try_from(i).expect("small"),
            timestamp: 0,
            key: None,
            value: Some(Bytes::from(format!("v{}", sequence as usize + i))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("a batch");
    buf.freeze()
}

/// Produces `records` to partition 0 of `topic`: the base offset or the error code.
fn produce(stream: &mut TcpStream, topic: &str, records: Bytes) -> (i16, i64) {
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(records);
    let mut data = TopicProduceData::default();
    data.name = TopicName(StrBytes::from_string(topic.to_owned()));
    data.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![data];
    let mut reply = ask(stream, ApiKey::Produce, 7, RequestKind::Produce(request));
    let response = ProduceResponse::decode(&mut reply, 7).expect("a Produce v7 answer");
    let part = &response.responses[0].partition_responses[0];
    (part.error_code, part.base_offset)
}

#[test]
fn a_batch_sent_again_by_its_idempotent_producer_is_stored_once() {
    let door = Door::start(&[]);
    let mut stream = TcpStream::connect(door.bootstrap()).expect("connect");
    stream.set_read_timeout(Some(testkit::STEP)).expect("timeout");
    let mut reply = ask(
        &mut stream,
        ApiKey::InitProducerId,
        1,
        RequestKind::InitProducerId(InitProducerIdRequest::default()),
    );
    let init = InitProducerIdResponse::decode(&mut reply, 1).expect("an InitProducerId answer");
    assert_eq!(init.error_code, 0);
    let id = init.producer_id.0;
    assert!(id >= 0);

    assert_eq!(produce(&mut stream, "once", batch(id, 0, 3)), (0, 0));
    // The answer was lost and the producer sends the batch again: same offset, not stored.
    assert_eq!(produce(&mut stream, "once", batch(id, 0, 3)), (0, 0));
    assert_eq!(produce(&mut stream, "once", batch(id, 3, 2)), (0, 3));
    // A gap in the sequence is refused, and stores nothing.
    assert_eq!(produce(&mut stream, "once", batch(id, 9, 1)).0, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    // An id the gateway never gave.
    assert_eq!(produce(&mut stream, "once", batch(id + 7, 0, 1)).0, 59, "UNKNOWN_PRODUCER_ID");

    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &door.endpoint(), "fetch", "once"]);
    let out = success(&run(fetch, ""), "consumer fetch");
    assert_eq!(out, "0\tv0\n1\tv1\n2\tv2\n3\tv3\n4\tv4\n");
    drop(stream);
    door.stop();
}

#[test]
fn confluent_kafka_produces_with_idempotence_on() {
    let door = Door::start(&[]);
    let mut produce = Command::new("python3");
    produce.arg(script("kafka-confluent.py")).args(["produce", &door.bootstrap(), "idem", "300"]);
    produce.env("KAFKA_IDEMPOTENCE", "1");
    success(&run(produce, ""), "confluent produce with enable.idempotence");
    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &door.endpoint(), "fetch", "idem"]);
    let out = success(&run(fetch, ""), "consumer fetch");
    assert_eq!(out.lines().count(), 300);
    door.stop();
}
