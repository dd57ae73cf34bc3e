//! Errors of the Kafka door: a frame that cannot be read ends its connection.

use std::io;

/// Why a Kafka connection was closed: its peer sent something that is not a request this door
/// answers, or the connection failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or was closed mid-frame.
    #[error("connection failed")]
    Io(#[from] io::Error),
    /// No request came for the idle timeout (Kafka's `connections.max.idle.ms`).
    #[error("no request for {0:?}")]
    Idle(std::time::Duration),
    /// A frame did not arrive whole within the request read timeout.
    #[error("a request did not arrive whole within {0:?}")]
    TooSlow(std::time::Duration),
    /// The size prefix is negative or larger than the door accepts.
    #[error("a frame of {0} bytes is over the limit of {1} bytes")]
    TooLarge(i64, usize),
    /// The frame is too short to hold a request header.
    #[error("a frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    /// The API key names no API this door knows.
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    /// The API is known but not at this version (nor listed in `ApiVersions` at it).
    #[error("API {api} version {version} is not supported")]
    UnsupportedVersion {
        /// The API's name.
        api: &'static str,
        /// The version asked for.
        version: i16,
    },
    /// The header or body does not decode at the version it claims.
    #[error("request does not decode: {0}")]
    Decode(String),
    /// A request other than the SASL ones before a SASL login, on a gateway that asks for one.
    #[error("{0} before a SASL login")]
    NotLoggedIn(&'static str),
    /// The SASL login failed; the connection is closed after its answer, as Kafka does.
    #[error("the SASL login failed")]
    LoginFailed,
    /// No native client could be had for the request.
    #[error("no native client: {0}")]
    Busy(String),
    /// A response could not be encoded (a bug, not the peer's doing).
    #[error("response does not encode: {0}")]
    Encode(String),
}

/// The result of reading or answering one frame.
pub type Result<T> = std::result::Result<T, FrameError>;
