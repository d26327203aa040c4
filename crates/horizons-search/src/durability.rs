//! Commits without `fsync`, and what makes that safe: the index directory of a writer.
//!
//! # Why
//!
//! A tantivy commit writes a new segment and `meta.json`, and `MmapDirectory` `fdatasync`s
//! every file it writes (about 19 per commit). On this project's machine, with SQLite and the
//! embedded bus syncing on the same disk, that made a commit of ~50 comments take 20–60 ms and
//! now and then 150 ms, which alone broke the comment → searchable target (p99 ≤ 100 ms). The
//! same load on a tmpfs data dir never had a commit above 30 ms.
//!
//! Search engines separate the two jobs: Elasticsearch makes documents searchable with a
//! *refresh* (a new segment, no fsync) and makes them durable with its translog and a later
//! *flush*. Here the translog is the database: every comment the index holds is a row, and
//! `horizons search reindex` rebuilds the index from the rows. So commits here are refreshes,
//! and [`DeferredSync`] writes files without syncing them.
//!
//! # What can be lost, and how it is found
//!
//! - A crashed or killed **process** loses nothing: written data sits in the kernel's page
//!   cache and reaches the disk without the process. Its commits stay valid.
//! - A **machine** that goes down (power loss, kernel crash) may lose unsynced writes, and may
//!   keep a `meta.json` that names segment data that never reached the disk: a torn index.
//!
//! Before the first unsynced write of a session, the directory durably writes a marker,
//! [`MARKER`], holding the kernel's boot id (`/proc/sys/kernel/random/boot_id`, new at every
//! boot). A clean close ([`DeferredSync::sync_all`], called when the `SearchIndex` is dropped)
//! syncs every file and the directory, then removes the marker. So at open:
//!
//! - no marker: the last session closed cleanly, everything is on disk;
//! - a marker with this boot's id: a process of this boot stopped without closing; the page
//!   cache still holds what it wrote, nothing is lost;
//! - a marker with another boot's id, or one that cannot be read: the machine went down with
//!   writes unsynced. The index is emptied and reported as needing a rebuild from the database
//!   ([`crate::SearchIndex::rebuild_needed`]).
//!
//! Where the boot id cannot be read (not Linux), the writer syncs every file as tantivy does
//! by default.
//!
//! # Freed files go to a trash folder first
//!
//! The data disk here is mounted with `discard`: freeing a file's blocks sends the disk a
//! synchronous TRIM, which took 10–60 ms under load. A commit replaces `meta.json` (the rename
//! frees the old one) and tantivy deletes merged segments on the same thread that commits, so
//! kernel stacks sampled during `bench api` found that thread in `blkdev_issue_discard` under
//! `renameat` in most of its slow commits. So a deleted file, and the file a rename replaces,
//! are first linked into [`TRASH`] (no blocks freed), and a thread of their own unlinks them
//! [`REAP_AFTER`] later, when no reader maps them any more.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tantivy::directory::error::{DeleteError, LockError, OpenDirectoryError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, TerminatingWrite, WatchCallback,
    WatchHandle, WritePtr,
};

/// The marker's file name: present while the directory holds writes not yet synced.
pub const MARKER: &str = "unsynced.boot";

/// The file that keeps a second writer out while one checks the marker and writes
/// (`horizons` takes it with `flock` for the writer's whole life, next to tantivy's own lock).
pub const WRITER_LOCK: &str = "horizons-writer.lock";

/// The folder, inside the index directory, where deleted files wait to be unlinked.
pub const TRASH: &str = "trash";

/// How long a deleted file waits in [`TRASH`]: longer than a reader keeps an old snapshot
/// mapped, so that the unlink, not an `munmap` on a searching thread, frees its blocks.
pub const REAP_AFTER: Duration = Duration::from_secs(10);

/// The running kernel's boot id, if the platform has one.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What the marker in a directory says about its last session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastSession {
    /// No marker: closed cleanly, or never written.
    Clean,
    /// Stopped without closing during this boot: nothing lost.
    SameBoot,
    /// Stopped without closing before the machine went down (or a marker we cannot read).
    OtherBoot,
}

/// Reads the marker in `root` against `boot`.
pub fn last_session(root: &Path, boot: &str) -> io::Result<LastSession> {
    match std::fs::read_to_string(root.join(MARKER)) {
        Ok(s) if s.trim() == boot => Ok(LastSession::SameBoot),
        Ok(_) => Ok(LastSession::OtherBoot),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LastSession::Clean),
        // Present but unreadable: assume the worst.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(LastSession::OtherBoot),
        Err(e) => Err(e),
    }
}

/// Removes everything in `root` but the writer lock: the remains of a torn index.
pub fn wipe(root: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_name() == WRITER_LOCK {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    sync_dir(root)
}

fn sync_dir(root: &Path) -> io::Result<()> {
    File::open(root)?.sync_all()
}

/// A tantivy [`Directory`] over [`MmapDirectory`] whose writes are not synced until
/// [`sync_all`](Self::sync_all); see the module docs for why that is safe.
#[derive(Clone)]
pub struct DeferredSync {
    inner: MmapDirectory,
    root: PathBuf,
    state: Arc<Mutex<State>>,
    trash: Arc<Trash>,
}

/// The trash folder and its reaper thread (stopped when the last clone is dropped).
struct Trash {
    dir: PathBuf,
    /// Makes names unique within a millisecond.
    seq: AtomicU64,
    /// Dropping it stops the reaper, which then empties the trash.
    _stop: mpsc::Sender<()>,
}

impl Trash {
    fn start(root: &Path) -> io::Result<Self> {
        let dir = root.join(TRASH);
        std::fs::create_dir_all(&dir)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let reap = dir.clone();
        std::thread::Builder::new().name("search-reaper".into()).spawn(move || loop {
            match stopped.recv_timeout(Duration::from_secs(1)) {
                Err(mpsc::RecvTimeoutError::Timeout) => reap_older_than(&reap, REAP_AFTER),
                // Closed: readers are gone with the index, so everything may go.
                _ => return reap_older_than(&reap, Duration::ZERO),
            }
        })?;
        Ok(Trash { dir, seq: AtomicU64::new(0), _stop: stop })
    }

    /// A fresh name in the trash for `path`: `<ms since the epoch>-<seq>-<file name>`.
    fn slot(&self, path: &Path) -> PathBuf {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.dir.join(format!("{ms}-{n}-{name}"))
    }
}

/// Unlinks the files in `dir` that went there at least `age` ago (by the time in their name;
/// a name without one, from an older version, goes at once).
fn reap_older_than(dir: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let at: u128 = name.to_string_lossy().split('-').next().and_then(|t| t.parse().ok()).unwrap_or(0);
        if now.saturating_sub(at) >= age.as_millis() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                // The whole index was removed meanwhile (a test's or bench's temporary one).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "could not empty the search index trash")
                }
            }
        }
    }
}

struct State {
    boot: String,
    /// The marker is on disk (durably).
    marked: bool,
}

impl std::fmt::Debug for DeferredSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredSync").field("root", &self.root).finish_non_exhaustive()
    }
}

impl DeferredSync {
    /// The directory `root` (which must exist) for a writer in boot `boot`; `marked` says
    /// whether a marker of this boot is already there.
    pub fn open(root: &Path, boot: String, marked: bool) -> Result<Self, OpenDirectoryError> {
        let inner = MmapDirectory::open(root)?;
        let root = root.canonicalize().map_err(|e| OpenDirectoryError::wrap_io_error(e, root.to_owned()))?;
        let trash = Trash::start(&root).map_err(|e| OpenDirectoryError::wrap_io_error(e, root.clone()))?;
        Ok(DeferredSync { inner, root, state: Arc::new(Mutex::new(State { boot, marked })), trash: Arc::new(trash) })
    }

    /// Writes the marker durably unless it is there already. Called before every write.
    fn mark(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        if !st.marked {
            let mut f = File::create(self.root.join(MARKER))?;
            f.write_all(st.boot.as_bytes())?;
            f.sync_all()?;
            sync_dir(&self.root)?;
            st.marked = true;
        }
        Ok(())
    }

    /// Makes everything in the directory durable, then removes the marker. Call it only when
    /// no writer is left (no commit or merge running), as `SearchIndex` does when dropped.
    pub fn sync_all(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        if !st.marked {
            return Ok(());
        }
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name();
            if name == MARKER || name == WRITER_LOCK || !entry.file_type()?.is_file() {
                continue;
            }
            match File::open(entry.path()) {
                Ok(f) => f.sync_all()?,
                // Deleted meanwhile (garbage collection): nothing to sync.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        sync_dir(&self.root)?;
        std::fs::remove_file(self.root.join(MARKER))?;
        sync_dir(&self.root)?;
        st.marked = false;
        Ok(())
    }
}

/// A file written without `fsync` at the end.
struct UnsyncedFile(File);

impl Write for UnsyncedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TerminatingWrite for UnsyncedFile {
    fn terminate_ref(&mut self, _: AntiCallToken) -> io::Result<()> {
        self.0.flush()
    }
}

impl Directory for DeferredSync {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.inner.get_file_handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        // Into the trash, not unlinked: see the module docs. A rename frees no blocks.
        std::fs::rename(self.root.join(path), self.trash.slot(path)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                DeleteError::FileDoesNotExist(path.to_owned())
            } else {
                DeleteError::IoError { io_error: Arc::new(e), filepath: path.to_owned() }
            }
        })
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        self.mark().map_err(|e| OpenWriteError::wrap_io_error(e, path.to_owned()))?;
        let file = OpenOptions::new().write(true).create_new(true).open(self.root.join(path)).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                OpenWriteError::FileAlreadyExists(path.to_owned())
            } else {
                OpenWriteError::wrap_io_error(e, path.to_owned())
            }
        })?;
        Ok(BufWriter::new(Box::new(UnsyncedFile(file))))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.inner.atomic_read(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.mark()?;
        // Same directory, so the rename is atomic; readers see the old or the new contents.
        let mut tmp = tempfile::Builder::new().tempfile_in(&self.root)?;
        tmp.write_all(data)?;
        let target = self.root.join(path);
        // A second link keeps the file being replaced from being freed by the rename.
        match std::fs::hard_link(&target, self.trash.slot(path)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        tmp.into_temp_path().persist(target).map_err(|e| e.error)
    }

    fn sync_directory(&self) -> io::Result<()> {
        // Deferred to `sync_all`, like the files' own syncs.
        Ok(())
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(watch_callback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_written_before_the_first_write_and_removed_by_sync_all() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DeferredSync::open(tmp.path(), "boot-a".into(), false).unwrap();
        assert_eq!(last_session(tmp.path(), "boot-a").unwrap(), LastSession::Clean);
        let mut w = d.open_write(Path::new("seg.idx")).unwrap();
        assert_eq!(last_session(tmp.path(), "boot-a").unwrap(), LastSession::SameBoot);
        assert_eq!(last_session(tmp.path(), "boot-b").unwrap(), LastSession::OtherBoot);
        w.write_all(b"data").unwrap();
        w.terminate().unwrap();
        d.atomic_write(Path::new("meta.json"), b"{}").unwrap();
        assert_eq!(d.atomic_read(Path::new("meta.json")).unwrap(), b"{}");
        d.sync_all().unwrap();
        assert_eq!(last_session(tmp.path(), "boot-b").unwrap(), LastSession::Clean);
        // The next write marks again.
        d.atomic_write(Path::new("meta.json"), b"{\"a\":1}").unwrap();
        assert_eq!(last_session(tmp.path(), "boot-b").unwrap(), LastSession::OtherBoot);
    }

    #[test]
    fn open_write_refuses_an_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DeferredSync::open(tmp.path(), "b".into(), false).unwrap();
        d.open_write(Path::new("x")).unwrap().terminate().unwrap();
        assert!(matches!(d.open_write(Path::new("x")), Err(OpenWriteError::FileAlreadyExists(_))));
    }

    #[test]
    fn deleted_and_replaced_files_wait_in_the_trash_until_reaped() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DeferredSync::open(tmp.path(), "b".into(), false).unwrap();
        d.open_write(Path::new("seg.idx")).unwrap().terminate().unwrap();
        d.atomic_write(Path::new("meta.json"), b"1").unwrap();
        d.atomic_write(Path::new("meta.json"), b"2").unwrap();
        d.delete(Path::new("seg.idx")).unwrap();
        assert!(!d.exists(Path::new("seg.idx")).unwrap());
        assert!(matches!(d.delete(Path::new("seg.idx")), Err(DeleteError::FileDoesNotExist(_))));
        assert_eq!(d.atomic_read(Path::new("meta.json")).unwrap(), b"2");
        let trash = tmp.path().join(TRASH);
        let mut names: Vec<String> =
            std::fs::read_dir(&trash).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort_by_key(|n| n.split('-').nth(1).unwrap().parse::<u64>().unwrap());
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[0].ends_with("-meta.json") && names[1].ends_with("-seg.idx"), "{names:?}");
        assert_eq!(std::fs::read(trash.join(&names[0])).unwrap(), b"1", "the replaced contents");
        // Not yet old enough, then old enough.
        reap_older_than(&trash, REAP_AFTER);
        assert_eq!(std::fs::read_dir(&trash).unwrap().count(), 2);
        reap_older_than(&trash, Duration::ZERO);
        assert_eq!(std::fs::read_dir(&trash).unwrap().count(), 0);
    }

    #[test]
    fn the_trash_is_emptied_when_the_directory_closes() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DeferredSync::open(tmp.path(), "b".into(), false).unwrap();
        d.open_write(Path::new("x")).unwrap().terminate().unwrap();
        d.delete(Path::new("x")).unwrap();
        drop(d);
        let trash = tmp.path().join(TRASH);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_dir(&trash).unwrap().count() > 0 {
            assert!(std::time::Instant::now() < deadline, "the reaper did not empty the trash");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn wipe_keeps_only_the_writer_lock() {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["meta.json", "a.idx", MARKER, WRITER_LOCK] {
            std::fs::write(tmp.path().join(f), b"x").unwrap();
        }
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        wipe(tmp.path()).unwrap();
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(WRITER_LOCK)]);
    }
}
