//! Reloading from a configuration file when it changes.
//!
//! Editors save by writing a temporary file and renaming it over the old one,
//! which replaces the inode a file watch would follow; so the *parent
//! directory* is watched and events are filtered by file name. Bursts of
//! events (write, chmod, rename) are debounced: the file is read once things
//! have been quiet for [`DEBOUNCE`]. The caller's parser turns the text into a
//! [`RegulatorConfig`]; a parse or validation error keeps the running
//! configuration and logs why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use crate::config::RegulatorConfig;
use crate::regulator::Regulator;

/// Quiet time after the last event before the file is read.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps a file watch alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    applied: AtomicU64,
    failed: AtomicU64,
}

impl WatchHandle {
    /// Reloads applied so far.
    pub fn applied(&self) -> u64 {
        self.counts.applied.load(Ordering::Acquire)
    }

    /// Reloads refused so far (parse or validation errors).
    pub fn failed(&self) -> u64 {
        self.counts.failed.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle")
            .field("applied", &self.applied())
            .field("failed", &self.failed())
            .finish()
    }
}

fn concerns(event: &notify::Event, name: &std::ffi::OsStr) -> bool {
    // Our own read of the file produces access events: ignore them, or every
    // reload would trigger the next one.
    !matches!(event.kind, EventKind::Access(_))
        && event.paths.iter().any(|p| p.file_name() == Some(name))
}

pub(crate) fn watch<P>(
    regulator: Regulator,
    path: PathBuf,
    parse: P,
) -> std::io::Result<WatchHandle>
where
    P: Fn(&str) -> Result<RegulatorConfig, String> + Send + 'static,
{
    let name = path
        .file_name()
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
        })?
        .to_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(ev) if concerns(&ev, &name) => {
                // The reader thread is gone only when the handle is dropped.
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "regulator config watch error"),
        }
    })
    .map_err(std::io::Error::other)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(std::io::Error::other)?;
    let counts = Arc::new(Counts::default());
    let thread_counts = Arc::clone(&counts);
    std::thread::Builder::new()
        .name("regulator-watch".into())
        .spawn(move || debounce_loop(&rx, &path, &regulator, &parse, &thread_counts))?;
    Ok(WatchHandle {
        _watcher: watcher,
        counts,
    })
}

fn debounce_loop<P>(
    rx: &mpsc::Receiver<()>,
    path: &Path,
    regulator: &Regulator,
    parse: &P,
    counts: &Counts,
) where
    P: Fn(&str) -> Result<RegulatorConfig, String>,
{
    // recv fails when the watcher (holding the sender) is dropped: stop.
    while rx.recv().is_ok() {
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(()) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        let result = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse(&text))
            .and_then(|cfg| regulator.reload(cfg).map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                counts.applied.fetch_add(1, Ordering::AcqRel);
                tracing::info!(path = %path.display(), "regulator config reloaded");
            }
            Err(reason) => {
                counts.failed.fetch_add(1, Ordering::AcqRel);
                tracing::warn!(path = %path.display(), %reason, "regulator config not reloaded; keeping the running one");
            }
        }
    }
}
