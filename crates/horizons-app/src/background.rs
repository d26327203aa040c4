//! Workers at a lower CPU priority than the requests they share a process with.
//!
//! `horizons up` (and `horizons bench api`) run the HTTP API, the outbox relay and every
//! worker in one process. On a busy machine a request then waits behind indexing, audit and
//! mail work that nobody is waiting for. [`Background`] is a runtime of its own for that work,
//! whose threads run at `portal.worker_nice` (5 by default): when the API and the workers
//! both want the cores, the kernel gives the API's threads about three times the share
//! (a nice-0 thread weighs 1024, a nice-5 one 335, a nice-10 one 110); on an idle machine the
//! workers run as fast as before. Thread pools that the workers' libraries start are lowered by
//! name ([`Background::nice_threads`]: tantivy's merge threads). tantivy's indexing thread is
//! the exception: commits wait for it, so it stays at the API's priority (see the commit
//! thread in `horizons_search::index`).
//!
//! Measured with `horizons bench api --rate 1000 --seconds 20` on this 2-core machine, two
//! alternated rounds: POST p99 3.9–4.2 ms with the workers at the API's priority, 2.6 ms at
//! nice 5, 2.4 ms at nice 10; comment → searchable p99 70–94, 73–75 and 76–231 ms. Nice 10
//! starves the search worker now and then, so the default is 5.

use tokio::runtime::Runtime;

use crate::error::AppError;

/// The runtime the workers run on.
#[derive(Debug)]
pub struct Background {
    rt: Option<Runtime>,
    nice: i32,
}

/// Lowers the calling thread's CPU priority to `nice` (Linux keeps a `nice` value per thread;
/// threads it starts inherit it).
pub fn nice_this_thread(nice: i32) -> std::io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice).map_err(std::io::Error::from)
}

/// [`nice_this_thread`] on a thread of the workers, where a failure (checked at start-up
/// already) is only worth a warning.
fn lower_or_warn(nice: i32) {
    if let Err(e) = nice_this_thread(nice) {
        tracing::warn!(error = %e, nice, "could not lower a worker thread's priority");
    }
}

impl Background {
    /// A runtime with as many worker threads as cores, each at `nice`; with `nice` = 0 the
    /// workers share the caller's runtime instead.
    pub fn start(nice: i32) -> Result<Self, AppError> {
        if nice == 0 {
            return Ok(Self { rt: None, nice });
        }
        // Checked once here, so a machine that refuses (a seccomp profile, say) fails at
        // start-up with the reason rather than in every thread.
        std::thread::spawn(move || nice_this_thread(nice))
            .join()
            .map_err(|_| AppError::Task("checking portal.worker_nice".into()))?
            .map_err(AppError::io(format!("setting portal.worker_nice = {nice}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name("horizons-worker")
            .on_thread_start(move || lower_or_warn(nice))
            .enable_all()
            .build()
            .map_err(AppError::io("starting the workers' runtime"))?;
        Ok(Self { rt: Some(rt), nice })
    }

    /// Runs `f` with tasks spawned by it (`tokio::spawn`, `JoinSet::spawn`) going to the
    /// workers' runtime.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.rt.as_ref().map(|rt| rt.handle().enter());
        f()
    }

    /// Lowers every thread of this process whose name starts with `prefix` to the workers'
    /// priority, for thread pools a library starts on its own (tantivy's `merge_thread_N`);
    /// returns how many it lowered. Linux only (it reads `/proc/self/task`); elsewhere, and
    /// at nice 0, it does nothing.
    pub fn nice_threads(&self, prefix: &str) -> usize {
        if self.rt.is_none() {
            return 0;
        }
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
        let mut n = 0;
        for task in tasks.flatten() {
            let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else { continue };
            let tid = task.file_name().to_str().and_then(|t| t.parse().ok()).and_then(rustix::process::Pid::from_raw);
            let (true, Some(tid)) = (name.starts_with(prefix), tid) else { continue };
            match rustix::process::setpriority_process(Some(tid), self.nice) {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!(error = %e, thread = name.trim(), "could not lower a thread's priority"),
            }
        }
        n
    }

    /// Opens `parts`' search index where the API shares a process with the workers: on the
    /// calling (API) thread, so that its commit and indexing threads keep the API's priority
    /// (commits are on the comment → searchable path), then lowers its merge threads.
    pub fn open_search(
        &self,
        parts: &crate::portal::Parts,
    ) -> Result<std::sync::Arc<horizons_search::SearchIndex>, AppError> {
        let opened = parts.open_search();
        self.nice_threads(horizons_search::MERGE_THREAD_PREFIX);
        opened
    }
}

impl Drop for Background {
    /// Stops the runtime without waiting for tasks still on it (drop it after the workers
    /// ended); unlike a runtime's own drop, this may happen inside async code.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("getpriority")
    }

    #[test]
    fn workers_and_the_threads_they_start_run_niced() {
        let bg = Background::start(7).expect("start");
        let (tx, rx) = std::sync::mpsc::channel();
        bg.enter(|| {
            tokio::spawn(async move {
                let _ = tx.send(nice_of_this_thread());
            })
        });
        assert_eq!(rx.recv().expect("reply"), 7, "a worker thread");
        assert_ne!(nice_of_this_thread(), 7, "the caller keeps its priority");
    }

    #[test]
    fn threads_named_by_a_library_are_lowered_by_name() {
        let bg = Background::start(6).expect("start");
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let named = std::thread::Builder::new()
            .name("hz-nicetest-0".into())
            .spawn(move || {
                ready_tx.send(()).expect("ready");
                go_rx.recv().expect("go");
                nice_of_this_thread()
            })
            .expect("spawn");
        // The thread names itself once running.
        ready_rx.recv().expect("ready");
        assert_eq!(bg.nice_threads("hz-nicetest-"), 1);
        go_tx.send(()).expect("send");
        assert_eq!(named.join().expect("join"), 6);
        assert_ne!(nice_of_this_thread(), 6, "other threads keep their priority");
    }

    #[test]
    fn nice_zero_stays_on_the_callers_runtime() {
        let bg = Background::start(0).expect("start");
        assert!(bg.rt.is_none());
        assert_eq!(bg.nice_threads("hz-"), 0);
    }
}
