//! File operations the store and the groups share: safe file names, flushing a directory, and
//! replacing a file in one step.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// FNV-1a, 64 bits: stable across versions and platforms, unlike the standard library's hasher.
pub fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    bytes
        .into_iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The part of a file name that people can read, made from `name`: its ASCII letters, digits,
/// `-`, `_` and any of `also` in lower case, other ASCII characters and white space as `_`, the
/// rest left out, at most `most` characters. Never `/`, `\`, `.` or `..` unless `also` allows
/// `.`; callers append a hash of the exact name so that names differing only in what is lost
/// here still get files of their own.
pub fn readable(name: &str, also: &[char], most: usize) -> String {
    name.chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            _ if also.contains(&c) => Some(c),
            _ if c.is_whitespace() || c.is_ascii() => Some('_'),
            _ => None,
        })
        .take(most)
        .collect()
}

/// Flushes a directory's entries (new, renamed or removed files) to disk.
///
/// # Errors
/// The directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces file `name` in `dir` with `bytes` in one step: written to `writing` beside it,
/// flushed when `sync`, then renamed over it, so that a crash leaves the old file or the new
/// one, never a mix. The directory is not flushed: callers that replace several files flush it
/// once.
///
/// # Errors
/// Any failed file operation; `writing` is then removed again and the old file is as it was.
pub fn replace(dir: &Path, name: &str, writing: &str, bytes: &[u8], sync: bool) -> io::Result<()> {
    let writing = dir.join(writing);
    let written = File::create(&writing).and_then(|mut file| {
        file.write_all(bytes)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    });
    let renamed = written.and_then(|()| fs::rename(&writing, dir.join(name)));
    if renamed.is_err() {
        let _ = fs::remove_file(&writing);
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_its_published_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn readable_names_keep_only_safe_characters() {
        assert_eq!(readable("Hola mundo/../ñ", &[], 48), "hola_mundo____");
        assert_eq!(readable("a.b", &['.'], 48), "a.b");
        assert_eq!(readable("a.b", &[], 48), "a_b");
        assert_eq!(readable(&"x".repeat(100), &[], 24).len(), 24);
    }

    #[test]
    fn a_replaced_file_holds_the_new_bytes_and_nothing_is_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"old").unwrap();
        replace(dir.path(), "f", "f.new", b"new", true).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"new");
        assert!(!dir.path().join("f.new").exists());
        let missing = dir.path().join("missing");
        assert!(replace(&missing, "f", "f.new", b"x", false).is_err());
    }
}
