//! `tokend.v1.TokenBroker`: headers, their stream, `Invalidate`, listings.
//! Each fetch is audited (who, what for, the outcome; never the token).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert::{self, headers_request, min_valid};
use super::{peer, wait_for};
use crate::alert::Engine;
use crate::broker::{Broker, BrokerError, HeadersRequest};
use crate::clock::SharedClock;
use crate::peer::Peer;
use crate::proto;
use crate::proto::token_broker_server::TokenBroker;

/// Maps the `TokenBroker` service to the broker.
#[derive(Debug)]
pub(super) struct BrokerService {
    pub(super) broker: Arc<Broker>,
    pub(super) alerts: Option<Arc<Engine>>,
    pub(super) clock: SharedClock,
    /// Ends open `WatchHeaders` streams when the daemon stops, so draining
    /// does not wait for them.
    pub(super) shutdown: CancellationToken,
}

type HeaderStream = Pin<Box<dyn Stream<Item = Result<proto::GetHeadersResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TokenBroker for BrokerService {
    async fn get_headers(
        &self,
        req: Request<proto::GetHeadersRequest>,
    ) -> Result<Response<proto::GetHeadersResponse>, Status> {
        let peer = peer(&req)?;
        let wait = wait_for(&req);
        let r = req.into_inner();
        let request = headers_request(&r, min_valid(r.min_valid)?);
        let grant = self.broker.get_headers(&peer, request, wait).await;
        audit(&peer, request, grant.as_ref().err());
        Ok(Response::new(convert::headers_response(&grant?)))
    }

    type WatchHeadersStream = HeaderStream;

    async fn watch_headers(
        &self,
        req: Request<proto::GetHeadersRequest>,
    ) -> Result<Response<HeaderStream>, Status> {
        let peer = peer(&req)?;
        let wait = wait_for(&req);
        let r = req.into_inner();
        let min_valid = min_valid(r.min_valid)?;
        let broker = Arc::clone(&self.broker);
        let mut rx = broker.watch(&peer, &r.credential)?;
        // The first set, or the error, answers the call itself.
        let first = {
            let request = headers_request(&r, min_valid);
            let grant = broker.get_headers(&peer, request, wait).await;
            audit(&peer, request, grant.as_ref().err());
            let grant = grant?;
            (
                convert::headers_response(&grant),
                grant.token.fingerprint.clone(),
            )
        };
        let (tx, out) = tokio::sync::mpsc::channel(4);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let (first, mut sent) = first;
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("tokend is shutting down"))).await;
                        return;
                    }
                    () = tx.closed() => return,
                    changed = rx.changed() => if changed.is_err() {
                        let _ = tx.send(Err(Status::not_found(format!(
                            "credential `{}` was removed", r.credential
                        )))).await;
                        return;
                    },
                }
                let request = headers_request(&r, min_valid);
                let next = match broker.get_headers(&peer, request, wait).await {
                    // The same token again (a state change, a reload that
                    // kept it): nothing new to send.
                    Ok(grant) if grant.token.fingerprint == sent => continue,
                    Ok(grant) => {
                        sent.clone_from(&grant.token.fingerprint);
                        Ok(convert::headers_response(&grant))
                    }
                    // Refreshing is failing but may recover: keep watching.
                    Err(BrokerError::Unavailable { .. }) => continue,
                    Err(e) => Err(Status::from(e)),
                };
                let end = next.is_err();
                if tx.send(next).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn invalidate(
        &self,
        req: Request<proto::InvalidateRequest>,
    ) -> Result<Response<proto::InvalidateResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let refreshing = self
            .broker
            .invalidate(&peer, &r.credential, &r.token_fingerprint)?;
        Ok(Response::new(proto::InvalidateResponse { refreshing }))
    }

    async fn list_alerts(
        &self,
        req: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::ListAlertsResponse>, Status> {
        let peer = peer(&req)?;
        let alerts = self
            .alerts
            .iter()
            .flat_map(|engine| engine.open_alerts())
            .filter(|a| self.broker.visible(&peer, &a.credential))
            .map(convert::alert)
            .collect();
        Ok(Response::new(proto::ListAlertsResponse { alerts }))
    }

    async fn list_credentials(
        &self,
        req: Request<proto::ListCredentialsRequest>,
    ) -> Result<Response<proto::ListCredentialsResponse>, Status> {
        let peer = peer(&req)?;
        let credentials = self
            .broker
            .list(&peer, self.clock.now())
            .into_iter()
            .map(convert::credential_status)
            .collect();
        Ok(Response::new(proto::ListCredentialsResponse {
            credentials,
        }))
    }
}

/// Records one header fetch on the `audit` log target: who asked and what
/// for, and the outcome's gRPC code; the token never enters it.
fn audit(peer: &Peer, r: HeadersRequest<'_>, error: Option<&BrokerError>) {
    let code = error.map_or(tonic::Code::Ok, convert::code);
    tracing::info!(
        target: "audit",
        credential = r.credential,
        uid = peer.uid,
        gid = peer.gid,
        pid = peer.pid,
        exe = peer.exe.as_deref().map(|e| e.display()).map(tracing::field::display),
        act_as = (!r.act_as.is_empty()).then_some(r.act_as),
        result = ?code,
        "get_headers"
    );
}
