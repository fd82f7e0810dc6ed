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
use crate::{oauth, refresh};

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
    let daemon = config.daemon.clone();
    let services = Services {
        store,
        http: oauth::http_client(daemon.http_timeout),
        refresh: settings,
    };
    let (broker, drivers) = Broker::new(config, services)?;
    let broker = Arc::new(broker);
    let socket = server::bind(&daemon)?;

    let tasks = TaskTracker::new();
    let stop_drivers = CancellationToken::new();
    for driver in drivers {
        tasks.spawn(driver.run(stop_drivers.clone()));
    }
    tasks.close();
    tracing::info!(credentials = broker.len(), "tokend started");
    let served = server::serve(broker, socket, shutdown, daemon.shutdown_timeout).await;
    stop_drivers.cancel();
    tasks.wait().await;
    Ok(served?)
}
