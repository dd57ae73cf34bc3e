//! `web`: a console in the browser, a client of the broker like the producer and the consumer.
//!
//! One HTTP server ([`tiny_http`]) answers on a thread per request: the page and its assets
//! ([`assets`]), JSON endpoints that each make a few requests to the broker ([`api`]), and a
//! Server-Sent Events stream that follows a topic ([`follow`]). Every broker request goes
//! through [`crate::Client`] and the protocol; the console keeps no state of its own beyond a
//! pool of idle connections.

pub mod api;
pub mod assets;
pub mod follow;
pub mod pool;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::args::ConnectArgs;
use crate::Shutdown;
use pool::Pool;

/// The address `web` listens on unless told otherwise: loopback only, so that nobody else
/// reaches a console that speaks to the broker with its owner's rights.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The largest request body the console reads (a produce form's value and its key).
const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// How often the serve loop looks at the shutdown flag while no request comes.
const ACCEPT_SLICE: Duration = Duration::from_millis(100);

/// `web [--connect ENDPOINT] [--listen ADDR]`: serve the console page.
#[derive(Debug, Parser)]
#[command(name = "web", version, about = "A live web console for the broker")]
pub struct WebArgs {
    /// Where to listen for browsers, HOST:PORT (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Where the broker is, and how to log in to it.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Binds `args.listen`, prints `serving http://ADDR` and serves until `shutdown`.
///
/// # Errors
/// The address cannot be bound, or the broker's address or login flags are bad.
pub fn run(args: WebArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
    let client = args.connect.client(shutdown)?;
    let server = Server::http(args.listen)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = server
        .server_addr()
        .to_ip()
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("serving http://{address}");
    serve(server, Arc::new(Pool::new(client)), shutdown);
    Ok(())
}

/// Answers requests on `server`, each on a thread of its own, until `shutdown`.
fn serve(server: Server, pool: Arc<Pool>, shutdown: &Shutdown) {
    while !shutdown.is_signalled() {
        let request = match server.recv_timeout(ACCEPT_SLICE) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("cannot accept a request: {e}");
                continue;
            }
        };
        let pool = Arc::clone(&pool);
        let shutdown = shutdown.clone();
        let spawned = thread::Builder::new()
            .name("web-request".into())
            .spawn(move || route(request, &pool, &shutdown));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread for a request: {e}");
        }
    }
}

/// Sends `request` to the handler of its method and path.
fn route(mut request: Request, pool: &Pool, shutdown: &Shutdown) {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let query = Query::parse(query);
    let method = request.method().clone();
    let reply = match (&method, path) {
        (Method::Get, "/") => assets::page(),
        (Method::Get, path) if path.starts_with("/assets/") => assets::file(path),
        (Method::Get, "/api/overview") => api::overview(pool),
        (Method::Get, "/api/messages") => api::messages(pool, &query),
        (Method::Get, "/api/follow") => {
            let last_event_id = header(&request, "Last-Event-ID");
            return follow::stream(request, pool, &query, last_event_id.as_deref(), shutdown);
        }
        (Method::Post, "/api/produce") => match body(&mut request) {
            Ok(body) => api::produce(pool, &body),
            Err(reply) => reply,
        },
        (Method::Post, "/api/topics") => match body(&mut request) {
            Ok(body) => api::create_topic(pool, &body),
            Err(reply) => reply,
        },
        (Method::Delete, "/api/topics") => api::delete_topic(pool, &query),
        _ => api::Reply::error(404, "no such page"),
    };
    if let Err(e) = request.respond(reply.into_response()) {
        tracing::debug!("cannot answer {path}: {e}");
    }
}

/// The value of header `name` in `request`, if it has one.
fn header(request: &Request, name: &'static str) -> Option<String> {
    request.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str().to_owned())
}

/// A request's body, read whole, or the reply that refuses it.
fn body(request: &mut Request) -> Result<Vec<u8>, api::Reply> {
    let mut body = Vec::new();
    let read = request.as_reader().take(MAX_BODY_BYTES + 1).read_to_end(&mut body);
    match read {
        Err(e) => Err(api::Reply::error(400, &format!("cannot read the request: {e}"))),
        Ok(_) if body.len() as u64 > MAX_BODY_BYTES => {
            Err(api::Reply::error(413, "the request is too large"))
        }
        Ok(_) => Ok(body),
    }
}

/// A request's query string, decoded.
#[derive(Debug, Default)]
pub struct Query {
    /// The name=value pairs, in order.
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Decodes `text`, the part of a URL after `?`.
    pub fn parse(text: &str) -> Query {
        let pairs = form_urlencoded::parse(text.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Query { pairs }
    }

    /// The first value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A header for a response; the names and values used here are all valid.
fn make_header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// A response of `status` with `body` of type `content_type`.
fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut reply = Response::from_data(body).with_status_code(status);
    if let Some(h) = make_header("Content-Type", content_type) {
        reply.add_header(h);
    }
    if let Some(h) = make_header("Cache-Control", "no-store") {
        reply.add_header(h);
    }
    if let Some(h) = make_header("X-Content-Type-Options", "nosniff") {
        reply.add_header(h);
    }
    reply
}
