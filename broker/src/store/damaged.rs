//! Damaged files found at start-up: how they are reported, and how `--repair` sets them aside.
//!
//! A broker that finds a file it cannot trust in its data directory (a segment with a damaged
//! record that whole records follow, a `topic.meta` or group state that does not decode, a file
//! it never writes) refuses to start, names every such file with what is wrong, and changes
//! nothing. Started with `--repair`, it moves each one into a folder of its own under
//! `DATA_DIR/damaged/`, keeping the path it had below `DATA_DIR` (and for a segment it must cut,
//! a copy of the whole file), logs one line per file, and starts without them.
//!
//! ```text
//! DATA_DIR/damaged/<n>/topics/<dir>/...   what the n-th repair set aside, n = 1, 2, ...
//! DATA_DIR/damaged/<n>/groups/...
//! ```

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::files::sync_dir;

/// The folder of the data directory that `--repair` sets files aside in.
const DAMAGED_DIR: &str = "damaged";

/// One file (or directory) the broker cannot trust, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it, as a phrase that follows the path: "is damaged at byte 40 ...".
    pub problem: String,
}

impl fmt::Display for DamagedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path.display(), self.problem)
    }
}

/// Every damaged file found while opening a data directory, for an error that refuses to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageReport {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The files, in the order found.
    pub files: Vec<DamagedFile>,
}

impl fmt::Display for DamageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (count, it, them) = match self.files.len() {
            1 => ("a damaged file".to_owned(), "it", "it"),
            n => (format!("{n} damaged files"), "each", "them"),
        };
        write!(f, "{} holds {count}; nothing was changed:", self.data_dir.display())?;
        for file in &self.files {
            write!(f, "\n  {file}")?;
        }
        write!(
            f,
            "\nRestore {them} from a backup, or start the broker once with --repair to move {it} \
             away into {} (keeping a copy of anything it cuts) and start without {them}.",
            self.data_dir.join(DAMAGED_DIR).join("<n>").display()
        )
    }
}

/// Where one run of `--repair` sets files aside: `DATA_DIR/damaged/<n>/`, made when the first
/// file is set aside, with `n` one more than any earlier run's.
#[derive(Debug, Clone)]
pub struct SetAside {
    /// The data directory.
    data_dir: PathBuf,
    /// This run's folder, once made.
    run: Option<PathBuf>,
}

impl SetAside {
    /// Sets files of `data_dir` aside into `run`, or into a new folder when `run` is `None`.
    pub fn new(data_dir: &Path, run: Option<PathBuf>) -> SetAside {
        SetAside { data_dir: data_dir.to_path_buf(), run }
    }

    /// This run's folder, if anything was set aside.
    pub fn run(&self) -> Option<&Path> {
        self.run.as_deref()
    }

    /// Moves `target` (a file or a directory: `why`'s file or the directory holding it) aside,
    /// and logs it with `why`.
    ///
    /// # Errors
    /// The folder cannot be made or the file cannot be moved; it is then where it was.
    pub fn move_aside(&mut self, target: &Path, why: &DamagedFile) -> io::Result<PathBuf> {
        let to = self.destination(target)?;
        fs::rename(target, &to)?;
        if let Some(parent) = target.parent() {
            sync_dir(parent)?;
        }
        tracing::warn!("set aside {} as {}: {why}", target.display(), to.display());
        Ok(to)
    }

    /// Copies `file` aside whole, flushed, before the caller cuts it; logs it with `problem`.
    ///
    /// # Errors
    /// The folder cannot be made or the copy cannot be written.
    pub fn copy_aside(&mut self, file: &DamagedFile) -> io::Result<PathBuf> {
        let to = self.destination(&file.path)?;
        fs::copy(&file.path, &to)?;
        fs::File::open(&to)?.sync_all()?;
        tracing::warn!("set aside a copy of {} as {}: {file}", file.path.display(), to.display());
        Ok(to)
    }

    /// Where `path` goes: its path below the data directory, below this run's folder.
    fn destination(&mut self, path: &Path) -> io::Result<PathBuf> {
        let run = match &self.run {
            Some(run) => run.clone(),
            None => {
                let run = self.make_run()?;
                self.run = Some(run.clone());
                run
            }
        };
        let relative = path.strip_prefix(&self.data_dir).map_or_else(
            |_| PathBuf::from(path.file_name().unwrap_or_default()),
            Path::to_path_buf,
        );
        let to = run.join(relative);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        Ok(to)
    }

    /// Makes `damaged/<n>/` with `n` one more than the highest there.
    fn make_run(&self) -> io::Result<PathBuf> {
        let damaged = self.data_dir.join(DAMAGED_DIR);
        fs::create_dir_all(&damaged)?;
        let mut highest = 0u64;
        for entry in fs::read_dir(&damaged)? {
            let name = entry?.file_name();
            if let Some(n) = name.to_str().and_then(|n| n.parse::<u64>().ok()) {
                highest = highest.max(n);
            }
        }
        let run = damaged.join((highest + 1).to_string());
        fs::create_dir(&run)?;
        sync_dir(&damaged)?;
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_gets_a_new_folder_and_keeps_the_paths() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path();
        fs::create_dir_all(data.join("topics/t")).unwrap();
        fs::write(data.join("topics/t/a"), b"a").unwrap();
        fs::write(data.join("topics/t/b"), b"b").unwrap();
        let damaged = |name: &str| DamagedFile { path: data.join(name), problem: "is bad".into() };

        let mut first = SetAside::new(data, None);
        assert_eq!(first.run(), None);
        let moved = first.move_aside(&data.join("topics/t/a"), &damaged("topics/t/a")).unwrap();
        assert_eq!(moved, data.join("damaged/1/topics/t/a"));
        assert!(!data.join("topics/t/a").exists());
        let mut second = SetAside::new(data, None);
        let copied = second.copy_aside(&damaged("topics/t/b")).unwrap();
        assert_eq!(copied, data.join("damaged/2/topics/t/b"));
        assert_eq!(fs::read(data.join("topics/t/b")).unwrap(), b"b");
        assert_eq!(fs::read(copied).unwrap(), b"b");
    }

    #[test]
    fn the_report_names_every_file_and_the_way_out() {
        let report = DamageReport {
            data_dir: PathBuf::from("d"),
            files: vec![DamagedFile { path: PathBuf::from("d/x"), problem: "is bad".into() }],
        };
        let text = report.to_string();
        assert!(text.contains("d/x is bad"), "{text}");
        assert!(text.contains("--repair") && text.contains("move it away"), "{text}");
    }
}
