//! `web`: a console in the browser, a client of the broker like the producer and the consumer.
//!
//! A front door ([`front`]) reads requests from browsers within bounds and passes whole ones
//! to an HTTP server ([`tiny_http`]) that answers on a thread per request: the page and its assets
//! ([`assets`]), JSON endpoints that each make a few requests to the broker ([`api`]), and a
//! Server-Sent Events stream that follows a topic ([`follow`]). Every broker request goes
//! through [`crate::Client`] and the protocol, logged in as the browser's session says
//! ([`session`]); the console keeps no state of its own beyond the sessions, each with a few
//! idle connections and the claim its browser holds.
//!
//! Work is bounded: what a browser sends is read within the front door's limits, at most
//! [`MAX_REQUESTS`] requests are answered at once and at most [`MAX_STREAMS`] of them are
//! follow streams (each holds a thread and a connection; a session's streams share one claim);
//! beyond that a browser gets `503` and tries again. Failed logins slow down the address they
//! come from ([`throttle`]). A request from another site (an `Origin`
//! that is not the console's) or for a host name that is not the console's address (a DNS
//! rebinding) is refused, so that a page elsewhere cannot act with a session's rights.

pub mod api;
pub mod assets;
pub mod follow;
pub mod front;
pub mod metrics;
pub mod pool;
pub mod session;
pub mod throttle;

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::args::ConnectArgs;
use crate::security::Credentials;
use crate::Shutdown;
use pool::Target;
use session::Sessions;
use throttle::Throttle;

/// The address `web` listens on unless told otherwise: loopback only, so that nobody else
/// reaches a console that speaks to the broker with its owner's rights.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// At most this many requests are answered at once, follow streams included.
pub const MAX_REQUESTS: usize = 64;

/// At most this many follow streams are open at once.
pub const MAX_STREAMS: usize = 16;

/// How often the serve loop looks at the shutdown flag while no request comes.
const ACCEPT_SLICE: Duration = Duration::from_millis(100);

/// `web [--connect ENDPOINT] [--listen ADDR]`: serve the console page.
#[derive(Debug, Parser)]
#[command(name = "web", version, about = "A live web console for the broker")]
pub struct WebArgs {
    /// Where to listen for browsers, HOST:PORT (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Where the broker is, and how the console logs in to it until a browser logs in as a
    /// user of its own (--user: the password from $BROKER_PASSWORD).
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// Serve metrics in Prometheus' text format (`/metrics`) and health checks (`/healthz`,
    /// `/readyz`) over HTTP on ADDR: HOST:PORT, or a bare PORT for loopback. Off by default.
    #[arg(long, value_name = "ADDR", value_parser = ops::http::parse_listen)]
    pub metrics_listen: Option<SocketAddr>,
}

/// Binds `args.listen`, prints `serving http://ADDR` and serves until `shutdown`.
///
/// # Errors
/// The address cannot be bound, or the broker's address or login flags are bad.
pub fn run(args: WebArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
    let endpoints = args.connect.endpoints()?;
    let credentials = Credentials::from_flags(
        args.connect.user.as_deref(),
        args.connect.curve_server_key.as_deref(),
        args.connect.curve_key_file.as_deref(),
    )?;
    let target = Target::new(endpoints, args.connect.timeout, shutdown.clone());
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address =
        listener.local_addr().with_context(|| format!("cannot listen on {}", args.listen))?;
    front::raise_open_files();
    let inner = front::Inner::new().context("cannot make a directory for the console's socket")?;
    let server = Server::http_unix(&inner.socket())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot listen on the console's socket")?;
    if !address.ip().is_loopback() {
        tracing::warn!(
            "listening on {address}, beyond this machine: whoever reaches it acts on the broker \
             with the console's login"
        );
    }
    println!("serving http://{address}");
    let console = Arc::new(Console {
        sessions: Sessions::new(target, credentials),
        throttle: Throttle::new(),
        requests: AtomicUsize::new(0),
        streams: AtomicUsize::new(0),
    });
    if let Some(address) = args.metrics_listen {
        let bound = ops::http::serve(address, Arc::new(metrics::Endpoint(Arc::clone(&console))))
            .with_context(|| format!("cannot listen on {address} for --metrics-listen"))?;
        println!("metrics on http://{bound}/metrics");
    }
    thread::scope(|scope| {
        scope.spawn(|| serve(&server, &console, shutdown));
        front::serve(&listener, &inner.socket(), shutdown);
    });
    console.sessions.end_all();
    Ok(())
}

/// What the request threads share.
pub struct Console {
    /// The browsers' sessions.
    pub sessions: Sessions,
    /// Failed logins by client address.
    throttle: Throttle,
    /// How many requests are being answered now.
    requests: AtomicUsize,
    /// How many follow streams are open now.
    streams: AtomicUsize,
}

/// A place taken in one of the console's counted limits, given back when dropped.
pub struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    /// Takes a place in `count` if it is below `limit`.
    fn take(count: &'a AtomicUsize, limit: usize) -> Option<Slot<'a>> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .ok()
            .map(|_| Slot(count))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers requests on `server`, each on a thread of its own, until `shutdown`.
fn serve(server: &Server, console: &Arc<Console>, shutdown: &Shutdown) {
    while !shutdown.is_signalled() {
        let request = match server.recv_timeout(ACCEPT_SLICE) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("cannot accept a request: {e}");
                continue;
            }
        };
        if console.requests.load(Ordering::Acquire) >= MAX_REQUESTS {
            metrics::METRICS.busy();
            let reply = api::Reply::error(503, "the console is busy; try again");
            let _ = request.respond(reply.into_response());
            continue;
        }
        let console = Arc::clone(console);
        let shutdown = shutdown.clone();
        let spawned = thread::Builder::new().name("web-request".into()).spawn(move || {
            // Taken here rather than before the spawn so that the slot lives with the thread;
            // the accept loop's check above keeps threads from piling up meanwhile.
            match Slot::take(&console.requests, MAX_REQUESTS) {
                Some(_slot) => route(request, &console, &shutdown),
                None => {
                    let reply = api::Reply::error(503, "the console is busy; try again");
                    let _ = request.respond(reply.into_response());
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread for a request: {e}");
        }
    }
}

/// Sends `request` to the handler of its method and path.
fn route(mut request: Request, console: &Console, shutdown: &Shutdown) {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    metrics::METRICS.request(path);
    let query = Query::parse(query);
    let method = request.method().clone();
    if let Err(reason) = check_origin(&request, &method) {
        let _ = request.respond(api::Reply::error(403, reason).into_response());
        return;
    }
    match (&method, path) {
        (Method::Get, "/") => return respond(request, assets::page(), path),
        (Method::Get, "/favicon.ico") => {
            return respond(request, assets::file("/assets/icon.svg"), path)
        }
        (Method::Get, path) if path.starts_with("/assets/") => {
            return respond(request, assets::file(path), path)
        }
        _ => {}
    }
    let sessions = &console.sessions;
    let peer = front::peer_of(header(&request, front::PEER_HEADER).as_deref());
    let source = peer.ip();
    // Every broker request made for this browser names it, for the broker's audit log.
    pool::answer_for(peer);
    // Only what changes state gets a session of its own: a read without a cookie (a page
    // elsewhere can make a browser send any number) shares the anonymous one.
    let own = !matches!(method, Method::Get | Method::Head);
    let Some((session, new)) =
        sessions.find_or_start(header(&request, "Cookie").as_deref(), source, own)
    else {
        let reply = api::Reply::error(503, "the console has too many sessions; try again");
        return respond(request, reply, path);
    };
    let cookie = new.then(|| session.cookie());
    // Which page of the browser asks: a name each page makes up when it loads (a header, or
    // `page=` where a header cannot be set: the release sent as a page closes).
    let page = header(&request, "X-Console-Page")
        .or_else(|| query.get("page").map(str::to_owned))
        .filter(|p| p.len() <= 64)
        .unwrap_or_default();
    if (&method, path) == (&Method::Get, "/api/follow") {
        let Some(_slot) = Slot::take(&console.streams, MAX_STREAMS) else {
            let reply = api::Reply::error(503, "too many pages follow topics now; try again");
            return respond(request, reply, path);
        };
        metrics::METRICS.stream();
        let last_event_id = header(&request, "Last-Event-ID");
        let start =
            follow::Opening { query: &query, last_event_id: last_event_id.as_deref(), cookie };
        return follow::stream(request, &session, &start, shutdown);
    }
    let mut reply = match (&method, path) {
        (Method::Get, "/api/overview") => api::overview(&session),
        (Method::Get, "/api/messages") => api::messages(&session, &page, &query),
        (Method::Get, "/api/session") => api::session(&session, &page),
        (Method::Get, "/api/consume/topics") => api::held_topics(&session, &page),
        (Method::Post, "/api/consume/renew") => api::renew(&session, &page),
        (Method::Post, "/api/consume/release") => api::release(&session, &page),
        (Method::Post, "/api/logout") => api::log_out(sessions, &session, source),
        (Method::Delete, "/api/topics") => api::delete_topic(&session, &query),
        (
            Method::Post,
            "/api/produce" | "/api/topics" | "/api/login" | "/api/consume/claim"
            | "/api/groups/reset",
        ) => match body(&mut request) {
            Err(reply) => reply,
            Ok(body) => match path {
                "/api/produce" => api::produce(&session, &body),
                "/api/groups/reset" => api::reset_group(&session, &body),
                "/api/topics" => api::create_topic(&session, &body),
                "/api/login" => api::log_in(sessions, &console.throttle, &session, source, &body),
                _ => api::claim(&session, &page, &body),
            },
        },
        _ => api::Reply::error(404, "no such page"),
    };
    if reply.set_cookie.is_none() {
        reply.set_cookie = cookie;
    }
    respond(request, reply, path);
}

/// Sends `reply` to `request`.
fn respond(request: Request, reply: api::Reply, path: &str) {
    if let Err(e) = request.respond(reply.into_response()) {
        tracing::debug!("cannot answer {path}: {e}");
    }
}

/// Refuses what another site's page could make a browser send: a request whose `Host` is a
/// name other than `localhost` (a DNS rebinding: the console answers to its address), and a
/// request that changes something with an `Origin` other than the console's own.
fn check_origin(request: &Request, method: &Method) -> Result<(), &'static str> {
    let host = header(request, "Host").unwrap_or_default();
    let name = host.rsplit_once(':').map_or(host.as_str(), |(name, _)| name);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name != "localhost" && name.parse::<IpAddr>().is_err() {
        return Err("the console answers to its address (an IP address or localhost) only");
    }
    if matches!(method, Method::Get | Method::Head) {
        return Ok(());
    }
    match header(request, "Origin") {
        Some(origin) if origin != format!("http://{host}") => {
            Err("a page of another site may not act on the console")
        }
        _ => Ok(()),
    }
}

/// The value of header `name` in `request`, if it has one.
fn header(request: &Request, name: &'static str) -> Option<String> {
    request.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str().to_owned())
}

/// A request's body, read whole, or the reply that refuses it.
fn body(request: &mut Request) -> Result<Vec<u8>, api::Reply> {
    let mut body = Vec::new();
    let read = request.as_reader().take(front::MAX_BODY_BYTES + 1).read_to_end(&mut body);
    match read {
        Err(e) => Err(api::Reply::error(400, &format!("cannot read the request: {e}"))),
        Ok(_) if body.len() as u64 > front::MAX_BODY_BYTES => {
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
