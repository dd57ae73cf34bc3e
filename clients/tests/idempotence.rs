//! The idempotent `producer` against a real broker whose reply is lost on the way: a stand-in
//! endpoint between them forwards every request to the broker and every reply back, but drops
//! the reply to the first append, as a network that lost it would. The producer (lockstep and
//! pipelined) sends that append again with its producer id and sequence on a new connection,
//! the broker answers the copy with the offsets the first sending got, and every line is
//! reported appended and held once, in order. So it is when the broker is paused (SIGSTOP)
//! past half the producer's timeout and let go on (SIGCONT) once the copy is on its way: it
//! then reads both the first sending, left on the old connection, and the copy.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use common::{broker_binary, consumer, run_with, Running, PRODUCER};
use protocol::{decode_request, decode_response, Request, Response, Sequenced};
use testkit::BrokerProcess;

/// The stand-in endpoint: where it listens, and its thread, which gives the marks of the
/// appends it forwarded once stopped.
struct LossyProxy {
    /// Its ROUTER's endpoint, for the producer's `--connect`.
    endpoint: String,
    /// Tells its thread to end.
    stop: Arc<AtomicBool>,
    /// The thread forwarding requests and replies.
    thread: JoinHandle<Vec<Option<Sequenced>>>,
}

impl LossyProxy {
    /// Starts one in front of the broker at `broker`.
    fn start(broker: &str) -> LossyProxy {
        let context = zmq::Context::new();
        let front = context.socket(zmq::ROUTER).expect("ROUTER socket");
        front.set_linger(0).expect("linger");
        front.bind("tcp://127.0.0.1:*").expect("bind");
        let endpoint = front.get_last_endpoint().expect("endpoint").expect("utf-8 endpoint");
        let back = context.socket(zmq::DEALER).expect("DEALER socket");
        back.set_linger(0).expect("linger");
        back.connect(broker).expect("connect");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let _context = context;
            let mut marks = Vec::new();
            // The peers that send `[body]` alone (DEALERs): the broker needs the delimiter
            // behind the proxy's own envelope, and they must get their replies without it.
            let mut bare: HashSet<Vec<u8>> = HashSet::new();
            let mut dropped = false;
            while !stopping.load(Ordering::Relaxed) {
                let mut items = [front.as_poll_item(zmq::POLLIN), back.as_poll_item(zmq::POLLIN)];
                zmq::poll(&mut items, 50).expect("poll");
                if items[0].is_readable() {
                    let frames = front.recv_multipart(0).expect("a request");
                    let (identity, body) = (&frames[0], &frames[frames.len() - 1]);
                    if frames.len() == 2 {
                        bare.insert(identity.clone());
                    }
                    if let Ok(Request::Append(append)) = decode_request(body) {
                        marks.push(append.sequenced);
                    }
                    let envelope: [&[u8]; 3] = [identity, &[], body];
                    back.send_multipart(envelope, 0).expect("forward");
                }
                if items[1].is_readable() {
                    let frames = back.recv_multipart(0).expect("a reply");
                    let (identity, reply) = (&frames[0], &frames[frames.len() - 1]);
                    if !dropped && matches!(decode_response(reply), Ok(Response::Appended { .. })) {
                        dropped = true;
                        continue;
                    }
                    // A peer gone (a socket closed after its timeout) is silently skipped.
                    let _ = if bare.contains(identity) {
                        front.send_multipart([identity, reply], 0)
                    } else {
                        let envelope: [&[u8]; 3] = [identity, &[], reply];
                        front.send_multipart(envelope, 0)
                    };
                }
            }
            marks
        });
        LossyProxy { endpoint, stop, thread }
    }

    /// Stops it and gives the marks of the appends it forwarded, in the order they came.
    fn stop(self) -> Vec<Option<Sequenced>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the proxy's thread")
    }
}

/// The values `topic` holds on `broker`, in offset order.
fn values(broker: &BrokerProcess, topic: &str) -> Vec<String> {
    let read = consumer(broker, &["fetch", topic, "--max", "10000"]);
    let lines = read.assert_success().lines();
    lines.iter().map(|line| line.split_once('\t').map_or(*line, |(_, v)| v).to_owned()).collect()
}

#[test]
fn a_lost_reply_is_answered_by_the_copy_with_the_first_offsets_and_every_line_is_held_once() {
    let broker = BrokerProcess::start(&broker_binary(), &[]);
    let lines: Vec<String> = (1..=500).map(|n| format!("line {n}")).collect();
    let input = format!("{}\n", lines.join("\n"));
    let pipelined = ["--max-in-flight", "4", "--linger", "1", "--batch", "50"];
    for (topic, extra) in [("lockstep", &[][..]), ("piped", &pipelined[..])] {
        let proxy = LossyProxy::start(&broker.endpoint);
        let connect = ["--connect", proxy.endpoint.as_str(), "--timeout", "3s"];
        let args = [&connect[..], extra, &[topic]].concat();
        let out = run_with(PRODUCER, &args, input.as_bytes(), &[]);
        let marks = proxy.stop();
        out.assert_success();
        // Every line appended, at the offsets it holds: the copy got the first one's.
        let summary = format!("appended 500 messages to {topic} at offsets 0..499 in ");
        assert!(out.stdout.starts_with(&summary), "{topic}: {out:#?}");
        assert!(!out.stderr.contains("not confirmed"), "{topic}: {}", out.stderr);
        // Each append went with a mark; the one whose reply was lost went twice, the same.
        let marks: Vec<Sequenced> = marks.into_iter().map(|m| m.expect("a mark")).collect();
        let once: HashSet<Sequenced> = marks.iter().copied().collect();
        assert!(marks.len() > once.len(), "{topic}: no copy sent: {marks:?}");
        assert_eq!(marks[0].sequence, 0, "{topic}: {marks:?}");
        assert!(marks.iter().skip(1).any(|m| *m == marks[0]), "{topic}: {marks:?}");
        // And the topic holds each line once, in order.
        assert_eq!(values(&broker, topic), lines, "{topic}");
    }
    broker.interrupt();
}

#[test]
fn a_broker_paused_past_half_the_timeout_gets_a_copy_and_holds_every_line_once() {
    let broker = BrokerProcess::start(&broker_binary(), &[]);
    let lines: Vec<String> = (1..=100).map(|n| format!("line {n}")).collect();
    let (before, after) = lines.split_at(50);
    let pipelined = ["--max-in-flight", "4", "--linger", "1", "--batch", "10"];
    for (topic, extra) in [("lockstep", &[][..]), ("piped", &pipelined[..])] {
        let connect = ["--connect", broker.endpoint.as_str(), "--timeout", "6s"];
        let args = [&connect[..], extra, &[topic]].concat();
        let mut producer = Running::start(PRODUCER, &args, &[("RUST_LOG", "client=debug")]);
        // Appended on a connection made while the broker runs.
        producer.write_stdin(format!("{}\n", before.join("\n")).as_bytes());
        producer.wait_stderr("appended");
        // The rest reaches the paused broker's connection, unread; half the timeout without a
        // reply, and the producer sends it again on a new socket. Let go on, the broker reads
        // the first sending from the old connection and the copy from the new one.
        broker.signal("STOP");
        producer.write_stdin(format!("{}\n", after.join("\n")).as_bytes());
        drop(producer.take_stdin());
        producer.wait_stderr("no reply in time;");
        broker.signal("CONT");
        let (status, stdout, stderr) = producer.wait_exit();
        assert_eq!(status.code(), Some(0), "{topic}: {stderr:#?}");
        let summary = format!("appended 100 messages to {topic} at offsets 0..99");
        assert!(stdout.first().is_some_and(|s| s.starts_with(&summary)), "{topic}: {stdout:?}");
        assert_eq!(values(&broker, topic), lines, "{topic}");
    }
    broker.interrupt();
}
