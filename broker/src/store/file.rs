//! The file-backed log: each topic a directory of segment files under the data directory
//! (`disk`), read back and checked at start-up (`recovery`).

use super::log::delegate_log;
use super::{DataDir, OpenError, StoreConfig, Topics};

/// A [`super::Log`] kept in files, which survives a restart.
#[derive(Debug)]
pub struct FileLog(Topics<DataDir>);

impl FileLog {
    /// Opens the data directory `config.data_dir` names (see `recovery`): a torn tail is cut and
    /// logged, a damaged file refuses the opening unless `config.repair` sets it aside.
    ///
    /// # Errors
    /// [`OpenError::Damaged`] naming every damaged file, having changed nothing; or a
    /// [`super::StoreError::Io`] when the directory cannot be read or written, or when `config`
    /// names no data directory.
    pub fn open(config: StoreConfig) -> Result<FileLog, OpenError> {
        Topics::open(config).map(FileLog)
    }
}

delegate_log!(FileLog);
