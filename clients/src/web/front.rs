//! The console's front door: the only thing that reads from browsers before a request is whole,
//! so that no client can make the console hold unbounded memory or threads.
//!
//! `tiny_http` reads a request on a thread per connection and buffers its request line and
//! headers without a limit, so it listens only on a Unix socket in a private directory, and
//! this door stands on the console's TCP address in front of it. One thread waits on every
//! connection whose head (request line and headers) is still coming (`poll(2)`, no thread per
//! connection): at most [`MAX_PENDING`], the oldest closed to make room for a new one; a head
//! must be whole within [`MAX_HEAD_BYTES`] (else `414`/`431`) and [`HEAD_TIMEOUT`] (else it is
//! closed), and announce a body of at most [`MAX_BODY_BYTES`] (else `413`), which must then come
//! whole within [`HEAD_TIMEOUT`] too (else `408`). A whole request is passed on by one of at
//! most [`MAX_FORWARDS`] threads, which sends it to `tiny_http` with
//! `Connection: close` and the client's address in [`PEER_HEADER`] (any such header from the
//! client is dropped), then copies the answer back, a follow stream's for as long as it lasts.
//! Beyond that the client gets `503`. So threads are bounded by [`MAX_FORWARDS`] (twice, with
//! `tiny_http`'s own) whatever the number of connections, and memory by [`MAX_PENDING`] heads.
//!
//! Alternatives weighed: a maintained server crate (hyper) would bring an async runtime and a
//! rewrite of every handler; teaching `tiny_http` limits means patching it. The door is small
//! and keeps the handlers as they are.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::Slot;
use crate::Shutdown;

/// The longest request line and headers, together, the door reads.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The largest request body announced that the door passes on (a produce form's value and its
/// key).
pub const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// A head must be whole this long after its connection was accepted, and a body this long
/// after its head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Writing an answer to a client that does not read it gives up after this long without
/// progress.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many connections wait for their heads at once.
pub const MAX_PENDING: usize = 2048;

/// At most this many whole requests are passed on at once (follow streams included).
pub const MAX_FORWARDS: usize = 80;

/// The header that carries the client's address and port to the handlers: only the door sets
/// it.
pub const PEER_HEADER: &str = "X-Console-Peer";

/// A connection whose head is still coming.
struct Pending {
    /// The connection, non-blocking.
    stream: TcpStream,
    /// Who it comes from.
    peer: SocketAddr,
    /// What it sent so far.
    read: Vec<u8>,
    /// When it was accepted.
    since: Instant,
}

/// A private directory for the inner server's socket, removed when dropped.
pub struct Inner {
    /// The directory (mode 0700).
    dir: PathBuf,
}

impl Inner {
    /// Makes a new private directory under the system's temporary directory.
    ///
    /// # Errors
    /// The directory cannot be made.
    pub fn new() -> io::Result<Inner> {
        use std::os::unix::fs::DirBuilderExt;
        remove_stale();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("broker-web-{}-{nanos:x}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Inner { dir })
    }

    /// The inner server's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
}

/// How the inner server's directories are named: then the process id and a random part.
const PREFIX: &str = "broker-web-";

/// Removes the directories of consoles that were killed (their process is gone), which could
/// not remove their own.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lets the process hold as many connections as its hard limit allows (the soft limit is often
/// 1024, fewer than the pending connections the door keeps).
pub fn raise_open_files() {
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Accepts on `listener` and passes whole requests to the server on `socket` until `shutdown`.
pub fn serve(listener: &TcpListener, socket: &Path, shutdown: &Shutdown) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::warn!("cannot serve: {e}");
        return;
    }
    let forwards = Arc::new(AtomicUsize::new(0));
    let mut pending: Vec<Pending> = Vec::new();
    while !shutdown.is_signalled() {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(pending.iter().map(|p| p.stream.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call's length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if ready < 0 {
            continue;
        }
        let now = Instant::now();
        let mut still = Vec::with_capacity(pending.len());
        for (mut p, fd) in pending.drain(..).zip(fds.iter().skip(1)) {
            if fd.revents != 0 {
                match read_more(&mut p) {
                    Progress::Waiting => {}
                    Progress::Closed => continue,
                    Progress::Whole(end) => {
                        pass_on(p, end, socket, &forwards);
                        continue;
                    }
                    Progress::Refused(status, reason) => {
                        refuse(&p.stream, status, reason);
                        continue;
                    }
                }
            }
            if now.duration_since(p.since) < HEAD_TIMEOUT {
                still.push(p);
            }
        }
        pending = still;
        if fds[0].revents != 0 {
            accept_all(listener, &mut pending);
        }
    }
}

/// Accepts every connection waiting, closing the oldest pending ones to make room.
fn accept_all(listener: &TcpListener, pending: &mut Vec<Pending>) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if pending.len() >= MAX_PENDING {
                    pending.remove(0);
                }
                pending.push(Pending { stream, peer, read: Vec::new(), since: Instant::now() });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors: the oldest waiting connection gives its up.
                if pending.is_empty() {
                    tracing::warn!("cannot accept a connection: {e}");
                    return;
                }
                pending.remove(0);
            }
        }
    }
}

/// What reading a pending connection gave.
enum Progress {
    /// The head is not whole yet.
    Waiting,
    /// The client left or failed.
    Closed,
    /// The head is whole and ends at this offset of what was read.
    Whole(usize),
    /// The head breaks a limit: refused with this status and reason.
    Refused(u16, &'static str),
}

/// Reads what `p` sent since.
fn read_more(p: &mut Pending) -> Progress {
    let mut chunk = [0u8; 4096];
    loop {
        match p.stream.read(&mut chunk) {
            Ok(0) => return Progress::Closed,
            Ok(n) => {
                let from = p.read.len().saturating_sub(3);
                p.read.extend_from_slice(&chunk[..n]);
                if let Some(at) = find(&p.read[from..], b"\r\n\r\n") {
                    return Progress::Whole(from + at + 4);
                }
                if p.read.len() > MAX_HEAD_BYTES {
                    return if find(&p.read, b"\r\n").is_none() {
                        Progress::Refused(414, "the request line is too long")
                    } else {
                        Progress::Refused(431, "the request's headers are too large")
                    };
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Waiting,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Progress::Closed,
        }
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A whole head, rewritten for the inner server, and the body length it announces.
struct Head {
    /// The request line and headers to send on.
    text: Vec<u8>,
    /// The body's length.
    body: u64,
}

/// Checks and rewrites the head `raw` from `peer`: `Connection: close`, the peer's address in
/// [`PEER_HEADER`], hop-by-hop headers dropped.
fn rewrite(raw: &[u8], peer: SocketAddr) -> Result<Head, (u16, &'static str)> {
    let text = std::str::from_utf8(raw).map_err(|_| (400, "the request's head is not text"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    if line.split(' ').count() != 3 {
        return Err((400, "not an HTTP request line"));
    }
    let mut out = format!("{line}\r\n");
    let mut body = 0u64;
    for header in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = header.split_once(':') else {
            return Err((400, "a header without a colon"));
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("Content-Length") {
            body = value.trim().parse().map_err(|_| (400, "Content-Length is not a number"))?;
            if body > MAX_BODY_BYTES {
                return Err((413, "the request is too large"));
            }
        } else if name.eq_ignore_ascii_case("Transfer-Encoding") {
            return Err((411, "send a Content-Length"));
        } else if ["Connection", "Keep-Alive", PEER_HEADER, "Expect"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Connection: close\r\n{PEER_HEADER}: {peer}\r\n\r\n"));
    Ok(Head { text: out.into_bytes(), body })
}

/// Passes the whole request in `p` (its head ending at `end`) on, on a thread of its own.
fn pass_on(p: Pending, end: usize, socket: &Path, forwards: &Arc<AtomicUsize>) {
    let head = match rewrite(&p.read[..end], p.peer) {
        Ok(head) => head,
        Err((status, reason)) => return refuse(&p.stream, status, reason),
    };
    if Slot::take(forwards, MAX_FORWARDS).is_none() {
        super::metrics::METRICS.busy();
        return refuse(&p.stream, 503, "the console is busy; try again");
    }
    let forwards = Arc::clone(forwards);
    let socket = socket.to_owned();
    let spawned = thread::Builder::new().name("web-forward".into()).spawn(move || {
        // Taken again here so that the place lives with the thread; the check above keeps
        // threads from piling up meanwhile.
        let Some(_slot) = Slot::take(&forwards, MAX_FORWARDS) else { return };
        let started = p.read[end..].to_vec();
        if let Err(e) = forward(p.stream, &head, &started, &socket) {
            tracing::debug!("a request from {} ended: {e}", p.peer);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a thread for a request: {e}");
    }
}

/// Sends `head`, the body (`started` and the rest from `client`) to the inner server, and its
/// answer back to `client`.
fn forward(client: TcpStream, head: &Head, started: &[u8], socket: &Path) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut inner = UnixStream::connect(socket)?;
    inner.write_all(&head.text)?;
    let started = &started[..started.len().min(usize::try_from(head.body).unwrap_or(usize::MAX))];
    inner.write_all(started)?;
    let mut rest = head.body - started.len() as u64;
    // The whole body within HEAD_TIMEOUT, not merely some progress each IO_TIMEOUT: a body sent
    // a byte at a time holds a thread only that long.
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut chunk = [0u8; 16 * 1024];
    while rest > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            refuse(&client, 408, "the request's body came too slowly");
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the body came too slowly"));
        }
        client.set_read_timeout(Some(left))?;
        let want = usize::try_from(rest).unwrap_or(usize::MAX).min(chunk.len());
        let n = (&client).read(&mut chunk[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the body was cut short"));
        }
        inner.write_all(&chunk[..n])?;
        rest -= n as u64;
    }
    io::copy(&mut inner, &mut &client)?;
    let _ = client.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// Answers `stream` with `status` and `reason` as the console's other errors are (best effort:
/// the connection is non-blocking and closed after).
fn refuse(mut stream: &TcpStream, status: u16, reason: &str) {
    let body = serde_json::json!({ "error": reason }).to_string();
    let text = match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let reply = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// The client's address and port in a request the door passed on.
pub fn peer_of(value: Option<&str>) -> SocketAddr {
    value.and_then(|v| v.parse().ok()).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
}
