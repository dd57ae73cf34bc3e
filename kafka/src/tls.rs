//! TLS on the Kafka listener (`--tls-cert`, `--tls-key`, and `--tls-client-ca` for client
//! certificates): Kafka's `SSL` and, with logins, `SASL_SSL` listeners, so that a tutorial's
//! `security.protocol=SSL` works with only the address and the CA file changed.
//!
//! [`Conn`] is a connection as the rest of the gateway sees it, plain or TLS: it reads and
//! writes bytes and sets its read timeout, and nothing above it knows which it is.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::frame::Source;

/// The TLS settings of a listener: its certificate chain and key (PEM files) and, for mutual
/// TLS, the CA whose certificates clients must present.
///
/// # Errors
/// A file that cannot be read, holds no certificate or key, or a key that does not fit.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("--tls-cert {}: cannot read a PEM certificate", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("--tls-cert {}: no certificate in the file", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--tls-key {}: cannot read a PEM private key", key.display()))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| {
                    format!("--tls-client-ca {}: cannot read a PEM certificate", path.display())
                })?;
            for ca in certs {
                roots
                    .add(ca)
                    .with_context(|| format!("--tls-client-ca {}: not a CA", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("--tls-client-ca {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .context("--tls-cert and --tls-key do not make a certificate and its key")?;
    Ok(Arc::new(config))
}

/// A Kafka connection, plain or TLS.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, its handshake done.
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Conn {
    /// `stream` as it is, or with TLS when `tls` is given: the handshake is made here, within
    /// `limit`.
    ///
    /// # Errors
    /// The handshake failed (a client that does not speak TLS, or trusts not the certificate,
    /// or has none the client CA signed) or took longer than `limit`.
    pub fn accept(
        stream: TcpStream,
        tls: Option<&Arc<ServerConfig>>,
        limit: Duration,
    ) -> io::Result<Conn> {
        let Some(config) = tls else { return Ok(Conn::Plain(stream)) };
        let mut session = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        let mut stream = stream;
        let deadline = Instant::now() + limit;
        while session.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the TLS handshake took too long",
                ));
            }
            stream.set_read_timeout(Some(left))?;
            let (read, _) = session.complete_io(&mut stream)?;
            if read == 0 && session.is_handshaking() && !session.wants_write() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(Conn::Tls(Box::new(StreamOwned::new(session, stream))))
    }

    /// The TCP connection underneath.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(stream) => stream,
            Conn::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(stream) => stream.read(buf),
            Conn::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(stream) => stream.write(buf),
            Conn::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(stream) => stream.flush(),
            Conn::Tls(tls) => tls.flush(),
        }
    }
}

impl Source for Conn {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        // A zero timeout would mean none.
        self.socket().set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
    }

    fn fill(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        match self {
            // The socket reads into the room as it is (std's own `read_buf`), not zeroed.
            Conn::Plain(stream) => stream.take(limit as u64).read_to_end(buf),
            Conn::Tls(tls) => Read::by_ref(tls.as_mut()).take(limit as u64).read_to_end(buf),
        }
    }
}
