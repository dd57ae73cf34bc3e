//! The REST API, as Kafka Connect's: list, add, pause, resume, restart and remove connectors,
//! and see their config, status and offsets. Requests are answered one at a time, each body at
//! most [`MAX_CONFIG_BYTES`](crate::config::MAX_CONFIG_BYTES).

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use client::Shutdown;
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::config::{ConnectorConfig, MAX_CONFIG_BYTES};
use crate::worker::{Worker, WorkerError};

/// Serves `server` for `worker` until `shutdown`.
pub fn serve(server: &Server, worker: &Worker, shutdown: &Shutdown) {
    while !shutdown.is_signalled() {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => answer(request, worker),
            Ok(None) => {}
            Err(e) => {
                eprintln!("REST API: {e}");
                shutdown.pause(Duration::from_millis(200));
            }
        }
    }
}

/// Answers one request.
fn answer(mut request: Request, worker: &Worker) {
    let path = request.url().split('?').next().unwrap_or("").trim_end_matches('/').to_owned();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let method = request.method().clone();
    let (code, body) = match (&method, parts.as_slice()) {
        (Method::Get, []) => (
            200,
            json!({"version": env!("CARGO_PKG_VERSION"), "commit": "", "kafka_cluster_id": ""}),
        ),
        (Method::Get, ["connectors"]) => (200, json!(worker.names())),
        (Method::Post, ["connectors"]) => match read_body(&mut request) {
            Ok(body) => create(worker, &body),
            Err(e) => (e.0, error(e.0, &e.1)),
        },
        (Method::Get, ["connectors", name]) => result(worker.info(&decode(name))),
        (Method::Get, ["connectors", name, "config"]) => {
            result(worker.info(&decode(name)).map(|info| info["config"].clone()))
        }
        (Method::Get, ["connectors", name, "status"]) => result(worker.status(&decode(name))),
        (Method::Get, ["connectors", name, "offsets"]) => match worker.offsets(&decode(name)) {
            Ok(v) => (200, v),
            Err(e) => match e.downcast_ref::<WorkerError>() {
                Some(WorkerError::NotFound(_)) => (404, error(404, &e.to_string())),
                _ => (500, error(500, &format!("{e:#}"))),
            },
        },
        (Method::Put, ["connectors", name, "pause"]) => {
            accepted(worker.set_paused(&decode(name), true))
        }
        (Method::Put, ["connectors", name, "resume"]) => {
            accepted(worker.set_paused(&decode(name), false))
        }
        (Method::Post, ["connectors", name, "restart"]) => accepted(worker.restart(&decode(name))),
        (Method::Delete, ["connectors", name]) => match worker.remove(&decode(name)) {
            Ok(()) => (204, Value::Null),
            Err(e) => failure(e),
        },
        (_, ["connectors", ..]) | (_, []) => (405, error(405, "method not allowed")),
        _ => (404, error(404, "no such resource")),
    };
    let text = if body.is_null() { String::new() } else { body.to_string() };
    let mut response = Response::from_string(text).with_status_code(code);
    if let Ok(header) = Header::from_bytes("Content-Type", "application/json") {
        response = response.with_header(header);
    }
    let _ = request.respond(response);
}

/// `POST /connectors`: `{"name": ..., "config": {...}}` (or a flat config).
fn create(worker: &Worker, body: &str) -> (u16, Value) {
    let config = match ConnectorConfig::from_json(body, "the request") {
        Ok(config) => config,
        Err(e) => return (400, error(400, &e.to_string())),
    };
    let name = config.name.clone();
    match worker.add(config) {
        Ok(()) => match worker.info(&name) {
            Ok(v) => (201, v),
            Err(e) => failure(e),
        },
        Err(e) => failure(e),
    }
}

/// A body read whole, within the limit.
fn read_body(request: &mut Request) -> Result<String, (u16, String)> {
    if request.body_length().is_some_and(|n| n as u64 > MAX_CONFIG_BYTES) {
        return Err((413, format!("a body may have at most {MAX_CONFIG_BYTES} bytes")));
    }
    let mut body = Vec::new();
    let read = request.as_reader().take(MAX_CONFIG_BYTES + 1).read_to_end(&mut body);
    if let Err(e) = read {
        return Err((400, format!("cannot read the body: {e}")));
    }
    if body.len() as u64 > MAX_CONFIG_BYTES {
        return Err((413, format!("a body may have at most {MAX_CONFIG_BYTES} bytes")));
    }
    String::from_utf8(body).map_err(|_| (400, "the body is not UTF-8".to_owned()))
}

/// A percent-decoded path segment.
fn decode(segment: &str) -> String {
    form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The reply for a worker's answer.
fn result(r: Result<Value, WorkerError>) -> (u16, Value) {
    match r {
        Ok(v) => (200, v),
        Err(e) => failure(e),
    }
}

/// `202 Accepted` for pause, resume and restart, as Kafka Connect answers them.
fn accepted(r: Result<(), WorkerError>) -> (u16, Value) {
    match r {
        Ok(()) => (202, Value::Null),
        Err(e) => failure(e),
    }
}

/// The reply for a refusal.
fn failure(e: WorkerError) -> (u16, Value) {
    let code = match e {
        WorkerError::NotFound(_) => 404,
        WorkerError::Exists(_) => 409,
        WorkerError::Config(_) => 400,
    };
    (code, error(code, &e.to_string()))
}

/// Kafka Connect's error body.
fn error(code: u16, message: &str) -> Value {
    let mut v = BTreeMap::new();
    v.insert("error_code", json!(code));
    v.insert("message", json!(message));
    json!(v)
}
