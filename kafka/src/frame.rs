//! Kafka's framing: a 4-byte big-endian size, then a request header and body, decoded and
//! encoded with the `kafka-protocol` crate at the version the request names.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::apis;
use crate::error::{FrameError, Result};
use crate::limits::{Limits, Reservation};

/// The largest request frame the door reads: Kafka's own default `socket.request.max.bytes`
/// (100 MiB). A larger size prefix closes the connection before anything is allocated.
pub const MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// One decoded request.
#[derive(Debug)]
pub struct Request {
    /// Which API it calls.
    pub api: ApiKey,
    /// The version of the API it speaks, which its response must speak too.
    pub version: i16,
    /// Its correlation id, echoed in the response.
    pub correlation_id: i32,
    /// The client's `client.id`, if it gave one.
    pub client_id: Option<String>,
    /// The request itself.
    pub body: RequestKind,
}

/// What one frame holds: a request to answer, or an `ApiVersions` at a version above the ones
/// this door speaks, which Kafka answers at version 0 with `UNSUPPORTED_VERSION` and the list
/// of versions, so that the client can ask again at one of them.
#[derive(Debug)]
pub enum Incoming {
    /// A request this door answers.
    Request(Box<Request>),
    /// `ApiVersions` at too high a version, with its correlation id.
    ApiVersionsTooNew(i32),
}

/// A connection frames are read from: bytes, and a read timeout to set.
pub trait Source: Read {
    /// Sets how long a read may wait.
    ///
    /// # Errors
    /// As the socket's own `set_read_timeout`.
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()>;

    /// Reads into `buf`'s spare room, at most `limit` bytes, until they have come, the peer
    /// closes or a read fails (its timeout passing among the failures); what was read stays in
    /// `buf` either way. Never grows `buf` past the room it has: a `Take` of `limit` ends
    /// before `read_to_end` would. A source whose reads fill uninitialized memory (a plain
    /// socket) reads into the room as it is; this default zeroes it first.
    ///
    /// # Errors
    /// The read's own.
    fn fill(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize>
    where
        Self: Sized,
    {
        Read::by_ref(self).take(limit as u64).read_to_end(buf)
    }
}

/// How long a connection waits for its next request before its thread gives back the stack
/// pages it touched ([`crate::stack`]).
pub const TRIM_AFTER: Duration = Duration::from_secs(1);

/// The first room a frame's buffer gets, before it doubles as the bytes fill it.
const FIRST_ROOM: usize = 4096;

/// Reads one frame from `stream`, its bytes reserved from `limits` as they arrive and until
/// the returned [`Reservation`] is dropped; `None` when the peer closed the connection between
/// frames. The wait for a frame's first byte is bounded by [`Limits::max_idle`], the rest of the frame by
/// [`Limits::request_read_timeout`].
///
/// # Errors
/// [`FrameError::Io`] when the connection fails or ends mid-frame, [`FrameError::TooLarge`]
/// for a size prefix over [`Limits::max_frame_bytes`] or below zero, [`FrameError::Idle`] and
/// [`FrameError::TooSlow`] when the timeouts pass.
pub fn read_frame(
    stream: &mut impl Source,
    limits: &Arc<Limits>,
) -> Result<Option<(Bytes, Reservation)>> {
    let mut size = [0u8; 4];
    let idle_until = Instant::now() + limits.max_idle;
    let mut trimmed = false;
    let first = loop {
        let left = idle_until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FrameError::Idle(limits.max_idle));
        }
        // A short wait first: a connection silent past it gives back its stack's pages.
        stream.set_read_timeout(if trimmed { left } else { left.min(TRIM_AFTER) })?;
        match stream.read(&mut size) {
            Ok(0) => return Ok(None),
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => {
                if !trimmed {
                    crate::stack::release_unused();
                    trimmed = true;
                }
            }
            Err(e) => return Err(FrameError::Io(e)),
        }
    };
    let deadline = Instant::now() + limits.request_read_timeout;
    read_until(stream, &mut size[first..], deadline, limits)?;
    let size = i32::from_be_bytes(size);
    let max = limits.max_frame_bytes();
    let len = usize::try_from(size).map_err(|_| FrameError::TooLarge(i64::from(size), max))?;
    if len > max {
        return Err(FrameError::TooLarge(i64::from(size), max));
    }
    read_body(stream, len, deadline, limits).map(Some)
}

/// The `len` bytes of a frame's body, reserved as they arrive, before `deadline`. Not inlined,
/// so that its buffer for the first bytes is no part of the frame an idle connection sleeps in.
#[inline(never)]
fn read_body(
    stream: &mut impl Source,
    len: usize,
    deadline: Instant,
    limits: &Arc<Limits>,
) -> Result<(Bytes, Reservation)> {
    let mut reservation = limits.nothing();
    let mut body: Vec<u8> = Vec::new();
    if len > 0 {
        // Nothing is reserved until the body's first bytes are there.
        let mut first = [0u8; FIRST_ROOM];
        let room = len.min(FIRST_ROOM);
        let got = read_some(stream, &mut first[..room], deadline, limits)?;
        if !limits.grow(&mut reservation, room, deadline) {
            return Err(FrameError::TooSlow(limits.request_read_timeout));
        }
        body.reserve_exact(room);
        body.extend_from_slice(&first[..got]);
    }
    while body.len() < len {
        if body.len() == body.capacity() {
            let room = (body.capacity() * 2).max(FIRST_ROOM).min(len);
            let more = room - body.capacity();
            if !limits.grow(&mut reservation, more, deadline) {
                return Err(FrameError::TooSlow(limits.request_read_timeout));
            }
            body.reserve_exact(more);
        }
        let until = body.capacity().min(len);
        fill_until(stream, &mut body, until, deadline, limits)?;
    }
    Ok((Bytes::from(body), reservation))
}

/// Reads into `body` until it holds `until` bytes (no more than its capacity), before
/// `deadline`. The room is read into as it is, not zeroed first ([`Source::fill`]): zeroing a
/// frame's buffer before reading over it was 2.5-4 % of the gateway's CPU under `kcat -P`.
fn fill_until(
    stream: &mut impl Source,
    body: &mut Vec<u8>,
    until: usize,
    deadline: Instant,
    limits: &Limits,
) -> Result<()> {
    while body.len() < until {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FrameError::TooSlow(limits.request_read_timeout));
        }
        stream.set_read_timeout(left)?;
        match stream.fill(body, until - body.len()) {
            Ok(_) if body.len() < until => {
                return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted || timed_out(&e) => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(())
}

/// Whether `error` is a read timeout passing.
fn timed_out(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Fills `buf` before `deadline`.
fn read_until(
    stream: &mut impl Source,
    mut buf: &mut [u8],
    deadline: Instant,
    limits: &Limits,
) -> Result<()> {
    while !buf.is_empty() {
        let got = read_some(stream, buf, deadline, limits)?;
        buf = &mut buf[got..];
    }
    Ok(())
}

/// Reads at least one byte into `buf` before `deadline`; how many.
fn read_some(
    stream: &mut impl Source,
    buf: &mut [u8],
    deadline: Instant,
    limits: &Limits,
) -> Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FrameError::TooSlow(limits.request_read_timeout));
        }
        stream.set_read_timeout(left)?;
        match stream.read(buf) {
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted || timed_out(&e) => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
}

/// Decodes a frame's header and body.
///
/// # Errors
/// [`FrameError::TooShort`], [`FrameError::UnknownApi`], [`FrameError::UnsupportedVersion`]
/// (an API this door does not list in `ApiVersions`, or not at this version) and
/// [`FrameError::Decode`].
pub fn decode(mut frame: Bytes) -> Result<Incoming> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|()| FrameError::UnknownApi(key))?;
    let Some(range) = apis::supported(api) else {
        return Err(FrameError::UnknownApi(key));
    };
    if !range.contains(&version) {
        if api == ApiKey::ApiVersions && version > *range.end() {
            return Ok(Incoming::ApiVersionsTooNew(correlation_id));
        }
        return Err(FrameError::UnsupportedVersion { api: apis::name(api), version });
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| FrameError::Decode(format!("{e:#}")))?;
    let body = RequestKind::decode(api, &mut frame, version)
        .map_err(|e| FrameError::Decode(format!("{e:#}")))?;
    // Bytes after the body are ignored, as Kafka ignores them: librdkafka 2.1 and later send
    // `Metadata` v12 with three bytes more than its schema holds.
    Ok(Incoming::Request(Box::new(Request {
        api,
        version,
        correlation_id,
        client_id: header.client_id.map(|id| id.to_string()),
        body,
    })))
}

/// Writes `response` to `stream` as the answer to a request of `api` at `version` with
/// `correlation_id`: size, response header, body.
///
/// # Errors
/// [`FrameError::Encode`] when the response does not encode at that version, and
/// [`FrameError::Io`] when the write fails.
pub fn write_response(
    stream: &mut impl Write,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<()> {
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0u8; 4]);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, api.response_header_version(version))
        .map_err(|e| FrameError::Encode(format!("{e:#}")))?;
    response.encode(&mut buf, version).map_err(|e| FrameError::Encode(format!("{e:#}")))?;
    let size = i32::try_from(buf.len() - 4)
        .map_err(|_| FrameError::Encode(format!("a response of {} bytes", buf.len())))?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    stream.write_all(&buf)?;
    Ok(())
}

/// The answer to an `ApiVersions` at a version this door does not speak: version 0,
/// `UNSUPPORTED_VERSION`, and the versions it does speak.
pub fn api_versions_too_new() -> ResponseKind {
    let mut response: ApiVersionsResponse = apis::api_versions();
    response.error_code = kafka_protocol::ResponseError::UnsupportedVersion.code();
    ResponseKind::ApiVersions(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that gives at most `step` bytes a read, then the end.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Source for Trickle {
        fn set_read_timeout(&mut self, _timeout: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    /// A frame of `body`, cut to `keep` bytes of it.
    fn trickle(body: &[u8], keep: usize, step: usize) -> Trickle {
        let mut bytes = i32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        bytes.extend_from_slice(&body[..keep]);
        Trickle { bytes, at: 0, step }
    }

    #[test]
    fn a_frame_read_in_small_pieces_comes_whole_with_no_more_reserved_than_its_buffer() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let limits = Arc::new(Limits::default());
        let mut source = trickle(&body, body.len(), 777);
        let (frame, reservation) = read_frame(&mut source, &limits).unwrap().unwrap();
        assert_eq!(&frame[..], &body[..]);
        // Reserved as the buffer grew: at least the frame, less than twice it.
        assert!(reservation.bytes() >= body.len(), "{}", reservation.bytes());
        assert!(reservation.bytes() < 2 * body.len(), "{}", reservation.bytes());
        assert!(read_frame(&mut source, &limits).unwrap().is_none());
    }

    #[test]
    fn a_frame_cut_short_is_an_error_past_the_first_room_and_within_it() {
        let body = vec![7u8; 3 * FIRST_ROOM];
        let limits = Arc::new(Limits::default());
        for keep in [FIRST_ROOM / 2, 2 * FIRST_ROOM + 1] {
            let mut source = trickle(&body, keep, 1000);
            let read = read_frame(&mut source, &limits);
            assert!(matches!(read, Err(FrameError::Io(_))), "{keep}: {read:?}");
        }
    }
}
