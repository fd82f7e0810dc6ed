//! The daemon's life: open the store, start a refresh driver per OAuth
//! credential, serve the socket, and on shutdown stop serving first and the
//! drivers after, so no refresh is cut off while a caller waits for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, BrokerError, Reloaded, Services};
use crate::config::{Config, STORE_KEY_CREDENTIAL};
use crate::server::{self, ReloadHandle, ServerError};
use crate::store::{Store, StoreError, StoreKey};
use crate::systemd::{self, Notifier};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::alert::Engine;
use crate::metrics::Metrics;
use crate::{clock, config, oauth, refresh};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// No store key is configured, but a credential needs the store.
    #[error(
        "credentials of kind oauth_refresh, oauth_client_credentials or glean_token with \
         secret = {{ store = true }} need the encrypted store, and no store key was found: set \
         [store] key_file in {config}, or load the systemd credential `{STORE_KEY_CREDENTIAL}` \
         (LoadCredential=)"
    )]
    NoStoreKey { config: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The alert scheduler could not start.
    #[error("cannot schedule alert sweeps: {0}")]
    Scheduler(tokio_cron_scheduler::JobSchedulerError),
}

/// Runs the daemon for `config` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    settings: refresh::Settings,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let store = if config.needs_store() {
        let key_path = config
            .store
            .key_path()
            .ok_or_else(|| DaemonError::NoStoreKey {
                config: config.path.clone(),
            })?;
        let key = StoreKey::load(&key_path)?;
        let store = Store::open(&config.store.path, &key)?;
        tracing::info!(store = %config.store.path.display(), "store open");
        Some(Arc::new(store))
    } else {
        None
    };
    let mut config = config;
    let daemon = config.daemon.clone();
    let metrics = Arc::new(Metrics::default());
    let http = oauth::http_client(daemon.http_timeout);
    let alert_settings = config.alerts.take();
    let metrics_listen = config.metrics.take();
    let services = Services {
        store: store.clone(),
        http: http.clone(),
        refresh: settings,
        metrics: Arc::clone(&metrics),
    };
    let config_path = config.path.clone();
    let watched = watched_files(&config);
    let broker = Arc::new(Broker::start(config, services)?);
    let notifier = Arc::new(Notifier::from_env());

    let tasks = TaskTracker::new();
    let stop_background = CancellationToken::new();
    let alerts = match alert_settings {
        Some(settings) => {
            let engine = Engine::start(settings, store, http, Arc::clone(&metrics));
            let scheduler = schedule(&engine, &broker).await?;
            Some((engine, scheduler))
        }
        None => None,
    };
    if let Some(listen) = metrics_listen {
        let (metrics, broker, stop) = (
            Arc::clone(&metrics),
            Arc::clone(&broker),
            stop_background.clone(),
        );
        tasks.spawn(async move {
            if let Err(e) = crate::metrics::serve(listen, metrics, broker, stop).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    let reloader = Reloader {
        path: config_path,
        daemon: daemon.clone(),
        broker: Arc::clone(&broker),
        alerts: alerts.as_ref().map(|(e, _)| Arc::clone(e)),
        notifier: Arc::clone(&notifier),
    };
    let reload = reloader.start(watched, &tasks, stop_background.clone());
    // Bound only now: once clients can connect, config and secret changes
    // are already being watched, so none made after startup is missed.
    let socket = match systemd::listen_fd() {
        Some(fd) => {
            tracing::info!("serving the socket passed by systemd");
            server::activated(fd)?
        }
        None => server::bind(&daemon)?,
    };
    let socket_path = socket.path().to_owned();
    tasks.spawn(report_status(
        Arc::clone(&broker),
        Arc::clone(&notifier),
        stop_background.clone(),
    ));
    if let Some(interval) = systemd::watchdog_interval() {
        tasks.spawn(watchdog(
            socket_path,
            interval,
            Arc::clone(&notifier),
            stop_background.clone(),
        ));
    }
    tasks.close();
    tracing::info!(credentials = broker.len(), "tokend started");
    // The socket listens and the store is open: ready.
    notifier.ready();
    let stopping = {
        let (notifier, shutdown) = (Arc::clone(&notifier), shutdown.clone());
        async move {
            shutdown.cancelled().await;
            notifier.stopping();
        }
    };
    tokio::spawn(stopping);
    let broker_for_shutdown = Arc::clone(&broker);
    let served = server::serve(
        broker,
        alerts.as_ref().map(|(e, _)| Arc::clone(e)),
        Some(reload),
        metrics,
        socket,
        shutdown,
        daemon.shutdown_timeout,
    )
    .await;
    if let Some((_, mut scheduler)) = alerts {
        let _ = scheduler.shutdown().await;
    }
    stop_background.cancel();
    broker_for_shutdown.shutdown().await;
    tasks.wait().await;
    Ok(served?)
}

/// The alert sweep and the daily digest, on their cron schedules; plus one
/// sweep at once, so a restart picks up where the last run left off.
async fn schedule(engine: &Arc<Engine>, broker: &Arc<Broker>) -> Result<JobScheduler, DaemonError> {
    let scheduler = JobScheduler::new().await.map_err(DaemonError::Scheduler)?;
    let jobs = [
        (engine.settings().sweep.clone(), false),
        (engine.settings().digest.clone().unwrap_or_default(), true),
    ];
    for (cron, digest) in jobs.into_iter().filter(|(c, _)| !c.is_empty()) {
        let (engine, broker) = (Arc::clone(engine), Arc::clone(broker));
        let job = Job::new_async(cron.as_str(), move |_, _| {
            let (engine, broker) = (Arc::clone(&engine), Arc::clone(&broker));
            Box::pin(async move {
                if digest {
                    engine.digest(&broker, clock::now());
                } else {
                    engine.sweep(&broker, clock::now()).await;
                }
            })
        })
        .map_err(DaemonError::Scheduler)?;
        scheduler.add(job).await.map_err(DaemonError::Scheduler)?;
    }
    engine.sweep(broker, clock::now()).await;
    scheduler.start().await.map_err(DaemonError::Scheduler)?;
    Ok(scheduler)
}

/// The config file and every secret file it reads: what the reload watcher
/// follows.
fn watched_files(config: &Config) -> Vec<PathBuf> {
    std::iter::once(config.path.clone())
        .chain(config.secret_files.iter().cloned())
        .collect()
}

/// Applies config changes: on SIGHUP, `Admin.Reload`, or a change to the
/// config or a secret file (including editors' rename-over and Kubernetes'
/// symlink swaps, seen as events in the watched directories).
struct Reloader {
    path: PathBuf,
    daemon: config::Daemon,
    broker: Arc<Broker>,
    alerts: Option<Arc<Engine>>,
    notifier: Arc<Notifier>,
}

/// Changes settle this long before a reload, so an editor's burst of writes
/// causes one reload.
const SETTLE: Duration = Duration::from_millis(200);

impl Reloader {
    fn start(
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
            Ok(config) => {
                if config.daemon != self.daemon {
                    tracing::warn!("[daemon] settings changed; they apply at the next restart");
                }
                let files = watched_files(&config);
                match self.broker.reload(config) {
                    Ok(r) => {
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
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        self.notifier.ready();
        result
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

/// Keeps systemd's one-line status current ("3 credentials: 2 fresh, 1
/// needs login"), sending it only when it changes.
async fn report_status(broker: Arc<Broker>, notifier: Arc<Notifier>, stop: CancellationToken) {
    let mut last = String::new();
    loop {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        let list = broker.list_all(clock::now());
        for s in &list {
            *counts.entry(s.state.as_str()).or_default() += 1;
        }
        let parts: Vec<String> = counts
            .iter()
            .map(|(state, n)| format!("{n} {}", state.replace('_', " ")))
            .collect();
        let status = format!("{} credentials: {}", list.len(), parts.join(", "));
        if status != last {
            notifier.status(&status);
            last = status;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Pings systemd's watchdog only after a real call succeeded: a gRPC health
/// check through tokend's own socket proves the runtime, the accept loop and
/// the services still answer, which a bare timer would not.
async fn watchdog(
    socket: PathBuf,
    interval: Duration,
    notifier: Arc<Notifier>,
    stop: CancellationToken,
) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    loop {
        let check = async {
            let channel = crate::client::channel(&socket).await.ok()?;
            HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .ok()
        };
        match tokio::time::timeout(interval, check).await {
            Ok(Some(_)) => notifier.watchdog(),
            _ => {
                tracing::error!("health check through the socket failed; not pinging the watchdog")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
