//! The gateway's accept loop: one thread per Kafka connection, each with its own native
//! client, answering its requests in order.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use client::{Client, ClientError, Credentials, Endpoints};

use crate::apis::{Door, Session, BROKER_TIMEOUT};
use crate::claim::SharedClaim;
use crate::error::FrameError;
use crate::frame::{self, Incoming};
use crate::groups::Coordinator;
use crate::limits::{Admitted, Limits};
use crate::pool::Pool;
use crate::tls::Conn;
use rustls::ServerConfig;

/// The stack of a connection's thread.
const STACK: usize = 512 * 1024;

/// How long the `status` at start waits on each broker endpoint (the native programs'
/// `--timeout` default), since no Kafka connection is accepted until it ends: with a dead
/// endpoint before a live one, Kafka clients (librdkafka gives up on `ApiVersions` after 10 s)
/// are served after this, not after a whole [`BROKER_TIMEOUT`].
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The gateway: a bound Kafka listener and the broker it speaks to.
pub struct Gateway {
    /// The Kafka listener.
    listener: TcpListener,
    /// The broker's native endpoints (several for broker processes sharing their topics).
    endpoints: Endpoints,
    /// What every connection shares.
    door: Arc<Door>,
    /// What the connections may hold, in all.
    limits: Arc<Limits>,
    /// TLS on the listener, if asked for.
    tls: Option<Arc<ServerConfig>>,
    /// The gateway's own credentials (a CURVE key pair), or none: Kafka clients then log in.
    credentials: Credentials,
}

impl Gateway {
    /// A gateway accepting on `listener`, speaking to the broker at `endpoints`, and giving
    /// `host:port` in `Metadata` (the address Kafka clients reach it at).
    /// With `sasl`, Kafka clients must log in with SASL/PLAIN as users of the broker.
    /// `limits` bounds the connections and the request bytes they hold.
    pub fn new(
        listener: TcpListener,
        endpoints: Endpoints,
        host: String,
        port: u16,
        sasl: bool,
        limits: Limits,
    ) -> Gateway {
        let limits = Arc::new(limits);
        let door = Door {
            endpoints: endpoints.clone(),
            sasl,
            user_claims: std::sync::Mutex::default(),
            host,
            port: i32::from(port),
            claim: Arc::new(SharedClaim::default()),
            coordinator: Arc::new(Coordinator::default()),
            refused_logins: crate::limits::Throttle::default(),
            login_backoff: crate::backoff::LoginBackoff::default(),
            pool: None,
            user_pools: std::sync::Mutex::default(),
            limits: Arc::clone(&limits),
            producers: crate::idempotence::Producers::default(),
            partitioned: std::sync::OnceLock::new(),
        };
        Gateway {
            listener,
            endpoints,
            door: Arc::new(door),
            limits,
            tls: None,
            credentials: Credentials::None,
        }
    }

    /// This gateway reaching the broker with `credentials` of its own (a CURVE key pair, for a
    /// broker with `--curve-secret-key`) rather than as each Kafka client's SASL user: every
    /// connection then acts as the user those credentials are.
    pub fn with_credentials(mut self, credentials: Credentials) -> Gateway {
        self.credentials = credentials;
        self
    }

    /// This gateway with TLS on its listener (Kafka's `SSL`, and `SASL_SSL` with logins).
    pub fn with_tls(mut self, tls: Arc<ServerConfig>) -> Gateway {
        self.tls = Some(tls);
        self
    }

    /// Accepts connections until `stop` is set (the caller then connects once to wake the
    /// accept), and then gives the shared claim back.
    ///
    /// A broker that refuses a connection without credentials (one started with `--auth`)
    /// makes the gateway ask Kafka clients for SASL/PLAIN logins, whether or not `sasl` was
    /// given: the Kafka port of a broker with users always asks who is there.
    ///
    /// # Errors
    /// The broker's endpoint is not one a client can connect to, or `sasl` was asked for in
    /// front of a broker that has no users (every login would fail).
    pub fn run(mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut control =
            Client::connect_to(self.endpoints.clone(), START_TIMEOUT, self.credentials.clone())?;
        let own = self.credentials != Credentials::None;
        match control.status() {
            Err(e @ ClientError::AuthenticationFailed { .. }) if own => {
                anyhow::bail!("the broker at {} refused the gateway's key: {e}", self.endpoints)
            }
            Err(ClientError::AuthenticationFailed { .. }) => {
                if !self.door.sasl {
                    tracing::info!(
                        "the broker has users: Kafka clients must log in with SASL/PLAIN"
                    );
                }
                if let Some(door) = Arc::get_mut(&mut self.door) {
                    door.sasl = true;
                }
            }
            Ok(_) if self.door.sasl => anyhow::bail!(
                "--sasl-plain: the broker at {} has no users (start it with --auth)",
                self.endpoints
            ),
            // A broker not up yet: the connections find out what it asks for.
            Ok(_) | Err(_) => {}
        }
        // Native clients start at the endpoint that answered (the next after those that did
        // not), and wait on it as long as any request may take.
        self.endpoints = control.endpoints().clone();
        let origin =
            Client::connect_to(self.endpoints.clone(), BROKER_TIMEOUT, self.credentials.clone())?;
        let sasl = self.door.sasl;
        if let Some(door) = Arc::get_mut(&mut self.door) {
            door.endpoints = self.endpoints.clone();
            if !sasl {
                door.pool = Some(Arc::new(Pool::new(origin)));
            }
        }
        let address = self.listener.local_addr()?;
        if own && !address.ip().is_loopback() {
            tracing::warn!(
                "listening on {address}, beyond this machine, as {}: whoever reaches it has \
                 that user's rights",
                self.credentials.who()
            );
        } else if !self.door.sasl && !address.ip().is_loopback() {
            tracing::warn!(
                "listening on {address}, beyond this machine, in front of a broker without users: \
                 whoever reaches it produces, reads and deletes topics (start the broker with \
                 --auth, and Kafka clients log in with SASL/PLAIN)"
            );
        }
        // Members that died without leaving go when their session ends, whether or not
        // another member of their group heartbeats.
        let coordinator = Arc::downgrade(&self.door.coordinator);
        thread::spawn(move || {
            while let Some(coordinator) = coordinator.upgrade() {
                coordinator.expire();
                drop(coordinator);
                thread::sleep(std::time::Duration::from_secs(1));
            }
        });
        for stream in self.listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            };
            let peer =
                stream.peer_addr().map_or_else(|_| "unknown peer".to_owned(), |a| a.to_string());
            // Over the cap, the connection idle the longest makes room, or this one is closed
            // at once (dropped).
            let admitted = self.limits.admit(&peer, &stream);
            crate::metrics::METRICS.connection(admitted.is_some());
            let Some(admitted) = admitted else { continue };
            let door = Arc::clone(&self.door);
            let limits = Arc::clone(&self.limits);
            let tls = self.tls.clone();
            // An idle connection's thread touches little of its stack: this bounds what a busy
            // one may take, not what an idle one costs.
            let spawned = thread::Builder::new().stack_size(STACK).spawn(move || {
                let session = Session::new(door, peer.clone());
                serve(stream, peer, session, &limits, tls.as_ref(), admitted);
            });
            if let Err(e) = spawned {
                tracing::warn!("refusing a Kafka connection: cannot start its thread: {e}");
            }
        }
        self.door.claim.release(&mut control);
        Ok(())
    }
}

/// Answers one connection's requests until it closes; bad input closes it with a log line.
/// `admitted` counts the connection until it ends.
fn serve(
    stream: TcpStream,
    peer: String,
    mut session: Session,
    limits: &Arc<Limits>,
    tls: Option<&Arc<ServerConfig>>,
    admitted: Admitted,
) {
    let _ = stream.set_nodelay(true);
    let mut conn = match Conn::accept(stream, tls, limits.request_read_timeout) {
        Ok(conn) => conn,
        Err(e) => {
            if limits.failed_handshakes.admit().is_some() {
                tracing::warn!("TLS handshake with {peer} failed: {e}");
            }
            return;
        }
    };
    let ended = answer_all(&mut conn, &mut session, limits, &admitted);
    let failed =
        matches!(ended, Err(ref e) if !matches!(e, FrameError::Io(_) | FrameError::Idle(_)));
    crate::metrics::METRICS.closed(failed);
    if let Err(e) = ended {
        match e {
            FrameError::Io(_) | FrameError::Idle(_) => {
                tracing::debug!("Kafka connection from {peer} ended: {e}");
            }
            // Logged once, throttled, where the login was refused.
            FrameError::LoginFailed => {
                tracing::debug!("closing the Kafka connection from {peer}: {e}");
            }
            _ => tracing::warn!("closing the Kafka connection from {peer}: {e}"),
        }
    }
    // Unlisted before the descriptor closes (see `Limits::admit`).
    drop(admitted);
    drop(conn);
}

/// The loop of [`serve`].
fn answer_all(
    conn: &mut Conn,
    session: &mut Session,
    limits: &Arc<Limits>,
    admitted: &Admitted,
) -> crate::Result<()> {
    // The frame's reservation is given back when the loop's body ends: once it is answered.
    while let Some((frame, _reservation)) = frame::read_frame(conn, limits)? {
        admitted.busy(true);
        answer_one(conn, session, frame)?;
        admitted.busy(false);
        if let Some(reason) = session.closing() {
            return Err(reason);
        }
    }
    Ok(())
}

/// Answers one frame; each response is written whole with one call, so no buffer is held
/// between requests.
fn answer_one(writer: &mut Conn, session: &mut Session, frame: bytes::Bytes) -> crate::Result<()> {
    if session.expects_raw_token() {
        // After a `SaslHandshake` v0 the login is a bare frame; an empty one answers it.
        if !session.raw_authenticate(&frame) {
            return Err(FrameError::LoginFailed);
        }
        writer.write_all(&[0; 4])?;
        return Ok(());
    }
    match frame::decode(frame)? {
        Incoming::ApiVersionsTooNew(correlation_id) => {
            let response = frame::api_versions_too_new();
            let api = kafka_protocol::messages::ApiKey::ApiVersions;
            crate::metrics::METRICS.request(api);
            frame::write_response(writer, api, 0, correlation_id, &response)?;
        }
        Incoming::Request(request) => {
            crate::metrics::METRICS.request(request.api);
            if !session.admits(request.api) {
                return Err(FrameError::NotLoggedIn(crate::apis::name(request.api)));
            }
            let client_id = request.client_id.as_deref();
            if let Some(response) = session.answer(request.body, request.version, client_id) {
                frame::write_response(
                    writer,
                    request.api,
                    request.version,
                    request.correlation_id,
                    &response,
                )?;
            }
        }
    }
    Ok(())
}
