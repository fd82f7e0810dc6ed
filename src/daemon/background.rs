//! The daemon's background tasks: systemd's status line and watchdog, and
//! the alert sweep and digest on their cron schedules.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use crate::alert::Engine;
use crate::broker::Broker;
use crate::clock::SharedClock;
use crate::systemd::Notifier;

/// The alert sweep and the daily digest, on their cron schedules; plus one
/// sweep at once, so a restart picks up where the last run left off.
pub(super) async fn schedule_alerts(
    engine: &Arc<Engine>,
    broker: &Arc<Broker>,
    clock: &SharedClock,
) -> Result<JobScheduler, DaemonError> {
    let scheduler = JobScheduler::new().await.map_err(DaemonError::Scheduler)?;
    let jobs = [
        (engine.settings().sweep.clone(), false),
        (engine.settings().digest.clone().unwrap_or_default(), true),
    ];
    for (cron, digest) in jobs.into_iter().filter(|(c, _)| !c.is_empty()) {
        let (engine, broker, clock) = (Arc::clone(engine), Arc::clone(broker), Arc::clone(clock));
        let job = Job::new_async(cron.as_str(), move |_, _| {
            let (engine, broker, clock) =
                (Arc::clone(&engine), Arc::clone(&broker), Arc::clone(&clock));
            Box::pin(async move {
                let statuses = broker.list_all(clock.now());
                if digest {
                    engine.digest(&statuses);
                } else {
                    engine.sweep(&statuses).await;
                }
            })
        })
        .map_err(DaemonError::Scheduler)?;
        scheduler.add(job).await.map_err(DaemonError::Scheduler)?;
    }
    engine.sweep(&broker.list_all(clock.now())).await;
    scheduler.start().await.map_err(DaemonError::Scheduler)?;
    Ok(scheduler)
}

/// Keeps systemd's one-line status current ("3 credentials: 2 fresh, 1
/// needs login"), sending it only when it changes.
pub(super) async fn report_status(
    broker: Arc<Broker>,
    clock: SharedClock,
    notifier: Arc<Notifier>,
    stop: CancellationToken,
) {
    let mut last = String::new();
    loop {
        let counts = broker.count_states(clock.now());
        let total: usize = counts.values().sum();
        let parts: Vec<String> = counts
            .iter()
            .map(|(state, n)| format!("{n} {}", state.replace('_', " ")))
            .collect();
        let status = format!("{total} credentials: {}", parts.join(", "));
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
pub(super) async fn watchdog(
    socket: PathBuf,
    interval: Duration,
    notifier: Arc<Notifier>,
    stop: CancellationToken,
) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    loop {
        let check = async {
            let channel = tokend_client::channel(&socket).await.ok()?;
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
