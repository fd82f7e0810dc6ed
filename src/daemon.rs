//! The daemon's life: open the store, start a refresh driver per OAuth
//! credential, serve the socket, and on shutdown stop serving first and the
//! drivers after, so no refresh is cut off while a caller waits for it.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, BrokerError, Services};
use crate::config::{Config, STORE_KEY_CREDENTIAL};
use crate::server::{self, ServerError};
use crate::store::{Store, StoreError, StoreKey};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::alert::Engine;
use crate::metrics::Metrics;
use crate::{clock, oauth, refresh};

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
    let broker = Arc::new(Broker::start(config, services)?);
    let socket = server::bind(&daemon)?;

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
    tasks.close();
    tracing::info!(credentials = broker.len(), "tokend started");
    let broker_for_shutdown = Arc::clone(&broker);
    let served = server::serve(
        broker,
        alerts.as_ref().map(|(e, _)| Arc::clone(e)),
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
