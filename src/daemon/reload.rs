//! Reloading: on SIGHUP, `Admin.Reload`, or a change to the config or a
//! secret file it names, a valid config applies per credential and an
//! invalid one is refused (and alerted) while the old one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::Engine;
use crate::broker::{Broker, Reloaded};
use crate::config::{self, Config};
use crate::grpc::ReloadHandle;
use crate::systemd::Notifier;

/// The config file and every secret file it reads: what the reload watcher
/// follows.
pub(super) fn watched_files(config: &Config) -> Vec<PathBuf> {
    std::iter::once(config.path.clone())
        .chain(config.secret_files.iter().cloned())
        .collect()
}

/// Applies config changes: on SIGHUP, `Admin.Reload`, or a change to the
/// config or a secret file (including editors' rename-over and Kubernetes'
/// symlink swaps, seen as events in the watched directories).
pub(super) struct Reloader {
    pub(super) path: PathBuf,
    pub(super) daemon: config::Daemon,
    /// The command line's `--socket`, applied to every reloaded config so
    /// that it is not mistaken for a settings change.
    pub(super) socket_override: Option<PathBuf>,
    /// The `[[proxy]]` tables in force, which apply at restart.
    pub(super) proxies: Vec<config::ProxySettings>,
    pub(super) broker: Arc<Broker>,
    pub(super) alerts: Option<Arc<Engine>>,
    pub(super) notifier: Arc<Notifier>,
}

/// Changes settle this long before a reload, so an editor's burst of writes
/// causes one reload.
const SETTLE: Duration = Duration::from_millis(200);

impl Reloader {
    pub(super) fn start(
        self,
        watched: Vec<PathBuf>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> ReloadHandle {
        let (tx, mut requests) = mpsc::channel::<oneshot::Sender<Result<Reloaded, String>>>(8);
        let (changed_tx, mut changed) = mpsc::channel::<()>(1);
        let mut watcher = watch_files(&watched, changed_tx.clone());
        let mut hup = signal(SignalKind::hangup()).ok();
        tasks.spawn(async move {
            loop {
                let reply = tokio::select! {
                    () = stop.cancelled() => break,
                    Some(reply) = requests.recv() => Some(reply),
                    Some(()) = changed.recv() => {
                        tokio::time::sleep(SETTLE).await;
                        while changed.try_recv().is_ok() {}
                        None
                    }
                    Some(()) = recv_signal(&mut hup) => None,
                };
                let result = self.reload().await;
                if let Ok((_, files)) = &result {
                    // Secret files may have been added or moved.
                    watcher = watch_files(files, changed_tx.clone());
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result.map(|(r, _)| r));
                }
            }
            drop(watcher);
        });
        tx
    }

    async fn reload(&self) -> Result<(Reloaded, Vec<PathBuf>), String> {
        self.notifier.reloading();
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| e.to_string())?;
        let result = match loaded {
            Err(e) => {
                let message = e.to_string();
                tracing::error!("new config refused; still serving the previous one:\n{message}");
                if let Some(engine) = &self.alerts {
                    engine.set_config_problem(Some(message.clone()));
                }
                Err(message)
            }
            Ok(config) => self.apply(config),
        };
        // The parser's state and the old credentials are gone by now.
        super::memory::release_free_memory();
        self.notifier.ready();
        result
    }

    /// Applies a valid config's credentials; answers what changed and the
    /// files to watch from now on.
    fn apply(&self, mut config: Config) -> Result<(Reloaded, Vec<PathBuf>), String> {
        if let Some(socket) = &self.socket_override {
            config.daemon.socket.clone_from(socket);
        }
        if config.daemon != self.daemon {
            tracing::warn!("[daemon] settings changed; they apply at the next restart");
        }
        if config.proxies != self.proxies {
            tracing::warn!("[[proxy]] tables changed; they apply at the next restart");
        }
        let files = watched_files(&config);
        let r = self.broker.reload(config.credentials).map_err(|e| {
            // Refused as a whole, like an invalid file: said, and alerted.
            let message = e.to_string();
            tracing::error!("new config refused; still serving the previous one:\n{message}");
            if let Some(engine) = &self.alerts {
                engine.set_config_problem(Some(message.clone()));
            }
            message
        })?;
        tracing::info!(
            added = ?r.added,
            changed = ?r.changed,
            removed = ?r.removed,
            unchanged = r.unchanged,
            "config reloaded"
        );
        if let Some(engine) = &self.alerts {
            engine.set_config_problem(None);
        }
        Ok((r, files))
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Watches the directories holding `files`; an event about one of them (or
/// a Kubernetes `..data` swap) sends on `changed`.
fn watch_files(files: &[PathBuf], changed: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let names: Vec<std::ffi::OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(Into::into))
        .collect();
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_owned))
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d
            }
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|n| {
                names.iter().any(|w| w == n) || n.to_string_lossy().starts_with("..")
            })
        });
        if relevant {
            let _ = changed.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config for changes; use SIGHUP");
            return None;
        }
    };
    for dir in &dirs {
        if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for changes");
        }
    }
    Some(watcher)
}
