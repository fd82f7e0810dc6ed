//! The daemon's life: open the store, start a refresh driver per OAuth
//! credential, serve the socket, and on shutdown stop serving first and the
//! drivers after, so no refresh is cut off while a caller waits for it.
//!
//! Its parts: `reload` (config and secret changes), `background` (systemd
//! status and watchdog, alert schedules), `metrics_http` (the metrics
//! listener).

mod background;
mod memory;
pub mod metrics_http;
mod reload;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::Engine;
use crate::broker::{Broker, BrokerError, Services};
use crate::clock::{self, SharedClock};
use crate::config::{Config, STORE_KEY_CREDENTIAL};
use crate::fleet::Fleet;
use crate::grpc::{self, Api, ServerError};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyError};
use crate::store::{Store, StoreError, StoreKey};
use crate::systemd::{self, Notifier};
use crate::{oauth, refresh};

use reload::{Reloader, watched_files};

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
    NoStoreKey {
        /// The config file to edit.
        config: PathBuf,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The credentials could not be loaded.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The socket could not be served.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A `[[proxy]]` could not start.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The alert scheduler could not start.
    #[error("cannot schedule alert sweeps: {0}")]
    Scheduler(tokio_cron_scheduler::JobSchedulerError),
}

/// Runs the daemon for `config` until `shutdown` is cancelled, listening on
/// `socket` when given (the command line's `--socket`) instead of the
/// config's; the override holds across reloads too.
pub async fn run(
    mut config: Config,
    socket: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    if let Some(socket) = &socket {
        config.daemon.socket.clone_from(socket);
    }
    let store = open_store(&config)?;
    let clock = clock::system();
    let daemon = config.daemon.clone();
    let metrics = Arc::new(Metrics::default());
    let http = oauth::http_client(daemon.http_timeout);
    let alert_settings = config.alerts.take();
    let metrics_listen = config.metrics.take();
    let proxy_settings = std::mem::take(&mut config.proxies);
    let (config_path, watched) = (config.path.clone(), watched_files(&config));
    let stop_fleet = CancellationToken::new();
    let fleet = open_fleet(&config, &clock, &stop_fleet)?;
    let services = Services {
        store: store.clone(),
        endpoint: Arc::new(oauth::Http(http.clone())),
        refresh: refresh::Settings {
            max_backoff: daemon.max_backoff,
            gates: Arc::new(refresh::Gates::new(daemon.issuer_concurrency)),
        },
        metrics: Arc::clone(&metrics),
        clock: Arc::clone(&clock),
        fleet: fleet.clone(),
    };
    let credentials = config.credentials;
    let broker = Arc::new(Broker::start(credentials, daemon.admins.clone(), services)?);
    let notifier = Arc::new(Notifier::from_env());
    let tasks = TaskTracker::new();
    let stop_background = CancellationToken::new();
    let alerts = match alert_settings {
        Some(settings) => {
            let engine = Engine::start(settings, store, http, Arc::clone(&metrics), clock.clone());
            let scheduler = background::schedule_alerts(&engine, &broker, &clock).await?;
            Some((engine, scheduler))
        }
        None => None,
    };
    let engine = alerts.as_ref().map(|(e, _)| Arc::clone(e));
    if let Some(listen) = metrics_listen {
        let serve =
            metrics_http::serve(listen, &daemon, &metrics, &broker, &clock, &stop_background);
        tasks.spawn(serve);
    }
    let reloader = Reloader {
        path: config_path,
        daemon: daemon.clone(),
        socket_override: socket,
        proxies: proxy_settings.clone(),
        broker: Arc::clone(&broker),
        alerts: engine.clone(),
        notifier: Arc::clone(&notifier),
    };
    let reload = reloader.start(watched, &tasks, stop_background.clone());
    // Bound only now: once clients can connect, config and secret changes
    // are already being watched, so none made after startup is missed.
    let socket = match systemd::listen_fd() {
        Some(fd) => {
            tracing::info!("serving the socket passed by systemd");
            grpc::activated(fd)?
        }
        None => grpc::bind(&daemon)?,
    };
    start_systemd_tasks(
        &tasks,
        socket.path(),
        &broker,
        &clock,
        &notifier,
        &stop_background,
    );
    // Proxies listen before READY=1 too, and a proxy that cannot start
    // stops the daemon: its callers would otherwise fail in the dark.
    let proxies = proxy_settings
        .into_iter()
        .map(|p| Proxy::bind(p, &daemon, &broker, &metrics))
        .collect::<Result<Vec<_>, _>>()?;
    let endpoints: Arc<[_]> = proxies.iter().map(Proxy::settings).collect();
    for proxy in proxies {
        tasks.spawn(proxy.serve(shutdown.clone(), tasks.clone()));
    }
    tasks.close();
    memory::release_free_memory();
    tracing::info!(credentials = broker.len(), "tokend started");
    // The socket listens and the store is open: ready.
    notifier.ready();
    let (stopped, notify) = (shutdown.clone(), Arc::clone(&notifier));
    tokio::spawn(async move {
        stopped.cancelled().await;
        notify.stopping();
    });
    let api = Api {
        broker: Arc::clone(&broker),
        alerts: engine,
        reload: Some(reload),
        metrics,
        clock,
        proxies: endpoints,
    };
    let served = grpc::serve(api, socket, shutdown, daemon.shutdown_timeout).await;
    if let Some((_, mut scheduler)) = alerts {
        let _ = scheduler.shutdown().await;
    }
    stop_background.cancel();
    broker.shutdown().await;
    // After the drivers: their seats hand leadership over first.
    if let Some(fleet) = fleet {
        fleet.shutdown().await;
    }
    tasks.wait().await;
    Ok(served?)
}

/// Joins the fleet when `[fleet]` is configured. Its key is `key_file`, or
/// the store key (which the nodes then share).
fn open_fleet(
    config: &Config,
    clock: &SharedClock,
    cancel: &CancellationToken,
) -> Result<Option<Arc<Fleet>>, DaemonError> {
    let Some(settings) = &config.fleet else {
        return Ok(None);
    };
    let key_path = settings
        .key_file
        .clone()
        .or_else(|| config.store.key_path())
        .ok_or_else(|| DaemonError::NoStoreKey {
            config: config.path.clone(),
        })?;
    let key = StoreKey::load(&key_path)?;
    tracing::info!(node = %settings.node, endpoints = ?settings.endpoints, "joining the fleet");
    Ok(Some(Fleet::start(
        settings.clone(),
        &key,
        Arc::clone(clock),
        cancel.clone(),
    )))
}

/// Opens the encrypted store when anything needs it.
fn open_store(config: &Config) -> Result<Option<Arc<Store>>, DaemonError> {
    if !config.needs_store() {
        return Ok(None);
    }
    let key_path = config
        .store
        .key_path()
        .ok_or_else(|| DaemonError::NoStoreKey {
            config: config.path.clone(),
        })?;
    let key = StoreKey::load(&key_path)?;
    let store = Store::open(&config.store.path, &key)?;
    tracing::info!(store = %config.store.path.display(), "store open");
    Ok(Some(Arc::new(store)))
}

/// systemd's status line, and its watchdog when the unit asks for one.
fn start_systemd_tasks(
    tasks: &TaskTracker,
    socket: &std::path::Path,
    broker: &Arc<Broker>,
    clock: &SharedClock,
    notifier: &Arc<Notifier>,
    stop: &CancellationToken,
) {
    tasks.spawn(background::report_status(
        Arc::clone(broker),
        Arc::clone(clock),
        Arc::clone(notifier),
        stop.clone(),
    ));
    if let Some(interval) = systemd::watchdog_interval() {
        tasks.spawn(background::watchdog(
            socket.to_owned(),
            interval,
            Arc::clone(notifier),
            stop.clone(),
        ));
    }
}
