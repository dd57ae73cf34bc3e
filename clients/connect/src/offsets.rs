//! Where each source connector has got to, kept in one file (connect-standalone's
//! `offset.storage.file.filename`): a JSON object of positions by connector name, replaced
//! whole at each change (written beside, flushed, renamed over), so a crash leaves the old
//! file or the new one, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A file source's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceOffset {
    /// The file read (a position means nothing in another one).
    pub file: String,
    /// The bytes read and appended to the topic.
    pub position: u64,
}

/// The offsets file and what it holds.
#[derive(Debug)]
pub struct Offsets {
    /// The file.
    path: PathBuf,
    /// Its contents.
    map: Mutex<BTreeMap<String, SourceOffset>>,
}

impl Offsets {
    /// Opens `path`; a file that is not there is an empty one.
    ///
    /// # Errors
    /// The file cannot be read, or is not an offsets file.
    pub fn open(path: &Path) -> anyhow::Result<Offsets> {
        let map = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: not an offsets file: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        Ok(Offsets { path: path.to_owned(), map: Mutex::new(map) })
    }

    /// The position stored for connector `name`.
    pub fn get(&self, name: &str) -> Option<SourceOffset> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// Stores `offset` for connector `name`, durably.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn store(&self, name: &str, offset: SourceOffset) -> std::io::Result<()> {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(name.to_owned(), offset);
        let bytes = serde_json::to_vec_pretty(&*map).map_err(std::io::Error::other)?;
        let mut beside = self.path.clone().into_os_string();
        beside.push(".tmp");
        let beside = PathBuf::from(beside);
        let mut file = std::fs::File::create(&beside)?;
        file.write_all(&bytes)?;
        file.sync_data()?;
        std::fs::rename(&beside, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connect.offsets");
        let offsets = Offsets::open(&path).unwrap();
        assert_eq!(offsets.get("a"), None);
        offsets.store("a", SourceOffset { file: "in.txt".into(), position: 42 }).unwrap();
        let again = Offsets::open(&path).unwrap();
        assert_eq!(again.get("a").unwrap().position, 42);
        std::fs::write(&path, b"garbage").unwrap();
        assert!(Offsets::open(&path).is_err());
    }
}
