//! The users file (`broker --auth FILE`): each user's credential and permissions, in TOML.
//!
//! ```toml
//! [users.alice]
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # from `broker hash-password`
//! topics = { produce = ["orders"], consume = ["orders", "logs.*"] }
//! groups = { consume = ["billing"] }
//!
//! [users.till-7]
//! curve_public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
//! topics = { produce = ["orders"], admin = ["orders"] }
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::Deserialize;
use toml::Spanned;

use super::keys::{decode_z85, Key};
use super::permissions::{Grants, Pattern, Permissions};
use super::AuthError;

/// The most bytes of a user name: PLAIN (ZeroMQ RFC 24) sends it with a one-byte length.
pub const MAX_USER_NAME_BYTES: usize = 255;

/// One user.
#[derive(Debug, Clone)]
pub struct User {
    /// The name, sent by PLAIN clients and shown as the holder of the user's claims.
    pub name: String,
    /// The password's hash in the PHC string format, if the user may log in with PLAIN.
    password_hash: Option<String>,
    /// The public key, if the user may log in with CURVE.
    pub curve_key: Option<Key>,
    /// What the user may do.
    pub permissions: Permissions,
    /// How many claims the user may hold at once (`max_claims`); no limit when absent.
    pub max_claims: Option<u32>,
}

impl User {
    /// Whether `password` is this user's password.
    pub fn password_matches(&self, password: &[u8]) -> bool {
        let Some(hash) = &self.password_hash else { return false };
        // Checked when the file was read, so parsing again cannot fail.
        PasswordHash::new(hash).is_ok_and(|hash| verify(password, &hash))
    }
}

thread_local! {
    /// The Argon2 memory of this thread's password checks, kept from one check to the next
    /// and grown to the largest cost met (bounded by [`MAX_MEMORY_KIB`]). A fresh allocation per
    /// check, as `Argon2::verify_password` makes, left its 19 MiB resident after each check:
    /// glibc's allocator raises its mmap threshold past a freed block of that size and keeps
    /// the next ones on its heap, and a login flood took the broker from 20 MB to 377 MB.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Whether `password` hashes to `hash` (an Argon2 PHC string), computed in this thread's
/// [`MEMORY`]; the outputs are compared in constant time.
fn verify(password: &[u8], hash: &PasswordHash) -> bool {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else { return false };
    let Ok(params) = Params::try_from(hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else { return false };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let blocks = params.block_count();
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params);
    let hashed = MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        argon2.hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
    });
    hashed.is_ok() && Output::new(&out).is_ok_and(|output| &output == expected)
}

/// Every user of the broker, found by name or by CURVE key.
#[derive(Debug, Clone, Default)]
pub struct Users {
    /// By position: a [`UserId`] is an index here.
    users: Vec<User>,
    /// Position by name.
    by_name: HashMap<String, usize>,
    /// Position by CURVE public key.
    by_key: HashMap<Key, usize>,
}

/// A user, by position in [`Users`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserId(pub usize);

impl Users {
    /// Reads and checks the users file at `path`.
    ///
    /// # Errors
    /// The file cannot be read, is not TOML of the expected shape, or holds a bad name, hash,
    /// key or pattern: the error names the file, the line and the reason.
    pub fn read(path: &Path) -> Result<Users, AuthError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::File {
            file: file.clone(),
            line: 0,
            reason: e.to_string(),
        })?;
        Users::parse(&text).map_err(|(line, reason)| AuthError::File { file, line, reason })
    }

    /// Parses the text of a users file.
    ///
    /// # Errors
    /// The line (from 1) and the reason.
    pub fn parse(text: &str) -> Result<Users, (usize, String)> {
        let line_of = |span: Range<usize>| {
            text.get(..span.start).map_or(0, |before| before.matches('\n').count() + 1)
        };
        let raw: RawFile = toml::from_str(text)
            .map_err(|e| (e.span().map_or(0, line_of), e.message().trim().to_owned()))?;
        let mut users = Users::default();
        for (name, raw_user) in raw.users {
            let at = line_of(raw_user.span());
            let raw_user = raw_user.into_inner();
            if name.is_empty() || name.len() > MAX_USER_NAME_BYTES {
                return Err((at, format!("a user name has 1 to {MAX_USER_NAME_BYTES} bytes")));
            }
            if name.chars().any(char::is_control) {
                return Err((at, format!("user name {name:?} holds a control character")));
            }
            let password_hash = match raw_user.password_hash {
                Some(hash) => {
                    let line = line_of(hash.span());
                    let hash = hash.into_inner();
                    let parsed = PasswordHash::new(&hash).map_err(|e| {
                        (line, format!("password_hash of {name:?} is not a PHC string: {e}"))
                    })?;
                    check_cost(&parsed)
                        .map_err(|e| (line, format!("password_hash of {name:?} {e}")))?;
                    Some(hash)
                }
                None => None,
            };
            let curve_key = match raw_user.curve_public_key {
                Some(key) => {
                    let line = line_of(key.span());
                    let key = decode_z85(key.get_ref().trim())
                        .map_err(|e| (line, format!("curve_public_key of {name:?}: {e}")))?;
                    Some(key)
                }
                None => None,
            };
            if password_hash.is_none() && curve_key.is_none() {
                return Err((
                    at,
                    format!("user {name:?} has neither password_hash nor curve_public_key"),
                ));
            }
            let permissions = Permissions {
                topics: grants(raw_user.topics, &line_of)?,
                groups: grants(raw_user.groups, &line_of)?,
            };
            let index = users.users.len();
            if let Some(key) = curve_key {
                if let Some(&other) = users.by_key.get(&key) {
                    let other = &users.users[other].name;
                    return Err((
                        at,
                        format!("users {other:?} and {name:?} have the same curve_public_key"),
                    ));
                }
                users.by_key.insert(key, index);
            }
            users.by_name.insert(name.clone(), index);
            let max_claims = raw_user.max_claims;
            users.users.push(User { name, password_hash, curve_key, permissions, max_claims });
        }
        Ok(users)
    }

    /// The user called `name`.
    pub fn by_name(&self, name: &str) -> Option<UserId> {
        self.by_name.get(name).copied().map(UserId)
    }

    /// The user whose CURVE public key is `key`.
    pub fn by_key(&self, key: &[u8]) -> Option<UserId> {
        let key: &Key = key.try_into().ok()?;
        self.by_key.get(key).copied().map(UserId)
    }

    /// The user at `id`.
    pub fn get(&self, id: UserId) -> Option<&User> {
        self.users.get(id.0)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Spends the time a wrong password's check takes, for a login naming no user: checks
    /// `password` against the first password hash of the file (same cost parameters as the
    /// users' own, from `broker hash-password`), whatever the outcome.
    pub fn check_dummy(&self, password: &[u8]) {
        if let Some(hash) = self.users.iter().find_map(|u| u.password_hash.as_deref()) {
            if let Ok(hash) = PasswordHash::new(hash) {
                let _ = verify(password, &hash);
            }
        }
    }

    /// The names of the users who have no password.
    pub fn without_password(&self) -> impl Iterator<Item = &str> {
        self.users.iter().filter(|u| u.password_hash.is_none()).map(|u| u.name.as_str())
    }

    /// The names of the users who have no CURVE key.
    pub fn without_key(&self) -> impl Iterator<Item = &str> {
        self.users.iter().filter(|u| u.curve_key.is_none()).map(|u| u.name.as_str())
    }
}

/// The largest Argon2 memory cost a users file may ask for, in KiB: 256 MiB. Each check runs on
/// one of the ZAP handler's two threads, so a costlier hash makes every login slow, and a flood
/// of them costly.
const MAX_MEMORY_KIB: u32 = 256 * 1024;
/// The largest Argon2 time cost (passes) and parallelism a users file may ask for.
const MAX_PASSES: u32 = 16;
/// The largest Argon2 parallelism.
const MAX_LANES: u32 = 16;

/// Checks that `hash` is an Argon2 hash of a cost within the bounds above: whatever else a PHC
/// string names could not be checked, and an unbounded cost lets the file stall every login.
fn check_cost(hash: &PasswordHash) -> Result<(), String> {
    if !hash.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "is a {} hash; the broker checks Argon2 hashes (broker hash-password makes one)",
            hash.algorithm
        ));
    }
    let params = argon2::Params::try_from(hash).map_err(|e| format!("has bad parameters: {e}"))?;
    let (memory, passes, lanes) = (params.m_cost(), params.t_cost(), params.p_cost());
    if memory > MAX_MEMORY_KIB || passes > MAX_PASSES || lanes > MAX_LANES {
        return Err(format!(
            "costs m={memory} KiB, t={passes}, p={lanes}; the limits are m={MAX_MEMORY_KIB}, \
             t={MAX_PASSES}, p={MAX_LANES}"
        ));
    }
    Ok(())
}

/// The rights of one kind of name, checked.
fn grants(
    raw: Option<RawGrants>,
    line_of: &dyn Fn(Range<usize>) -> usize,
) -> Result<Grants, (usize, String)> {
    let Some(raw) = raw else { return Ok(Grants::default()) };
    let patterns = |list: Vec<Spanned<String>>| {
        list.into_iter()
            .map(|p| Pattern::parse(p.get_ref()).map_err(|reason| (line_of(p.span()), reason)))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Grants {
        produce: patterns(raw.produce)?,
        consume: patterns(raw.consume)?,
        admin: patterns(raw.admin)?,
    })
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Users by name.
    #[serde(default)]
    users: BTreeMap<String, Spanned<RawUser>>,
}

/// One user as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    /// An Argon2 (or other PHC) password hash.
    password_hash: Option<Spanned<String>>,
    /// A Z85 CURVE public key.
    curve_public_key: Option<Spanned<String>>,
    /// Rights on topics.
    topics: Option<RawGrants>,
    /// Rights on groups.
    groups: Option<RawGrants>,
    /// How many claims the user may hold at once.
    max_claims: Option<u32>,
}

/// Rights as written: lists of patterns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    /// Patterns that may be appended to.
    #[serde(default)]
    produce: Vec<Spanned<String>>,
    /// Patterns that may be read.
    #[serde(default)]
    consume: Vec<Spanned<String>>,
    /// Patterns that may be created, deleted or reset.
    #[serde(default)]
    admin: Vec<Spanned<String>>,
}

/// Hashes `password` for a users file (`broker hash-password`): Argon2id with a random salt.
///
/// # Errors
/// The hash could not be made (no randomness).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    Argon2::default().hash_password(password).map(|h| h.to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_reads_and_passwords_check() {
        let hash = hash_password(b"s3cret").unwrap();
        let text = format!(
            "[users.alice]\npassword_hash = \"{hash}\"\ntopics = {{ produce = [\"orders\"], consume = [\"logs.*\"] }}\n\n[users.bob]\ncurve_public_key = \"{}\"\n",
            super::super::keys::encode_z85(&[7; 32])
        );
        let users = Users::parse(&text).unwrap();
        let alice = users.get(users.by_name("alice").unwrap()).unwrap();
        assert!(alice.password_matches(b"s3cret"));
        assert!(!alice.password_matches(b"s3cre"));
        assert!(alice
            .permissions
            .topics
            .allows(super::super::permissions::Right::Consume, "logs.a"));
        assert_eq!(users.by_key(&[7; 32]), users.by_name("bob"));
        assert_eq!(users.without_key().collect::<Vec<_>>(), vec!["alice"]);
    }

    #[test]
    fn bad_files_name_the_line_and_the_reason() {
        let cases = [
            ("[users.a]\npassword_hash = \"plain text\"\n", 2, "not a PHC string"),
            ("[users.a]\ncurve_public_key = \"abc\"\n", 2, "40 characters"),
            ("[users.a]\ncurve_public_key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\ntopics = { consume = [\n\"ok\",\n\"a*b\"] }\n", 5, "`*`"),
            ("[users.a]\n", 1, "neither password_hash nor curve_public_key"),
            ("[users.a]\npasword_hash = \"x\"\n", 2, "unknown field"),
            ("[users.a\n", 1, ""),
        ];
        for (text, line, reason) in cases {
            let (got_line, got_reason) = Users::parse(text).unwrap_err();
            assert_eq!(got_line, line, "{text:?}: {got_reason}");
            assert!(got_reason.contains(reason), "{text:?}: {got_reason}");
        }
    }
}
