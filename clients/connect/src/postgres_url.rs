//! Where the JDBC sink's database is: `connection.url` in JDBC's form
//! (`jdbc:postgresql://HOST:PORT/DB?sslmode=require`) or libpq's (`postgres://USER@HOST/DB`),
//! the login keys beside it, and TLS as `sslmode` asks (through rustls).

use std::sync::Arc;
use std::time::Duration;

use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long a connection attempt to the database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `sslmode` asks of the connection, as libpq and the PostgreSQL JDBC driver read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// `disable`: plain TCP.
    Disable,
    /// `allow`, `prefer` (the default): TLS when the server offers it, the certificate not
    /// checked.
    Prefer,
    /// `require`: TLS or nothing, the certificate not checked (libpq's and the driver's
    /// meaning: encryption against eavesdropping, not against a server that lies).
    Require,
    /// `verify-ca`, `verify-full`: TLS, the certificate checked against the public CAs and the
    /// host name (both modes check the name here).
    Verify,
}

/// A database to connect to.
#[derive(Clone)]
pub struct Database {
    /// Host, port, database, user and password.
    pub config: postgres::Config,
    /// The TLS asked for.
    pub tls: Tls,
    /// The URL without its password, for messages.
    pub shown: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Database {
    /// Reads `url` (JDBC's or libpq's form); `user` and `password` (`connection.user`,
    /// `connection.password`) win over any in the URL.
    ///
    /// # Errors
    /// What is wrong with the URL.
    pub fn parse(
        url: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<Database, String> {
        let rest = url
            .strip_prefix("jdbc:postgresql://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or_else(|| {
                "expected jdbc:postgresql://HOST:PORT/DATABASE or postgres://USER@HOST:PORT/DATABASE"
                    .to_owned()
            })?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (login, hosts) = match authority.rsplit_once('@') {
            Some((login, hosts)) => (Some(login), hosts),
            None => (None, authority),
        };
        let mut config = postgres::Config::new();
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("connect");
        if hosts.is_empty() {
            return Err("no host".into());
        }
        for host in hosts.split(',') {
            let (name, port) = match host.rsplit_once(':') {
                Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => {
                    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
                    (name, port)
                }
                _ => (host, 5432),
            };
            let name = name.trim_start_matches('[').trim_end_matches(']');
            if name.is_empty() {
                return Err(format!("no host name in {host:?}"));
            }
            config.host(name);
            config.port(port);
        }
        let database = decode(database)?;
        if database.is_empty() {
            return Err("no database name (…/DATABASE)".into());
        }
        config.dbname(&database);
        if let Some(login) = login {
            let (name, secret) = login.split_once(':').unwrap_or((login, ""));
            config.user(&decode(name)?);
            if !secret.is_empty() {
                config.password(decode(secret)?);
            }
        }
        let mut tls = Tls::Prefer;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value)?;
            match key {
                "sslmode" => {
                    tls = match value.as_str() {
                        "disable" => Tls::Disable,
                        "allow" | "prefer" => Tls::Prefer,
                        "require" => Tls::Require,
                        "verify-ca" | "verify-full" => Tls::Verify,
                        other => {
                            return Err(format!(
                                "sslmode={other}: expected disable, allow, prefer, require, \
                                 verify-ca or verify-full"
                            ))
                        }
                    }
                }
                "ssl" if value == "true" && tls == Tls::Prefer => tls = Tls::Require,
                "user" => {
                    config.user(&value);
                }
                "password" => {
                    config.password(value);
                }
                "options" => {
                    config.options(&value);
                }
                // Driver settings with no meaning here (timeouts, prepareThreshold, ...).
                _ => {}
            }
        }
        if let Some(user) = user.filter(|u| !u.is_empty()) {
            config.user(user);
        }
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            config.password(password);
        }
        if config.get_user().is_none() {
            return Err("no user: set connection.user or put one in the URL".into());
        }
        config.ssl_mode(match tls {
            Tls::Disable => SslMode::Disable,
            Tls::Prefer => SslMode::Prefer,
            Tls::Require | Tls::Verify => SslMode::Require,
        });
        let shown = match url.split_once('?') {
            Some((base, _)) => format!("{}?…", hide_password(base)),
            None => hide_password(url),
        };
        Ok(Database { config, tls, shown })
    }

    /// Opens a connection.
    ///
    /// # Errors
    /// The database cannot be reached, refuses the login, or the TLS handshake fails.
    pub fn connect(&self) -> Result<postgres::Client, String> {
        let tls = connector(self.tls).map_err(|e| format!("TLS: {e}"))?;
        self.config
            .connect(tls)
            .map_err(|e| format!("{}: {}", self.shown, crate::jdbc::explain(&e)))
    }
}

/// `user:secret@` with the secret left out.
fn hide_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            let login = &url[start + 3..at];
            match login.split_once(':') {
                Some((user, _)) => format!("{}{user}:…{}", &url[..start + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Percent-decodes a URL part.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(|| format!("bad escape in {text:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in {text:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

/// The TLS connector for `tls`, on ring (which the workspace builds already).
fn connector(tls: Tls) -> Result<MakeRustlsConnect, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let config = match tls {
        Tls::Verify => {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Tls::Disable | Tls::Prefer | Tls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `sslmode=require`: the handshake's signatures are checked, the certificate's issuer and name
/// are not, as libpq and the JDBC driver do in that mode.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jdbc_and_libpq_urls_are_read() {
        let db = Database::parse(
            "jdbc:postgresql://db.example:6543/shop?sslmode=require",
            Some("avnadmin"),
            Some("secret"),
        )
        .unwrap();
        assert_eq!(db.tls, Tls::Require);
        assert_eq!(db.config.get_dbname(), Some("shop"));
        assert_eq!(db.config.get_ports(), &[6543]);
        assert_eq!(db.config.get_user(), Some("avnadmin"));
        let db = Database::parse("postgres://me:p%40ss@localhost/orders", None, None).unwrap();
        assert_eq!(db.config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(db.config.get_ports(), &[5432]);
        assert_eq!(db.shown, "postgres://me:…@localhost/orders");
    }

    #[test]
    fn bad_urls_say_why() {
        assert!(Database::parse("mysql://x/y", Some("u"), None).unwrap_err().contains("expected"));
        assert!(Database::parse("jdbc:postgresql://h:x/db", Some("u"), None).is_err());
        assert!(Database::parse("jdbc:postgresql://h/db?sslmode=maybe", Some("u"), None).is_err());
        assert!(Database::parse("jdbc:postgresql://h/", Some("u"), None).is_err());
        assert!(Database::parse("jdbc:postgresql://h/db", None, None)
            .unwrap_err()
            .contains("user"));
    }
}
