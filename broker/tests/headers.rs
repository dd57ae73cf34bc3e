//! Record headers against the real broker binary on a data directory: a directory written by
//! the broker before messages had headers (`fixtures/before-headers/`, segment format 2, see its
//! `make-before-headers.py`) opens with every message, takes appends with headers after them,
//! and serves both across a restart.

mod wire;

use std::path::Path;

use protocol::{Append, Header, NewMessage, Request, Response};
use testkit::BrokerProcess;
use wire::{ask, claim, fetch_from, start};

/// Copies the directory tree `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A broker on the data directory `dir`.
fn start_on(dir: &Path) -> BrokerProcess {
    start(&["--data-dir", dir.to_str().expect("a UTF-8 path")])
}

/// Every message of `events`: offset, key, value and headers as text.
type Read = Vec<(u64, Option<String>, String, Vec<(String, Option<String>)>)>;

fn read(socket: &zmq::Socket, claim: u64) -> Read {
    match ask(socket, &Request::Fetch(fetch_from(claim, "events", 0))) {
        Response::Messages { messages, .. } => {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            messages
                .iter()
                .map(|m| {
                    let headers =
                        m.headers.iter().map(|h| (h.key.to_owned(), h.value.map(text))).collect();
                    (m.offset, m.key.map(text), text(m.value), headers)
                })
                .collect()
        }
        other => panic!("fetch of events: {other:?}"),
    }
}

#[test]
fn a_data_directory_written_before_headers_opens_and_takes_messages_with_headers() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-headers");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture, dir.path());
    let broker = start_on(dir.path());
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "headers");
    let user = |n: &str| Some(format!("user-{n}"));
    let before: Read = vec![
        (0, user("1"), "signed up".into(), vec![]),
        (1, None, "a keyless event".into(), vec![]),
        (2, user("2"), "signed up".into(), vec![]),
        (3, user("1"), "logged in".into(), vec![]),
        (4, None, "the last event before headers".into(), vec![]),
    ];
    assert_eq!(read(&socket, token), before);

    let headers =
        vec![Header { key: "trace", value: Some(b"t-1") }, Header { key: "trace", value: None }];
    let messages = vec![
        NewMessage { key: Some(b"user-3"), value: b"with headers", headers },
        NewMessage::new(None, b"without"),
    ];
    let append =
        Request::Append(Append { topic: "events", partition: None, messages, sequenced: None });
    assert!(matches!(ask(&socket, &append), Response::Appended { first_offset: 5, .. }));
    let mut after = before.clone();
    let traced = vec![("trace".to_owned(), Some("t-1".to_owned())), ("trace".to_owned(), None)];
    after.push((5, user("3"), "with headers".into(), traced));
    after.push((6, None, "without".into(), vec![]));
    assert_eq!(read(&socket, token), after);
    drop(socket);
    broker.interrupt();

    let broker = start_on(dir.path());
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "headers");
    assert_eq!(read(&socket, token), after);
    broker.interrupt();
}
