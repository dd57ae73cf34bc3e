//! The operations port: `GET /metrics`, `/healthz` and `/readyz`, answered by a fixed set of
//! threads of its own, so that a scrape never runs on a program's serving thread.
//!
//! Written on `std::net` rather than with `tiny_http`: tiny_http starts a thread for every
//! connection with no cap (its task pool grows as connections come), and this port answers
//! three fixed GETs. Here [`THREADS`] threads each take one connection at a time, read at most
//! [`MAX_REQUEST_BYTES`] of it within [`READ_TIMEOUT`], answer it and close it: whatever a
//! peer sends, the port holds at most that many threads and buffers.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::exposition::{Exposition, CONTENT_TYPE};

/// Threads answering the port, each one connection at a time.
pub const THREADS: usize = 2;

/// The most bytes of a request read: its request line and headers (a GET has no body).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// How long a peer has to send its whole request, and to take the answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The port's default, Prometheus' own range for exporters; off unless asked for.
pub const DEFAULT_PORT: u16 = 9464;

/// What a program shows on its operations port.
pub trait Endpoint: Send + Sync + 'static {
    /// Writes its metrics. Called on the port's threads: it must only copy what the program's
    /// own threads published, never wait for them.
    fn metrics(&self, page: &mut Exposition);

    /// Whether it can do its work now (`/readyz`); the reason when not.
    fn ready(&self) -> Result<(), String>;
}

/// Parses `--metrics-listen`: `HOST:PORT` (a name is resolved to its first address), or a bare
/// port, which means loopback (`127.0.0.1:PORT`), so that nothing is exposed beyond the
/// machine unless a host is written.
///
/// # Errors
/// Not a port, or a host that does not resolve.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.to_socket_addrs()
        .map_err(|e| format!("expected PORT or HOST:PORT: {e}"))?
        .next()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

/// Binds `address` and answers it on [`THREADS`] threads for as long as the process lives.
/// Returns the address bound (port 0 picks a free one).
///
/// # Errors
/// The address cannot be bound.
pub fn serve(address: SocketAddr, endpoint: Arc<dyn Endpoint>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(address)?;
    let bound = listener.local_addr()?;
    for _ in 0..THREADS {
        let listener = listener.try_clone()?;
        let endpoint = Arc::clone(&endpoint);
        thread::Builder::new().name("ops-http".into()).spawn(move || loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = answer(stream, &*endpoint) {
                        tracing::debug!("operations port: {e}");
                    }
                }
                Err(e) => {
                    // Out of descriptors, most likely: let others close theirs.
                    tracing::warn!("operations port cannot accept: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        })?;
    }
    Ok(bound)
}

/// Reads one request from `stream`, answers it and closes it.
fn answer(mut stream: TcpStream, endpoint: &dyn Endpoint) -> io::Result<()> {
    // One deadline for the whole request, so that a peer sending a byte at a time cannot keep
    // a thread longer than a slow scrape would.
    let deadline = Instant::now() + READ_TIMEOUT;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if request.len() >= MAX_REQUEST_BYTES {
            return respond(&mut stream, 431, "text/plain", b"request too large\n", false);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request not sent in time"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let head = method == "HEAD";
    if method != "GET" && !head {
        return respond(&mut stream, 405, "text/plain", b"only GET\n", head);
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let mut page = Exposition::new();
            endpoint.metrics(&mut page);
            respond(&mut stream, 200, CONTENT_TYPE, page.into_string().as_bytes(), head)
        }
        "/healthz" => respond(&mut stream, 200, "text/plain", b"ok\n", head),
        "/readyz" => match endpoint.ready() {
            Ok(()) => respond(&mut stream, 200, "text/plain", b"ready\n", head),
            Err(reason) => {
                let body = format!("not ready: {reason}\n");
                respond(&mut stream, 503, "text/plain", body.as_bytes(), head)
            }
        },
        _ => respond(&mut stream, 404, "text/plain", b"/metrics, /healthz or /readyz\n", head),
    }
}

/// Writes a whole response, then closes the connection.
fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    head: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let header = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    if !head {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<(), String>);

    impl Endpoint for Fixed {
        fn metrics(&self, page: &mut Exposition) {
            page.counter("x_things_total", "Things.", 7);
        }
        fn ready(&self) -> Result<(), String> {
            self.0.clone()
        }
    }

    fn get(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn the_three_paths_answer_and_others_do_not() {
        let up = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Fixed(Ok(())))).unwrap();
        let down = Arc::new(Fixed(Err("the store is closed".into())));
        let down = serve("127.0.0.1:0".parse().unwrap(), down).unwrap();
        let metrics = get(up, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("version=0.0.4"), "{metrics}");
        assert!(metrics.ends_with("x_things_total 7\n"), "{metrics}");
        assert!(get(up, b"GET /healthz HTTP/1.0\r\n\r\n").ends_with("\r\n\r\nok\n"));
        assert!(get(up, b"GET /readyz HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
        let not_ready = get(down, b"GET /readyz HTTP/1.0\r\n\r\n");
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.ends_with("not ready: the store is closed\n"), "{not_ready}");
        assert!(get(up, b"GET /other HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(up, b"POST /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 405"));
    }

    #[test]
    fn a_request_past_the_limit_is_refused_and_the_port_goes_on() {
        let up = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Fixed(Ok(())))).unwrap();
        // Exactly the limit and no end of headers: all of it is read, so the close that follows
        // the answer is clean.
        let huge = vec![b'a'; MAX_REQUEST_BYTES];
        let mut stream = TcpStream::connect(up).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(&huge).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
        assert!(get(up, b"GET /healthz HTTP/1.0\r\n\r\n").ends_with("ok\n"));
    }

    #[test]
    fn a_peer_that_sends_slowly_is_cut_off_at_the_deadline() {
        let up = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Fixed(Ok(())))).unwrap();
        let mut stream = TcpStream::connect(up).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = std::time::Instant::now();
        // A byte at a time, each well within the deadline, until the port closes.
        let closed = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            stream.write_all(b"G").is_err()
        });
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        assert!(closed || read.is_ok_and(|n| n == 0), "the port kept the connection");
        assert!(started.elapsed() < READ_TIMEOUT * 3, "{:?}", started.elapsed());
    }

    #[test]
    fn a_bare_port_means_loopback() {
        assert_eq!(parse_listen("9464").unwrap(), "127.0.0.1:9464".parse().unwrap());
        assert_eq!(parse_listen("0.0.0.0:1").unwrap(), "0.0.0.0:1".parse().unwrap());
        assert!(parse_listen("nowhere").is_err());
    }
}
