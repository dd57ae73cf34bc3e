//! CURVE keys: Z85 text, the broker's secret key file, and new key pairs.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::AuthError;

/// The length of a CURVE key in Z85 text.
pub const Z85_KEY_CHARS: usize = 40;

/// The characters of Z85 (ZeroMQ RFC 32), in the order of their values.
const Z85_ALPHABET: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// A 32-byte CURVE key.
pub type Key = [u8; 32];

/// Decodes a CURVE key written in Z85: exactly 40 characters of its alphabet.
///
/// # Errors
/// The reason, as a sentence part: wrong length or a character outside Z85.
pub fn decode_z85(text: &str) -> Result<Key, String> {
    let bytes = text.as_bytes();
    if bytes.len() != Z85_KEY_CHARS {
        return Err(format!(
            "a CURVE key is {Z85_KEY_CHARS} characters of Z85, not {}",
            text.chars().count()
        ));
    }
    let mut key = [0u8; 32];
    for (chunk, out) in bytes.chunks(5).zip(key.chunks_mut(4)) {
        let mut value: u64 = 0;
        for &c in chunk {
            let digit = Z85_ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or_else(|| format!("{:?} is not a Z85 character", char::from(c)))?;
            value = value * 85 + digit as u64;
        }
        let value = u32::try_from(value).map_err(|_| "the key is not valid Z85".to_owned())?;
        out.copy_from_slice(&value.to_be_bytes());
    }
    Ok(key)
}

/// Encodes a CURVE key as 40 characters of Z85.
pub fn encode_z85(key: &Key) -> String {
    let mut text = String::with_capacity(Z85_KEY_CHARS);
    for chunk in key.chunks(4) {
        let mut value = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let mut digits = [0u8; 5];
        for digit in digits.iter_mut().rev() {
            *digit = Z85_ALPHABET[(value % 85) as usize];
            value /= 85;
        }
        text.extend(digits.iter().map(|&d| char::from(d)));
    }
    text
}

/// The broker's CURVE key pair.
#[derive(Clone)]
pub struct ServerKeys {
    /// The secret key, which never leaves the broker.
    pub secret: Key,
    /// The public key, which clients give as the server key.
    pub public: Key,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerKeys {{ public: {} }}", encode_z85(&self.public))
    }
}

impl ServerKeys {
    /// Reads the secret key from the first line of `path` (Z85, as `zmq_curve_keypair` and
    /// `broker keygen` write it) and derives the public key.
    ///
    /// # Errors
    /// The file cannot be read, or its first line is not a key.
    pub fn read(path: &Path) -> Result<ServerKeys, AuthError> {
        let bad = |line: usize, reason: String| AuthError::File {
            file: path.display().to_string(),
            line,
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(0, e.to_string()))?;
        warn_if_others_may_read(path);
        let first = text.lines().next().unwrap_or("").trim();
        let secret = decode_z85(first).map_err(|reason| bad(1, reason))?;
        let public = public_of(&secret).map_err(|reason| bad(1, reason))?;
        Ok(ServerKeys { secret, public })
    }
}

/// Warns when users other than the file's owner (and its group) may read the secret key file
/// at `path`: whoever reads it can pose as the broker. `broker keygen` writes it with mode 600.
fn warn_if_others_may_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else { return };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        tracing::warn!(
            file = %path.display(),
            mode = format_args!("{mode:o}"),
            "the CURVE secret key file can be read by every user of this machine, and whoever \
             reads it can pose as this broker: chmod 600 it"
        );
    }
}

extern "C" {
    /// libzmq's `zmq_curve_public` (since 4.2), which zmq-sys declares but does not export.
    fn zmq_curve_public(
        z85_public_key: *mut std::ffi::c_char,
        z85_secret_key: *const std::ffi::c_char,
    ) -> std::ffi::c_int;
}

/// The public key of a CURVE secret key, computed by libzmq (`zmq_curve_public`).
///
/// # Errors
/// libzmq was built without CURVE.
pub fn public_of(secret: &Key) -> Result<Key, String> {
    let secret_text = CString::new(encode_z85(secret)).map_err(|e| e.to_string())?;
    let mut public_text = [0u8; Z85_KEY_CHARS + 1];
    // SAFETY: both buffers are 41 bytes, NUL-terminated for the input, as the call requires.
    let rc = unsafe {
        zmq_curve_public(public_text.as_mut_ptr().cast::<std::ffi::c_char>(), secret_text.as_ptr())
    };
    if rc != 0 {
        return Err("this libzmq has no CURVE support (it was built without libsodium)".into());
    }
    let text = std::str::from_utf8(&public_text[..Z85_KEY_CHARS]).map_err(|e| e.to_string())?;
    decode_z85(text)
}

/// Makes a new key pair and writes it to `path`, which must not exist: the secret key on the
/// first line, the public key on the second, readable by the owner only. Returns the public key.
///
/// # Errors
/// libzmq has no CURVE, or the file exists or cannot be written.
pub fn keygen(path: &Path) -> Result<Key, AuthError> {
    let bad =
        |reason: String| AuthError::File { file: path.display().to_string(), line: 0, reason };
    if !zmq::has("curve").unwrap_or(false) {
        return Err(bad("this libzmq has no CURVE support".into()));
    }
    let pair = zmq::CurveKeyPair::new().map_err(|e| bad(e.to_string()))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    writeln!(file, "{}\n{}", encode_z85(&pair.secret_key), encode_z85(&pair.public_key))
        .and_then(|()| file.sync_all())
        .map_err(|e| bad(e.to_string()))?;
    Ok(pair.public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z85_round_trips_and_matches_the_rfc_example() {
        // RFC 32's test vector: 8 bytes encode to "HelloWorld".
        let bytes = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&bytes);
        let text = encode_z85(&key);
        assert!(text.starts_with("HelloWorld"));
        assert_eq!(decode_z85(&text), Ok(key));
    }

    #[test]
    fn bad_z85_is_refused_with_a_reason() {
        assert!(decode_z85("short").unwrap_err().contains("40 characters"));
        assert!(decode_z85(&"~".repeat(40)).unwrap_err().contains("not a Z85 character"));
        // Five digits above 2^32 - 1.
        assert!(decode_z85(&"#".repeat(40)).is_err());
    }

    #[test]
    fn the_public_key_is_derived_as_libzmq_pairs_it() {
        let pair = zmq::CurveKeyPair::new().expect("this libzmq has CURVE");
        assert_eq!(public_of(&pair.secret_key), Ok(pair.public_key));
    }
}
