//! Reload triggers (config file changes, SIGHUP, the admin API) and the last reload's status.
//! `gateway.rs`, which receives [`ReloadRequest`]s from the channel made by [`channel`].
//!
//! Triggers only *ask*: a request that finds another one already queued is dropped, because the
//! queued reload will read the newest files anyway. File watching watches parent directories, not
//! files, because editors and Kubernetes replace files by renaming, which a watch on the old inode
//! would never see.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadCause {
    /// The first load at startup.
    Startup,
    /// A watched file changed.
    FileChange,
    /// SIGHUP.
    Signal,
    /// `POST /config/reload`.
    Admin,
}

/// One request to reload; `reply` (if any) gets the new version or the error.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Why.
    pub cause: ReloadCause,
    /// Where to send the outcome.
    pub reply: Option<oneshot::Sender<Result<u64, String>>>,
}

/// The outcome of the last reload attempts, shown by `/config`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Version of the snapshot serving now.
    pub version: u64,
    /// When the last attempt finished (RFC 3339, UTC, in JSON).
    #[serde(serialize_with = "serialize_rfc3339")]
    pub last_attempt: Option<SystemTime>,
    /// What caused the last attempt.
    pub last_cause: Option<ReloadCause>,
    /// Whether the last attempt succeeded.
    pub last_ok: Option<bool>,
    /// The error of the last failed attempt (kept until a later attempt succeeds).
    pub last_error: Option<String>,
    /// Successful reloads since start.
    pub successes: u64,
    /// Failed reloads since start.
    pub failures: u64,
}

/// Asks for reloads and reads their status. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<ReloadRequest>,
    status: Arc<Mutex<ReloadStatus>>,
}

/// The error [`ReloadHandle::reload`] returns when the gateway's reload loop is gone.
pub const SHUTTING_DOWN: &str = "the gateway is shutting down";

/// A reload channel: the handle for triggers, the receiver for the gateway's reload loop.
pub fn channel() -> (ReloadHandle, mpsc::Receiver<ReloadRequest>) {
    let (tx, rx) = mpsc::channel(16);
    (
        ReloadHandle {
            tx,
            status: Arc::default(),
        },
        rx,
    )
}

impl ReloadHandle {
    /// Asks for a reload and waits for its outcome: the new version, or the error.
    pub async fn reload(&self, cause: ReloadCause) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ReloadRequest {
                cause,
                reply: Some(reply),
            })
            .await
            .map_err(|_| SHUTTING_DOWN.to_string())?;
        rx.await.map_err(|_| SHUTTING_DOWN.to_string())?
    }

    /// Asks for a reload without waiting; a request already queued makes this one redundant.
    pub fn request(&self, cause: ReloadCause) {
        let _ = self.tx.try_send(ReloadRequest { cause, reply: None });
    }

    /// A copy of the current status.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the outcome of an attempt.
    pub fn record(&self, cause: ReloadCause, outcome: &Result<u64, String>) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_attempt = Some(SystemTime::now());
        status.last_cause = Some(cause);
        match outcome {
            Ok(version) => {
                status.version = *version;
                status.last_ok = Some(true);
                status.last_error = None;
                status.successes += 1;
            }
            Err(error) => {
                status.last_ok = Some(false);
                status.last_error = Some(error.clone());
                status.failures += 1;
            }
        }
    }
}

fn serialize_rfc3339<S: serde::Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.collect_str(&humantime::format_rfc3339_millis(*time)),
        None => serializer.serialize_none(),
    }
}

// === impl FileWatcher ===

/// The default quiet time [`FileWatcher`] waits after the last change before asking for a
/// reload: long enough to cover an editor's write-rename-chmod burst or a ConfigMap swap, short
/// enough that an operator does not notice.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `files` (config file, certificate files, CA/token files) by watching their parent
/// directories (and, for a symlink, its target's directory too), so editor renames, atomic
/// replaces and Kubernetes ConfigMap `..data` symlink swaps are all seen. An event counts when
/// its file name is one of the watched files or starts with `..` (the ConfigMap swap changes
/// `..data`, not the file itself); reads of the files (which the reload itself causes) never
/// count. After `debounce` ([`DEFAULT_DEBOUNCE`] is a good value)
/// without further events it calls `handle.request(ReloadCause::FileChange)` once.
///
/// Re-target it with [`FileWatcher::set_files`] after each reload, because certificate paths can
/// change. Dropping it stops the watching.
pub struct FileWatcher {
    watcher: Mutex<RecommendedWatcher>,
    targets: Arc<RwLock<Targets>>,
}

/// The watched directories (absolute) and, for each, the file names that matter.
#[derive(Debug, Default)]
struct Targets {
    names: HashMap<PathBuf, HashSet<OsString>>,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl FileWatcher {
    /// Starts watching `files`. Must be called inside a tokio runtime (the debounce runs there).
    pub fn start(
        files: Vec<PathBuf>,
        debounce: Duration,
        handle: ReloadHandle,
    ) -> Result<FileWatcher, notify::Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| notify::Error::generic("the file watcher needs a tokio runtime"))?;
        let targets = Arc::new(RwLock::new(Targets::default()));
        let (events_tx, events_rx) = mpsc::unbounded_channel();

        let callback_targets = targets.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(event) => {
                    let relevant = callback_targets
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_relevant(&event);
                    if relevant {
                        // The receiver is gone only when the debounce task ended; nothing to do.
                        let _ = events_tx.send(());
                    }
                }
                // The backend lost events (queue overflow) or hit an error: a reload re-reads
                // everything, so asking for one is the safe answer.
                Err(error) => {
                    tracing::warn!(%error, "file watcher error; asking for a reload");
                    let _ = events_tx.send(());
                }
            }
        })?;

        runtime.spawn(debounce_loop(events_rx, debounce, handle));
        let watcher = FileWatcher {
            watcher: Mutex::new(watcher),
            targets,
        };
        watcher.set_files(files)?;
        Ok(watcher)
    }

    /// Watches `files` instead of the current set. On error the previous set stays watched
    /// (plus any directory already added).
    pub fn set_files(&self, files: Vec<PathBuf>) -> Result<(), notify::Error> {
        let mut names: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
        let mut add = |file: &Path| {
            let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
                return Err(notify::Error::generic(&format!(
                    "{} is not a file path",
                    file.display()
                ))
                .add_path(file.to_path_buf()));
            };
            names
                .entry(dir.to_path_buf())
                .or_default()
                .insert(name.to_os_string());
            Ok(())
        };
        for file in files {
            let file = std::path::absolute(&file)?;
            add(&file)?;
            // A symlink to a file elsewhere (`/etc/levee.yaml -> /srv/conf/levee.yaml`) changes
            // where the link points, not the link: watch the target's directory too.
            if let Ok(target) = std::fs::canonicalize(&file)
                && target != file
            {
                add(&target)?;
            }
        }

        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let old_dirs: HashSet<PathBuf> = self
            .targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .names
            .keys()
            .cloned()
            .collect();
        let mut added = Vec::new();
        for dir in names.keys().filter(|dir| !old_dirs.contains(*dir)) {
            if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                for dir in added {
                    let _ = watcher.unwatch(dir);
                }
                return Err(error);
            }
            added.push(dir.as_path());
        }
        for dir in old_dirs.iter().filter(|dir| !names.contains_key(*dir)) {
            // The directory may be gone already, which also ends its watch.
            let _ = watcher.unwatch(dir);
        }
        self.targets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .names = names;
        Ok(())
    }
}

impl Targets {
    fn is_relevant(&self, event: &notify::Event) -> bool {
        match event.kind {
            // Opening or reading a file (the reload itself does) is no change.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return false,
            _ => {}
        }
        event.paths.iter().any(|path| self.is_watched(path))
    }

    fn is_watched(&self, path: &Path) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        let Some(names) = self.names.get(dir) else {
            return false;
        };
        names.contains(name) || name.as_encoded_bytes().starts_with(b"..")
    }
}

/// Waits for a first event, then until `debounce` passes without another, then asks once.
async fn debounce_loop(
    mut events: mpsc::UnboundedReceiver<()>,
    debounce: Duration,
    handle: ReloadHandle,
) {
    // A file rewritten without pause (a log mistakenly listed, a stuck writer) must not
    // postpone reloads forever: after this many quiet periods' worth of events, ask anyway.
    const MAX_DELAYS: u32 = 10;
    while events.recv().await.is_some() {
        let deadline = tokio::time::Instant::now() + debounce * MAX_DELAYS;
        loop {
            let quiet = tokio::time::Instant::now() + debounce;
            match tokio::time::timeout_at(quiet.min(deadline), events.recv()).await {
                Ok(Some(())) if quiet < deadline => continue,
                Ok(Some(())) | Err(_) => break,
                Ok(None) => return,
            }
        }
        if handle.tx.is_closed() {
            return;
        }
        tracing::info!("watched files changed; asking for a reload");
        handle.request(ReloadCause::FileChange);
    }
}

// === SIGHUP ===

/// SIGHUP -> `handle.request(ReloadCause::Signal)`, until the handle's channel closes. Must be
/// called inside a tokio runtime. Does nothing on platforms without SIGHUP.
pub fn spawn_sighup(handle: ReloadHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // The handler is installed here, before this function returns, not inside the task:
        // SIGHUP's default action ends the process, so a HUP that arrives between startup and
        // the task's first poll must already be caught.
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reload by file or admin API");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    received = hangup.recv() => {
                        if received.is_none() {
                            return;
                        }
                        tracing::info!("SIGHUP received; asking for a reload");
                        handle.request(ReloadCause::Signal);
                    }
                    () = handle.tx.closed() => return,
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = handle;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    const DEBOUNCE: Duration = Duration::from_millis(200);
    /// Generous: inotify delivery plus the debounce on a loaded 2-core machine.
    const ARRIVAL: Duration = Duration::from_secs(10);
    /// How long to watch for a request that must not come.
    const QUIET: Duration = Duration::from_millis(1200);

    /// A unique, empty temp directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "levee-reload-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn next_request(
        rx: &mut mpsc::Receiver<ReloadRequest>,
        wait: Duration,
    ) -> Option<ReloadCause> {
        tokio::time::timeout(wait, rx.recv())
            .await
            .ok()
            .flatten()
            .map(|request| request.cause)
    }

    /// Lets the watcher settle, so events from the test's setup are not counted.
    async fn drain(rx: &mut mpsc::Receiver<ReloadRequest>) {
        while next_request(rx, DEBOUNCE * 3).await.is_some() {}
    }

    #[tokio::test]
    async fn atomic_rename_over_the_config_asks_for_exactly_one_reload() {
        let dir = TempDir::new("rename");
        let config = dir.0.join("levee.yaml");
        std::fs::write(&config, "a: 1\n").expect("write");
        let (handle, mut rx) = channel();
        let _watcher =
            FileWatcher::start(vec![config.clone()], DEBOUNCE, handle).expect("start watcher");
        drain(&mut rx).await;

        let tmp = dir.0.join(".levee.yaml.tmp");
        std::fs::write(&tmp, "a: 2\n").expect("write tmp");
        std::fs::rename(&tmp, &config).expect("rename");

        assert_eq!(
            next_request(&mut rx, ARRIVAL).await,
            Some(ReloadCause::FileChange)
        );
        assert_eq!(next_request(&mut rx, QUIET).await, None);
    }

    #[tokio::test]
    async fn several_quick_writes_ask_for_one_reload() {
        let dir = TempDir::new("burst");
        let config = dir.0.join("levee.yaml");
        std::fs::write(&config, "a: 0\n").expect("write");
        let (handle, mut rx) = channel();
        let _watcher =
            FileWatcher::start(vec![config.clone()], DEBOUNCE, handle).expect("start watcher");
        drain(&mut rx).await;

        for i in 1..=5 {
            std::fs::write(&config, format!("a: {i}\n")).expect("write");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        assert_eq!(
            next_request(&mut rx, ARRIVAL).await,
            Some(ReloadCause::FileChange)
        );
        assert_eq!(next_request(&mut rx, QUIET).await, None);
    }

    #[tokio::test]
    async fn unrelated_files_and_reads_do_not_ask_for_a_reload() {
        let dir = TempDir::new("unrelated");
        let config = dir.0.join("levee.yaml");
        std::fs::write(&config, "a: 1\n").expect("write");
        let (handle, mut rx) = channel();
        let _watcher =
            FileWatcher::start(vec![config.clone()], DEBOUNCE, handle).expect("start watcher");
        drain(&mut rx).await;

        std::fs::write(dir.0.join("notes.txt"), "hello").expect("write other");
        std::fs::write(dir.0.join("levee.yaml.bak"), "a: 0").expect("write other");
        let _ = std::fs::read_to_string(&config).expect("read");

        assert_eq!(next_request(&mut rx, QUIET).await, None);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn configmap_symlink_swap_asks_for_a_reload() {
        use std::os::unix::fs::symlink;

        let dir = TempDir::new("configmap");
        let root = &dir.0;
        std::fs::create_dir(root.join("..2026_a")).expect("mkdir a");
        std::fs::write(root.join("..2026_a/levee.yaml"), "a: 1\n").expect("write a");
        symlink("..2026_a", root.join("..data")).expect("link data");
        symlink("..data/levee.yaml", root.join("levee.yaml")).expect("link file");

        let (handle, mut rx) = channel();
        let _watcher = FileWatcher::start(vec![root.join("levee.yaml")], DEBOUNCE, handle)
            .expect("start watcher");
        drain(&mut rx).await;

        std::fs::create_dir(root.join("..2026_b")).expect("mkdir b");
        std::fs::write(root.join("..2026_b/levee.yaml"), "a: 2\n").expect("write b");
        symlink("..2026_b", root.join("..data_tmp")).expect("link tmp");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");

        assert_eq!(
            next_request(&mut rx, ARRIVAL).await,
            Some(ReloadCause::FileChange)
        );
        assert_eq!(
            std::fs::read_to_string(root.join("levee.yaml")).expect("read"),
            "a: 2\n"
        );
        assert_eq!(next_request(&mut rx, QUIET).await, None);
    }

    #[tokio::test]
    async fn set_files_moves_the_watch_to_new_paths() {
        let old_dir = TempDir::new("retarget-old");
        let new_dir = TempDir::new("retarget-new");
        let old_cert = old_dir.0.join("cert.pem");
        let new_cert = new_dir.0.join("cert.pem");
        std::fs::write(&old_cert, "old").expect("write");
        std::fs::write(&new_cert, "new").expect("write");
        let (handle, mut rx) = channel();
        let watcher =
            FileWatcher::start(vec![old_cert.clone()], DEBOUNCE, handle).expect("start watcher");
        watcher.set_files(vec![new_cert.clone()]).expect("retarget");
        drain(&mut rx).await;

        std::fs::write(&old_cert, "old 2").expect("write");
        assert_eq!(next_request(&mut rx, QUIET).await, None);

        std::fs::write(&new_cert, "new 2").expect("write");
        assert_eq!(
            next_request(&mut rx, ARRIVAL).await,
            Some(ReloadCause::FileChange)
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn edits_to_a_symlinked_files_target_ask_for_a_reload() {
        let links = TempDir::new("link");
        let targets = TempDir::new("target");
        let target = targets.0.join("real.yaml");
        std::fs::write(&target, "a: 1\n").expect("write");
        let link = links.0.join("levee.yaml");
        std::os::unix::fs::symlink(&target, &link).expect("link");
        let (handle, mut rx) = channel();
        let _watcher = FileWatcher::start(vec![link], DEBOUNCE, handle).expect("start watcher");
        drain(&mut rx).await;

        std::fs::write(&target, "a: 2\n").expect("write");
        assert_eq!(
            next_request(&mut rx, ARRIVAL).await,
            Some(ReloadCause::FileChange)
        );
    }

    #[tokio::test]
    async fn watching_a_file_in_a_missing_directory_fails() {
        let dir = TempDir::new("missing");
        let (handle, _rx) = channel();
        let result =
            FileWatcher::start(vec![dir.0.join("no-such-dir/levee.yaml")], DEBOUNCE, handle);
        assert!(result.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_waits_for_quiet_then_asks_once() {
        let (handle, mut rx) = channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        tokio::spawn(debounce_loop(events_rx, DEBOUNCE, handle));

        for _ in 0..3 {
            events.send(()).expect("send");
            tokio::time::sleep(DEBOUNCE / 2).await;
        }
        // 100ms after the last event: still inside the quiet period.
        assert!(rx.try_recv().is_err());
        tokio::time::sleep(DEBOUNCE).await;
        assert_eq!(
            rx.try_recv().map(|r| r.cause).ok(),
            Some(ReloadCause::FileChange)
        );
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_constant_stream_of_changes_still_reloads() {
        let (handle, mut rx) = channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        tokio::spawn(debounce_loop(events_rx, DEBOUNCE, handle));

        let mut asked = false;
        for _ in 0..40 {
            events.send(()).expect("send");
            tokio::time::sleep(DEBOUNCE / 4).await;
            asked |= rx.try_recv().is_ok();
        }
        assert!(
            asked,
            "a change every 50ms must not postpone the reload forever"
        );
    }

    #[test]
    fn status_records_successes_and_keeps_the_last_error() {
        let (handle, _rx) = channel();
        handle.record(ReloadCause::Startup, &Ok(1));
        handle.record(ReloadCause::Admin, &Err("bad yaml".into()));
        let status = handle.status();
        assert_eq!(status.version, 1);
        assert_eq!(status.last_ok, Some(false));
        assert_eq!(status.last_error.as_deref(), Some("bad yaml"));
        assert_eq!((status.successes, status.failures), (1, 1));
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(json["last_cause"], "admin");
        assert!(
            json["last_attempt"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );

        handle.record(ReloadCause::FileChange, &Ok(2));
        let status = handle.status();
        assert_eq!((status.version, status.last_error), (2, None));
    }
}
