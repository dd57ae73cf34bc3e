//! The flush thread of a store on disk under `--fsync always`: it waits on the disk so that the
//! serving thread does not.
//!
//! The serving thread writes a pass's records into the segment files itself (into the page
//! cache, which is fast), then hands the flush thread a [`Job`]: "make these files and
//! directories durable, and tell me when ticket N is". The thread takes every job queued, one
//! after the other or several at once when they pile up while the disk is busy, and makes their
//! files durable with one call when they are many: `syncfs` on the data directory's file
//! system, one journal commit whatever the number of topics the passes touched, where a
//! `fdatasync` per file costs one each (16 files: 5 ms against 53 ms on the development VM).
//! One or two files get their own `fdatasync`, which touches nothing else. Then it sends back
//! which tickets are done, and whether they failed, and writes one byte to a socket pair
//! whose other end the serve loop polls beside its socket (the same self-pipe as
//! `shutdown`), so the loop wakes as soon as acknowledgements may go.
//!
//! `syncfs` reports a write-back error of any file of the file system since the descriptor
//! was opened (Linux 5.8 and later); the jobs it covered are then all failed, as a failed
//! `fdatasync` fails its own.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Above this many files in one flush, one `syncfs` replaces their `fdatasync`s.
const FILES_PER_FDATASYNC: usize = 2;

/// What one commit asks to be made durable.
#[derive(Debug)]
pub struct Job {
    /// The commit's ticket.
    pub ticket: u64,
    /// Segment files written to.
    pub files: Vec<Arc<File>>,
    /// Directories where files were created.
    pub dirs: Vec<PathBuf>,
    /// Directories of topics made by this commit's appends, whose `topic.meta.new` is made
    /// durable and published as `topic.meta` before anything else (`disk::publish_meta`).
    pub creations: Vec<PathBuf>,
}

/// What the flush thread did with a run of jobs.
#[derive(Debug)]
pub struct Done {
    /// The tickets of the jobs, in the order they were given.
    pub tickets: Vec<u64>,
    /// Why they could not be made durable, if they could not.
    pub error: Option<Arc<io::Error>>,
}

/// The flush thread, its queues and the pipe it wakes the serve loop through.
#[derive(Debug)]
pub struct Flusher {
    /// Where jobs go; dropped to stop the thread.
    jobs: Option<Sender<Job>>,
    /// What comes back.
    done: Receiver<Done>,
    /// Readable when something came back.
    wakee: UnixStream,
    /// The thread, joined on drop.
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts a flush thread for the file system holding `data_dir`.
    ///
    /// # Errors
    /// The directory cannot be opened, the socket pair made or the thread started.
    pub fn start(data_dir: &Path) -> io::Result<Flusher> {
        let root = File::open(data_dir)?;
        let (waker, wakee) = UnixStream::pair()?;
        waker.set_nonblocking(true)?;
        wakee.set_nonblocking(true)?;
        let (jobs, queued) = mpsc::channel();
        let (finished, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("flush".into())
            .spawn(move || run(&root, &queued, &finished, &waker))?;
        Ok(Flusher { jobs: Some(jobs), done, wakee, thread: Some(thread) })
    }

    /// Queues a job.
    ///
    /// # Errors
    /// The thread is gone (it never stops while the flusher lives, unless it panicked).
    pub fn send(&self, job: Job) -> io::Result<()> {
        let gone = || io::Error::other("the flush thread has stopped");
        self.jobs.as_ref().ok_or_else(gone)?.send(job).map_err(|_| gone())
    }

    /// What came back since the last call, without waiting; empties the pipe first, so that
    /// the next poll blocks until something new comes back.
    pub fn take(&self) -> Vec<Done> {
        let mut bytes = [0; 64];
        while matches!((&self.wakee).read(&mut bytes), Ok(n) if n > 0) {}
        self.done.try_iter().collect()
    }

    /// Waits for the next run of jobs to come back. `None` when the thread is gone.
    pub fn wait(&self) -> Option<Done> {
        self.done.recv().ok()
    }

    /// The descriptor the serve loop polls: readable when something came back.
    pub fn fd(&self) -> RawFd {
        self.wakee.as_raw_fd()
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has done what was queued.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: takes every queued job, makes their files durable, reports, until the queue
/// closes.
fn run(root: &File, queued: &Receiver<Job>, finished: &Sender<Done>, waker: &UnixStream) {
    while let Ok(first) = queued.recv() {
        let mut jobs = vec![first];
        jobs.extend(queued.try_iter());
        let started = std::time::Instant::now();
        let error = flush(root, &jobs).err().map(Arc::new);
        crate::metrics::FLUSH_SECONDS.observe(started.elapsed());
        let tickets = jobs.iter().map(|job| job.ticket).collect();
        if finished.send(Done { tickets, error }).is_err() {
            return;
        }
        // A full pipe already holds a wake-up, so a failed write loses nothing.
        let _ = (&*waker).write(&[1]);
    }
}

/// Makes the files and directories of `jobs` durable, the topics they made first.
fn flush(root: &File, jobs: &[Job]) -> io::Result<()> {
    let mut created: Vec<&PathBuf> = jobs.iter().flat_map(|job| &job.creations).collect();
    created.sort();
    created.dedup();
    // A meta file is durable before it is renamed into place, so that a crash never leaves a
    // `topic.meta` without its bytes; the renames are made durable with the directories.
    let flushed = created.len() > FILES_PER_FDATASYNC;
    if flushed {
        syncfs(root)?;
    }
    for dir in &created {
        super::disk::publish_meta(dir, flushed)?;
    }
    let mut files: Vec<&Arc<File>> = jobs.iter().flat_map(|job| &job.files).collect();
    files.sort_by_key(|file| Arc::as_ptr(file));
    files.dedup_by_key(|file| Arc::as_ptr(file));
    // A topic deleted since its creation has no directory left to flush.
    let created: Vec<&Path> =
        created.iter().map(|dir| dir.as_path()).filter(|d| d.is_dir()).collect();
    let parents = created.iter().filter_map(|dir| dir.parent());
    let mut dirs: Vec<&Path> =
        jobs.iter().flat_map(|job| &job.dirs).map(PathBuf::as_path).collect();
    dirs.extend(created.iter().copied().chain(parents));
    dirs.sort();
    dirs.dedup();
    if files.len() + dirs.len() > FILES_PER_FDATASYNC {
        return syncfs(root);
    }
    for file in files {
        file.sync_data()?;
    }
    for dir in dirs {
        crate::files::sync_dir(dir)?;
    }
    Ok(())
}

/// Flushes every file of the file system holding `root`, metadata included.
pub(crate) fn syncfs(root: &File) -> io::Result<()> {
    extern "C" {
        fn syncfs(fd: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SAFETY: `syncfs` takes a descriptor, which `root` keeps open for the call, and touches
    // no memory of ours.
    if unsafe { syncfs(root.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn job(ticket: u64, files: &[Arc<File>]) -> Job {
        Job { ticket, files: files.to_vec(), dirs: Vec::new(), creations: Vec::new() }
    }

    /// Everything that comes back until `count` tickets did, within a few seconds.
    fn collect(flusher: &Flusher, count: usize) -> Vec<Done> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut done = Vec::new();
        while done.iter().map(|d: &Done| d.tickets.len()).sum::<usize>() < count {
            assert!(Instant::now() < deadline, "the flush thread did not answer");
            let mut items = [zmq::PollItem::from_fd(flusher.fd(), zmq::POLLIN)];
            zmq::poll(&mut items, 100).unwrap();
            done.extend(flusher.take());
        }
        done
    }

    #[test]
    fn jobs_come_back_in_order_and_wake_the_poll() {
        let dir = tempfile::tempdir().unwrap();
        let flusher = Flusher::start(dir.path()).unwrap();
        let files: Vec<Arc<File>> = (0..5)
            .map(|i| Arc::new(File::create(dir.path().join(format!("f{i}"))).unwrap()))
            .collect();
        flusher.send(job(1, &files[..1])).unwrap();
        flusher.send(job(2, &files)).unwrap();
        flusher
            .send(Job {
                ticket: 3,
                files: Vec::new(),
                dirs: vec![dir.path().to_path_buf()],
                creations: Vec::new(),
            })
            .unwrap();
        let done = collect(&flusher, 3);
        let tickets: Vec<u64> = done.iter().flat_map(|d| d.tickets.clone()).collect();
        assert_eq!(tickets, [1, 2, 3]);
        assert!(done.iter().all(|d| d.error.is_none()));
        let mut items = [zmq::PollItem::from_fd(flusher.fd(), zmq::POLLIN)];
        assert_eq!(zmq::poll(&mut items, 0).unwrap(), 0, "taking emptied the pipe");
    }

    #[test]
    fn a_failed_flush_fails_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let flusher = Flusher::start(dir.path()).unwrap();
        let gone = dir.path().join("not there");
        flusher
            .send(Job { ticket: 7, files: Vec::new(), dirs: vec![gone], creations: Vec::new() })
            .unwrap();
        let done = collect(&flusher, 1);
        assert_eq!(done[0].tickets, [7]);
        assert_eq!(done[0].error.as_ref().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
    }
}
